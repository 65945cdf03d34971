"""Results assembled from what the programs return per slot (host arrays, nothing trained)."""
from __future__ import annotations

import numpy as np

from jaxmlp.engine.results import over_variants, variant_result


def test_slot_records_become_arrays_over_variants_and_idle_variants_keep_their_last_state():
    """Two families ([1 part x 2 slots], [2 x 1]); variant 3 holds no slot this epoch."""
    per_family = [
        {"val_loss": np.array([[0.5, 0.25]]), "trained": np.array([[True, False]]),
         "diverged": np.array([[False, True]]), "best_epoch": np.array([[4, 2]], np.int32),
         "dead_fraction": np.array([[[0.1, 0.2], [0.3, 0.4]]])},
        {"val_loss": np.array([[0.75], [9.0]]), "trained": np.array([[True], [True]]),
         "diverged": np.array([[False], [False]]), "best_epoch": np.array([[7], [1]], np.int32),
         "dead_fraction": np.array([[[0.5, 0.6]], [[0.7, 0.8]]])},
    ]
    occupants = np.array([2, 0, 1, -1])  # families' slots flattened in order
    last = {"diverged": np.array([False, False, False, True]), "best_epoch": np.array([0, 0, 0, 5], np.int32)}
    record = over_variants(per_family, occupants, last)
    np.testing.assert_array_equal(record["val_loss"], [0.25, 0.75, 0.5, np.nan])
    assert record["trained"].tolist() == [False, True, True, False]
    assert record["diverged"].tolist() == [True, False, False, True]  # variant 3 as last seen
    assert record["best_epoch"].tolist() == [2, 7, 4, 5] and record["best_epoch"].dtype == np.int32
    np.testing.assert_array_equal(record["dead_fraction"], [[0.3, 0.4], [0.5, 0.6], [0.1, 0.2], [np.nan, np.nan]])
    assert last["best_epoch"].tolist() == [2, 7, 4, 5]  # kept for the next epoch
    record["best_epoch"][0] = 99
    assert last["best_epoch"][0] == 2  # the record is a copy


def test_a_rows_final_evaluation_becomes_its_result(make_config):
    params = {"params": {"w": np.arange(6.0).reshape(2, 3)}}
    test = {"loss": np.array([0.5, 0.25]), "dead_fraction": np.array([[0.0, 0.5], [0.25, 1.0]]),
            "reliability": np.zeros((2, 3, 4))}
    train = {"loss": np.array([0.125, 0.0625])}
    ends = {"epoch": np.array([9, 6]), "stopped_epoch": np.array([0, 5]), "best_epoch": np.array([9, 3]),
            "diverged": np.array([False, True])}
    config = make_config()
    result = variant_result(config, 1, params, test, train, ends, history=[], train_seconds=2.0, pruned_at=5)
    assert (result.config, result.best_epoch, result.stopped_epoch, result.epochs_trained) == (config, 3, 5, 6)
    assert result.diverged and result.test == {"loss": 0.25} and result.train_final == {"loss": 0.0625}
    assert result.test_dead_fraction == [0.25, 1.0] and np.shape(result.reliability) == (3, 4)
    assert result.params["params"]["w"].tolist() == [3.0, 4.0, 5.0]
    assert (result.train_seconds, result.pruned_at, result.lineage) == (2.0, 5, [])
    # a variant still training at the end never stopped: its stopping epoch is its last
    assert variant_result(config, 0, params, test, train, ends, history=[]).stopped_epoch == 9
