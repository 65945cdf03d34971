"""Adaptive search inside the training loop: successive halving and population-based training."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxmlp.engine import Trainer, plan_chunks
from jaxmlp.engine.search import (PopulationBasedTraining, SuccessiveHalving, best_so_far, halving_survivors,
                                  pbt_step, run_search)

from tests.helpers.engine import assert_same_run

INF = np.inf


@pytest.mark.parametrize("scores, settings, active, keep, stopped", [
    # four settings of two seeds; mean ranks them 2 < 0 < 3 < 1: keep half
    ([0.5, 0.7, 0.9, 1.1, 0.1, 0.2, 0.8, 0.8], [0, 0, 1, 1, 2, 2, 3, 3], [1] * 8, 0.5, [0, 0, 1, 1, 0, 0, 1, 1]),
    # a diverged seed ranks its setting last
    ([0.5, 0.5, INF, 0.1, 0.3, 0.3], [0, 0, 1, 1, 2, 2], [1] * 6, 0.67, [0, 0, 1, 1, 0, 0]),
    # ties keep the setting listed first
    ([0.4, 0.4, 0.4], [0, 1, 2], [1, 1, 1], 0.34, [0, 1, 1]),
    # settings with no active variant are not ranked; an early-stopped seed still counts in its mean
    ([0.9, 0.1, 0.2, 0.3, 0.5], [0, 1, 1, 2, 2], [0, 1, 0, 1, 1], 0.5, [0, 0, 0, 1, 1]),
    # at least one setting survives
    ([0.3, 0.2], [0, 1], [1, 1], 0.1, [1, 0]),
])
def test_a_rung_stops_exactly_the_expected_variants(scores, settings, active, keep, stopped):
    got = halving_survivors(np.asarray(scores, float), np.asarray(settings), np.asarray(active, bool), keep)
    np.testing.assert_array_equal(got, np.asarray(stopped, bool))


def _lr_sweep(make_config, rates, seeds=(0, 1), **extra):
    configs = [make_config({"optimizer.name": "sgd", "optimizer.learning_rate": lr, "training.seed": s,
                            "training.epochs": 6, "training.early_stopping.patience": None, **extra})
               for lr in rates for s in seeds]
    settings = np.repeat(np.arange(len(rates)), len(seeds))
    return configs, settings


def _halving(configs, settings, data, chunks, layout, devices=1, rungs=(2, 4), asynchronous=False):
    trainers = [Trainer([configs[i] for i in chunk], data, devices, layout=layout) for chunk in chunks]
    search = SuccessiveHalving(rungs=rungs, keep=0.5, asynchronous=asynchronous)
    records = list(run_search(trainers, search, [settings[chunk] for chunk in chunks]))
    by_index = {}
    for chunk, t in zip(chunks, trainers):
        by_index.update({chunk[k]: v for k, v in zip(range(len(chunk)), t.result.variants)})
    return by_index, records


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_halving_prunes_the_settings_whose_validation_order_is_known(make_config, synthetic_data):
    """Plain SGD on the same problem: the smaller the learning rate, the worse the validation loss
    after a few epochs; halving at epochs 2 and 4 keeps the two fastest, then the fastest."""
    configs, settings = _lr_sweep(make_config, [1e-4, 0.3, 1e-3, 0.1])
    layout, chunks = plan_chunks(configs, 64)
    results, records = _halving(configs, settings, synthetic_data, chunks, layout)
    pruned = {i: r.pruned_at for i, r in results.items()}
    assert pruned == {0: 2, 1: 2, 2: None, 3: None, 4: 2, 5: 2, 6: 4, 7: 4}  # lr 0.3 trains to the end
    for i, r in results.items():
        assert r.stopped_epoch == (r.pruned_at or 6) and r.epochs_trained == (r.pruned_at or 6)
        assert len(r.history) == r.epochs_trained
    stopped_in = {i: rec_epoch for _, rec in records for i in rec["finished"] for rec_epoch in [rec["epoch"]]}
    assert {i for i, e in stopped_in.items() if e == 3} == {0, 1, 4, 5}  # reported with the next epoch's record


def test_asynchronous_halving_of_variants_in_lockstep_prunes_as_the_synchronous_rule(make_config, synthetic_data):
    configs, settings = _lr_sweep(make_config, [1e-4, 0.3, 1e-3, 0.1])
    layout, chunks = plan_chunks(configs, 64)
    synchronous, _ = _halving(configs, settings, synthetic_data, chunks, layout)
    asynchronous, _ = _halving(configs, settings, synthetic_data, chunks, layout, asynchronous=True)
    assert {i: r.pruned_at for i, r in asynchronous.items()} == {i: r.pruned_at for i, r in synchronous.items()}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_chunks_and_devices_prune_the_same_variants_as_one_program(make_config, synthetic_data):
    configs, settings = _lr_sweep(make_config, [1e-4, 0.3, 1e-3, 0.1])
    layout, chunks = plan_chunks(configs, 64)
    one, _ = _halving(configs, settings, synthetic_data, chunks, layout)
    split_layout, split_chunks = plan_chunks(configs, 2, 4)
    assert len(split_chunks) == 2
    two, _ = _halving(configs, settings, synthetic_data, split_chunks, split_layout)
    sharded_layout, sharded_chunks = plan_chunks(configs, 4, 4, devices=2)
    sharded, _ = _halving(configs, settings, synthetic_data, sharded_chunks, sharded_layout, devices=2)
    for other in (two, sharded):
        assert {i: r.pruned_at for i, r in other.items()} == {i: r.pruned_at for i, r in one.items()}
        for i in one:
            assert_same_run(other[i], one[i], exact=False)


def _pbt_trainer(make_config, data):
    configs, _ = _lr_sweep(make_config, [0.01, 0.02, 0.05, 0.1], seeds=(0,), **{"model.dropout": 0.1})
    trainer = Trainer(configs, data)
    trainer.tracked_hparams = ("optimizer.learning_rate", "model.dropout")
    return configs, trainer


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_an_exploit_copies_state_bit_for_bit_and_perturbs_by_a_listed_factor(make_config, synthetic_data):
    _, trainer = _pbt_trainer(make_config, synthetic_data)
    run = trainer.run()
    next(run)
    before = jax.device_get(trainer.states)
    pbt = PopulationBasedTraining(interval=1, quantile=0.25, perturb={"optimizer.learning_rate": [0.8, 1.25]},
                                  bounds={"optimizer.learning_rate": (1e-6, 10.0)})
    sources, values = pbt_step(trainer, pbt, 1, np.zeros(4, int), np.random.default_rng(0))
    assert len(sources) == 1
    (dst, src), = sources.items()
    scores = trainer.records[-1]["val_loss"]
    assert dst == int(np.argmax(scores)) and src == int(np.argmin(scores))
    lr = trainer.hparams(["optimizer.learning_rate"])["optimizer.learning_rate"]
    assert values["optimizer.learning_rate"][dst] / lr[src] in (pytest.approx(0.8), pytest.approx(1.25))
    trainer.exploit(sources, {})
    after = jax.device_get(trainer.states)
    row = {i: (0, i) for i in range(4)}  # one part of four variants
    for name in ("params", "opt_state", "best_params", "es"):
        for a, b in zip(jax.tree_util.tree_leaves(getattr(after[0], name)),
                        jax.tree_util.tree_leaves(getattr(before[0], name))):
            np.testing.assert_array_equal(a[row[dst]], b[row[src]])
            for other in set(range(4)) - {dst}:
                np.testing.assert_array_equal(a[row[other]], b[row[other]])
    np.testing.assert_array_equal(jax.random.key_data(after[0].key), jax.random.key_data(before[0].key))
    assert trainer.hparams(["model.dropout"])["model.dropout"][dst] == pytest.approx(0.1)
    trainer.exploit({}, values)
    assert trainer.hparams(["optimizer.learning_rate"])["optimizer.learning_rate"][dst] == pytest.approx(
        values["optimizer.learning_rate"][dst])
    list(run)
    (result,) = [v for i, v in enumerate(trainer.result.variants) if i == dst]
    assert result.lineage == [{"epoch": 1, "source": src}]
    assert [r["hp/optimizer.learning_rate"] for r in result.history[:2]] == pytest.approx(
        [lr[dst], values["optimizer.learning_rate"][dst]])


def test_pbt_is_reproducible_from_its_seed(make_config, synthetic_data):
    pbt = PopulationBasedTraining(interval=2, quantile=0.25, perturb={"optimizer.learning_rate": [0.8, 1.25],
                                                                      "model.dropout": [0.5, 2.0]},
                                  seed=3, bounds={"model.dropout": (0.0, 0.9)})

    def once():
        _, trainer = _pbt_trainer(make_config, synthetic_data)
        list(run_search([trainer], pbt, [np.arange(4)], [np.zeros(4, int)]))
        return trainer.result

    a, b = once(), once()
    assert any(v.lineage for v in a.variants)
    for x, y in zip(a.variants, b.variants):
        assert x.lineage == y.lineage
        assert_same_run(x, y, exact=True)


class Recorded:
    """A trainer's epoch records, written out: what `best_so_far` reads of a Trainer."""

    def __init__(self, metric: str, curves: list[list[float]]):
        self.configs = [None] * len(curves)
        n = len(curves)
        self.records = [{metric: np.asarray([c[e] for c in curves]), "trained": np.ones(n, bool),
                         "diverged": np.zeros(n, bool)} for e in range(len(curves[0]))]


