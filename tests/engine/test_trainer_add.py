"""Variants queued into a running trainer (`Trainer.add`) train as if given at the start."""
from __future__ import annotations

import numpy as np
import pytest

from jaxmlp.engine import Layout, Trainer, variant_history

from tests.helpers.engine import assert_same_run

EPOCHS = 12


def _layout(template, size: int, activations=("relu", "tanh"), features=("use_dropout",)):
    return Layout(part_size=size, families=((template, 1),), activations=activations,
                  initializers=("he_normal", "glorot_uniform"), features=frozenset(features))


def _configs(make_config):
    base = {"training.epochs": EPOCHS, "model.dropout": 0.2, "model.init": "he_normal"}
    # the first improves once (its first epoch), never again by 10: it stops after epoch 3
    first = [make_config({**base, "training.seed": 0, "training.early_stopping.patience": 2,
                          "training.early_stopping.min_delta": 10.0}),
             make_config({**base, "training.seed": 1, "training.early_stopping.patience": None})]
    later = [make_config({**base, "training.seed": 5, "model.activation": "tanh", "optimizer.learning_rate": 0.02,
                          "model.init": "glorot_uniform", "training.early_stopping.patience": 3}),
             make_config({**base, "training.seed": 6, "model.dropout": 0.4})]
    return first, later


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_variants_added_mid_run_equal_the_same_variants_given_up_front(make_config, synthetic_data):
    first, later = _configs(make_config)
    layout = _layout(first[0], 2)
    trainer = Trainer(first, synthetic_data, layout=layout)
    added = None
    for record in trainer.run():
        if record["epoch"] == 3:
            added = trainer.add(later)
    assert added == [2, 3]
    entered = {i: r["epoch"] for r in trainer.records for i in r["started"]}
    assert (entered[2], entered[3]) == (4, EPOCHS + 1)  # each took a slot as one freed
    assert [len(r["trained"]) for r in trainer.records[2:4]] == [2, 4]
    upfront = Trainer([*first, *later], synthetic_data, layout=layout)
    list(upfront.run())
    assert len(trainer.result.variants) == 4
    for mid, start in zip(trainer.result.variants, upfront.result.variants):
        assert_same_run(mid, start, exact=True)
    assert trainer.result.variants[2].history[0]["epoch"] == 1


def test_a_variant_the_layout_does_not_cover_is_refused_by_its_key(make_config, synthetic_data):
    first, _ = _configs(make_config)
    trainer = Trainer(first, synthetic_data, layout=_layout(first[0], 2, features=("use_dropout",)))
    with pytest.raises(ValueError, match="model.hidden"):
        trainer.add([make_config({"model.hidden": [7], "model.dropout": 0.2})])
    with pytest.raises(ValueError, match="optimizer.weight_decay"):
        trainer.add([make_config({"optimizer.weight_decay": 1e-3, "model.dropout": 0.2, "training.epochs": EPOCHS})])
    with pytest.raises(ValueError, match="'elu'"):
        trainer.add([make_config({"model.activation": "elu", "model.dropout": 0.2, "training.epochs": EPOCHS})])
    assert len(trainer.configs) == 2 and len(trainer._queues[0]) == 2  # nothing half added


def test_history_skips_records_older_than_the_variant():
    records = [{"trained": np.array([True]), "variant_epoch": np.array([1]), "epoch_seconds": 0.1,
                "val_loss": np.array([0.5])},
               {"trained": np.array([True, True]), "variant_epoch": np.array([2, 1]), "epoch_seconds": 0.1,
                "val_loss": np.array([0.4, 0.9])}]
    assert variant_history(records, 1) == [{"epoch": 1, "epoch_seconds": 0.1, "val_loss": 0.9}]
    assert [r["val_loss"] for r in variant_history(records, 0)] == [0.5, 0.4]


@pytest.mark.slow
def test_released_programs_are_compiled_again_and_train_the_same(make_config, synthetic_data):
    """`release_compiled` forgets this process's programs: the next Trainer of the same shape
    compiles (or loads from the persistent cache) again, and trains the same numbers."""
    from jaxmlp.engine import release_compiled

    configs = [make_config({"training.seed": 3})]
    first = Trainer(configs, synthetic_data)
    first.compile()
    reused = Trainer(configs, synthetic_data)
    reused.compile()
    release_compiled()
    after = Trainer(configs, synthetic_data)
    after.compile()
    assert reused.reused_programs and not after.reused_programs
    list(reused.run())
    list(after.run())
    assert_same_run(reused.result.variants[0], after.result.variants[0], exact=True)