def test_under_val_accuracy_the_most_accurate_setting_survives():
    """Scores are lower-is-better: an accuracy is negated (not negated, halving would keep the worst)."""
    scores = best_so_far(Recorded("val_accuracy", [[0.6, 0.9], [0.5, 0.55], [0.7, 0.8]]), "val_accuracy")
    np.testing.assert_allclose(scores, [-0.9, -0.55, -0.8])
    stopped = halving_survivors(scores, np.arange(3), np.ones(3, bool), keep=0.34)
    np.testing.assert_array_equal(stopped, [False, True, True])


def test_halving_ranks_by_the_best_epoch_so_far_not_the_last():
    """A curve that dips then rises (0.2 at epoch 2, 0.8 at the rung) beats a flat 0.5."""
    scores = best_so_far(Recorded("val_loss", [[1.0, 0.2, 0.8], [1.0, 0.5, 0.5]]), "val_loss")
    np.testing.assert_allclose(scores, [0.2, 0.5])
    np.testing.assert_array_equal(halving_survivors(scores, np.arange(2), np.ones(2, bool), keep=0.5), [False, True])


@pytest.mark.parametrize("aggregate, stopped_setting", [("mean", 0), ("median", 1), ("best", 1)])
def test_halving_aggregates_a_settings_seeds_as_asked(aggregate, stopped_setting):
    """Setting 0's seeds 0.1, 0.2, 0.9 (mean 0.4, median 0.2, best 0.1) against setting 1's 0.15,
    0.3, 0.32 (mean 0.257, median 0.3, best 0.15): each reduction ranks them its own way."""
    scores = np.asarray([0.1, 0.2, 0.9, 0.15, 0.3, 0.32])
    settings = np.repeat([0, 1], 3)
    stopped = halving_survivors(scores, settings, np.ones(6, bool), keep=0.5, aggregate=aggregate)
    np.testing.assert_array_equal(stopped, settings == stopped_setting)


def test_pbt_copies_only_within_a_population(make_config, synthetic_data):
    """Two populations (two structures in one trainer): population 0 learns (lr 0.1), population 1
    barely moves (lr 1e-5); each bottom member copies the top of its own population, never the
    better population's (crossing, both of population 1 would copy population 0)."""
    configs, _ = _lr_sweep(make_config, [0.1, 1e-5], seeds=(0, 1))
    trainer = Trainer(configs, synthetic_data)
    trainer.tracked_hparams = ("optimizer.learning_rate",)
    run = trainer.run()
    next(run), next(run)
    population = np.asarray([0, 0, 1, 1])
    losses = trainer.records[-1]["val_loss"]
    assert losses[:2].max() < losses[2:].min()  # the whole of population 0 is better
    pbt = PopulationBasedTraining(interval=1, quantile=0.5, perturb={"optimizer.learning_rate": [1.0]})
    sources, _ = pbt_step(trainer, pbt, 2, population, np.random.default_rng(0))
    assert len(sources) == 2
    for member, source in sources.items():
        assert population[member] == population[source]
        assert losses[source] <= losses[member]
