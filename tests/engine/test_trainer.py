"""The Trainer: vmapped variants equal lone runs, merged activations, early stopping, divergence, real datasets."""
from __future__ import annotations

import time
from functools import partial

import jax
import numpy as np
import pytest

from jaxmlp import engine
from jaxmlp.config import load_config
from jaxmlp.data import load_dataset
from jaxmlp.engine import GroupResult, Trainer

from tests.helpers.engine import assert_same_run, fit, kernel_column_norms, one_variant, replay_early_stopping
from tests.helpers.reference_mlp import classification_metrics


# --- a group of three variants against the same variants trained alone ----------------------

EPOCHS = 25
GROUP = [
    {"training.seed": 0, "optimizer.learning_rate": 1e-2, "model.dropout": 0.0,
     "training.early_stopping.patience": 3},
    {"training.seed": 1, "optimizer.learning_rate": 1e-2, "model.dropout": 0.2,
     "training.early_stopping.patience": None},
    {"training.seed": 2, "optimizer.learning_rate": 3e-2, "model.dropout": 0.5, "optimizer.max_norm": 1.0,
     "training.early_stopping.patience": 2, "training.early_stopping.min_delta": 0.05},
]


@pytest.fixture(scope="module")
def group_configs(make_config):
    return [make_config({**overrides, "training.epochs": EPOCHS}) for overrides in GROUP]


@pytest.fixture(scope="module")
def group(group_configs, synthetic_data) -> GroupResult:
    return fit(group_configs, synthetic_data)


@pytest.mark.slow
def test_vmapped_variants_equal_variants_trained_alone(group, group_configs, synthetic_data):
    for cfg, together in zip(group_configs, group.variants):
        alone = fit([cfg], synthetic_data).variants[0]
        assert together.config == alone.config == cfg
        assert_same_run(together, alone, exact=False)


MERGED = [  # one program: a family of three activations (two inits), noisy ReLU apart, one part short
    {"model.activation": "tanh", "training.seed": 0},
    {"model.activation": "relu", "training.seed": 1, "model.init": "glorot_uniform"},
    {"model.activation": "noisy_relu", "training.seed": 2, "model.noise_std": 0.5},
    {"model.activation": "tanh", "training.seed": 3, "training.early_stopping.patience": 2},
    {"model.activation": "relu", "training.seed": 4},
    {"model.activation": "elu", "training.seed": 5},
    {"model.activation": "relu", "training.seed": 6, "model.init": "glorot_uniform"},
    {"model.activation": "elu", "training.seed": 7},
]


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
@pytest.mark.parametrize("devices", [1, 2])
def test_activations_merged_in_one_program_equal_variants_trained_alone(make_config, synthetic_data, devices):
    """Merged (one switched copy of the code, several families) against each variant trained in a
    program of its own: the engine against its simplest form, which tests/test_reference_loop.py
    holds against a reference training loop written without the engine."""
    if devices > len(jax.devices()):
        pytest.skip("needs two devices")
    configs = [make_config({"training.early_stopping.patience": 1, "optimizer.learning_rate": 0.05, **o, "model.dropout": 0.2,
                            "training.epochs": 30}) for o in MERGED]
    trainer = Trainer(configs, synthetic_data, devices=devices)
    # tanh, relu/glorot, relu/he and elu share one copy of the code, in four parts of two slots
    # (any slot takes any of them); noisy ReLU draws more noise and has its own
    assert sorted(f.shape for f in trainer.families) == [(1, 2), (4, 2)]
    finished_in = {}  # variant -> the epoch whose record delivered its result
    for record in trainer.run():
        for i, r in record["finished"].items():
            assert r.config is configs[i]
            finished_in[i] = record["epoch"]
    for cfg, together in zip(configs, trainer.result.variants):
        assert_same_run(together, fit([cfg], synthetic_data).variants[0], exact=False)
    # a variant is evaluated in the epoch it stops, its budget's last included
    for i, r in enumerate(trainer.result.variants):
        assert finished_in[i] == r.stopped_epoch
    assert sum(r.stopped_epoch < 30 for r in trainer.result.variants) >= 2


def test_early_stopping_stops_where_the_validation_curve_implies(group):
    stopped_early = 0
    for v in group.variants:
        es = v.config.training.early_stopping
        curve = [r["val_loss"] for r in v.history]
        best_epoch, stop_epoch = replay_early_stopping(curve, es.patience, es.min_delta)
        assert v.best_epoch == best_epoch
        assert v.epochs_trained == len(v.history) == v.history[-1]["epoch"]
        if stop_epoch is None:
            assert v.epochs_trained == v.stopped_epoch == EPOCHS
        else:
            stopped_early += 1
            assert v.stopped_epoch == stop_epoch == v.best_epoch + es.patience == v.epochs_trained
        if es.min_delta == 0:
            assert v.best["val_loss"] == min(curve)
    assert stopped_early >= 1


def test_variant_without_patience_trains_the_whole_budget(group):
    v = group.variants[1]
    assert v.config.training.early_stopping.patience is None
    assert v.epochs_trained == v.stopped_epoch == EPOCHS
    assert [r["epoch"] for r in v.history] == list(range(1, EPOCHS + 1))


def test_best_parameters_are_restored(group, synthetic_data):
    evaluate = jax.jit(partial(engine.evaluate, group.structures[0]))
    for v in group.variants:
        hp = one_variant(v.config)
        val = evaluate(v.params, hp, synthetic_data.val)
        assert float(val["loss"]) == pytest.approx(v.best["val_loss"], rel=1e-5)
        assert float(val["accuracy"]) == pytest.approx(v.best["val_accuracy"], abs=1e-6)
        test = evaluate(v.params, hp, synthetic_data.test)
        assert set(v.test) == {"loss", "accuracy", "nll", "ece", "mce", "brier"}
        assert v.test == pytest.approx({k: float(test[k]) for k in v.test}, rel=1e-5, abs=1e-6)
        assert v.test["accuracy"] > 0.6  # three overlapping clusters: chance is 1/3


def test_history_has_one_record_per_trained_epoch(group, synthetic_data):
    n_val, width = len(synthetic_data.val), group.variants[0].config.model.hidden[0]
    for v in group.variants:
        for row in v.history:
            assert set(row) == {"epoch", "epoch_seconds", "train_loss", "train_accuracy", "val_loss",
                                "val_accuracy", "val_ece", "learning_rate", "dead_fraction_0"}
            assert row["learning_rate"] == pytest.approx(v.config.optimizer.learning_rate)
            assert 0 <= row["dead_fraction_0"] <= 1 and 0 <= row["val_accuracy"] <= 1 and 0 <= row["val_ece"] <= 1
            # counts over the validation examples and over the hidden units
            assert row["val_accuracy"] * n_val == pytest.approx(round(row["val_accuracy"] * n_val), abs=1e-3)
            assert row["dead_fraction_0"] * width == pytest.approx(round(row["dead_fraction_0"] * width), abs=1e-4)
        assert v.history[-1]["train_loss"] < v.history[0]["train_loss"]


def test_best_epochs_metrics_equal_a_hand_evaluation_of_the_selected_parameters(group, synthetic_data):
    """The best epoch's validation loss, accuracy and dead-unit fraction, recomputed in NumPy from
    the restored parameters: a unit is dead when its ReLU is zero for every validation example."""
    for v in group.variants:
        ours = classification_metrics(v.params, synthetic_data.val.x, synthetic_data.val.y)
        assert v.best["val_loss"] == pytest.approx(ours["loss"], rel=1e-5)
        assert v.best["val_accuracy"] == pytest.approx(ours["accuracy"], abs=1e-6)
        assert v.best["dead_fraction_0"] == pytest.approx(ours["dead_fraction"][0], abs=1e-6)


# --- divergence ------------------------------------------------------------------------------

def sgd_group(make_config, middle_learning_rate: float):
    """Three SGD variants that keep their last (not best) parameters and monitor validation accuracy."""
    base = {"optimizer.name": "sgd", "optimizer.momentum": 0.5, "training.epochs": 6,
            "training.early_stopping.patience": None, "training.early_stopping.restore_best": False,
            "training.early_stopping.monitor": "val_accuracy"}
    return [make_config({**base, "training.seed": seed, "optimizer.learning_rate": lr})
            for seed, lr in [(0, 0.1), (1, middle_learning_rate), (2, 0.05)]]


@pytest.fixture(scope="module")
def divergence(make_config, synthetic_data):
    """(group whose middle variant blows up, the same group with a sane middle, its per-epoch records)."""
    blown = fit(sgd_group(make_config, 1e6), synthetic_data)
    trainer = Trainer(sgd_group(make_config, 0.1), synthetic_data)
    tic = time.perf_counter()
    records = list(trainer.run())
    trainer.wall_seconds = time.perf_counter() - tic  # compiling (run compiles first) and training
    return blown, trainer.result, records, trainer


def test_nan_in_one_variant_leaves_the_others_bit_identical(divergence):
    blown, sane, *_ = divergence
    for i in (0, 2):
        assert not blown.variants[i].diverged
        assert_same_run(blown.variants[i], sane.variants[i], exact=True)


def test_diverged_variant_is_frozen_with_finite_parameters(divergence):
    blown, sane, *_ = divergence
    v = blown.variants[1]
    assert v.diverged and not sane.variants[1].diverged
    assert v.epochs_trained < 6 == blown.variants[0].epochs_trained
    assert v.stopped_epoch == v.epochs_trained == v.history[-1]["epoch"]
    assert not np.isfinite(v.history[-1]["val_loss"])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(v.params))
    assert all(np.isfinite(x) for x in v.test.values())


def test_trainer_yields_one_record_per_epoch_with_a_variant_axis(divergence):
    _, result, records, trainer = divergence
    assert [r["epoch"] for r in records] == list(range(1, 7))
    for r in records:
        assert r["val_loss"].shape == r["active"].shape == r["best_epoch"].shape == (3,)
        assert r["dead_fraction"].shape == (3, 1)
        assert r["trained"].all() and not r["diverged"].any()
        assert r["active"].all() == (r["epoch"] < 6)  # the budget's last epoch stops them
        np.testing.assert_array_equal(r["variant_epoch"], r["epoch"])
    for i, v in enumerate(result.variants):
        np.testing.assert_array_equal([row["val_loss"] for row in v.history], [r["val_loss"][i] for r in records])
    assert result.compile_seconds > 0
    # nested intervals of one clock: compiling, then the epochs, within the wall time around run()
    assert result.compile_seconds == trainer.compile_seconds
    assert sum(r["epoch_seconds"] for r in records) <= result.train_seconds
    assert result.compile_seconds + result.train_seconds <= trainer.wall_seconds


def test_max_norm_bounds_the_kernels_of_a_trained_variant(group):
    bounded = [v for v in group.variants if v.config.optimizer.max_norm is not None]
    assert [v.config.optimizer.max_norm for v in bounded] == [1.0]
    assert max(float(n.max()) for n in kernel_column_norms(bounded[0].params)) <= 1.0 * (1 + 1e-5)
    free = [v for v in group.variants if v.config.optimizer.max_norm is None]
    assert max(float(n.max()) for v in free for n in kernel_column_norms(v.params)) > 1.0


def test_last_parameters_are_kept_without_restore_best(divergence, synthetic_data):
    _, sane, *_ = divergence
    evaluate = jax.jit(partial(engine.evaluate, sane.structures[0]))
    for v in sane.variants:
        val = evaluate(v.params, one_variant(v.config), synthetic_data.val)
        assert float(val["loss"]) == pytest.approx(v.history[-1]["val_loss"], rel=1e-5)
        assert float(val["accuracy"]) == pytest.approx(v.history[-1]["val_accuracy"], abs=1e-6)
        ours = classification_metrics(v.params, synthetic_data.val.x, synthetic_data.val.y)
        assert v.history[-1]["val_loss"] == pytest.approx(ours["loss"], rel=1e-5)
        assert v.history[-1]["val_accuracy"] == pytest.approx(ours["accuracy"], abs=1e-6)
        assert v.history[-1]["dead_fraction_0"] == pytest.approx(ours["dead_fraction"][0], abs=1e-6)


def test_restore_best_is_a_number_of_the_variant(make_config, synthetic_data):
    """Two copies of one run in one program, one keeping its best epoch and one its last: they
    train identically, and each ends with the parameters its flag asks for."""
    base = {"optimizer.name": "sgd", "optimizer.learning_rate": 0.3, "optimizer.momentum": 0.9,
            "training.epochs": 8, "training.early_stopping.patience": None}
    result = fit([make_config({**base, "training.early_stopping.restore_best": flag}) for flag in (True, False)],
                 synthetic_data)
    assert len(result.structures) == 1
    best, last = result.variants
    assert [h["val_loss"] for h in best.history] == [h["val_loss"] for h in last.history]
    assert best.best_epoch < len(best.history), "the test needs a best epoch before the last"
    evaluate = jax.jit(partial(engine.evaluate, result.structures[0]))
    best_loss, last_loss = (float(evaluate(v.params, one_variant(v.config), synthetic_data.val)["loss"])
                            for v in (best, last))
    assert best_loss == pytest.approx(best.best["val_loss"], rel=1e-5)
    assert last_loss == pytest.approx(last.history[-1]["val_loss"], rel=1e-5)
    assert best_loss < last_loss


def test_accuracy_monitor_picks_the_first_most_accurate_epoch(divergence):
    _, sane, *_ = divergence
    for v in sane.variants:
        accuracies = [r["val_accuracy"] for r in v.history]
        assert v.best_epoch == int(np.argmax(accuracies)) + 1
        assert v.best["val_accuracy"] == max(accuracies)


# --- real datasets ------------------------------------------------------------------------------

@pytest.mark.slow
def test_digits_reaches_95_percent_test_accuracy():
    cfg = load_config({"data": {"name": "digits"}, "model": {"hidden": [64]},
                       "optimizer": {"name": "adam", "learning_rate": 1e-3},
                       "training": {"epochs": 100, "batch_size": 32, "early_stopping": {"patience": 10}}})
    v = fit([cfg], load_dataset(cfg.data)).variants[0]
    assert not v.diverged
    assert v.test["accuracy"] >= 0.95
    assert v.best["val_accuracy"] >= 0.95


def test_diabetes_regression_beats_predicting_the_mean():
    cfg = load_config({"data": {"name": "diabetes"}, "model": {"hidden": [32]},
                       "optimizer": {"name": "adam", "learning_rate": 3e-3, "schedule": "cosine", "warmup_epochs": 2},
                       "training": {"epochs": 200, "batch_size": 32, "early_stopping": {"patience": 10}}})
    data = load_dataset(cfg.data)
    result = fit([cfg], data)
    v = result.variants[0]
    baseline = float(np.mean((data.test.y - data.train.y.mean()) ** 2))
    assert baseline == pytest.approx(1.0, abs=0.2)
    assert set(v.test) == {"loss"}
    assert v.test["loss"] < 0.75 * baseline
    assert "val_accuracy" not in v.history[0] and "train_accuracy" not in v.history[0]
    # the learning rate recorded each epoch is the one of the epoch's last step under warm-up and cosine
    spe = result.structures[0].steps_per_epoch
    assert spe == len(data.train) // 32
    total = spe * 200
    for row in v.history:
        last = row["epoch"] * spe - 1
        expected = 3e-3 * min(1.0, (last + 1) / (2 * spe)) * 0.5 * (1 + np.cos(np.pi * last / total))
        assert row["learning_rate"] == pytest.approx(expected, rel=1e-5)


def test_a_loss_far_above_its_initial_value_counts_as_diverged(make_config, synthetic_data):
    """Adam at a learning rate of 1e9 does not reach NaN, but its loss explodes: diverged,
    frozen at its last sane state; with divergence_factor None only NaN/inf counts."""
    wild = {"optimizer.name": "adam", "optimizer.learning_rate": 1e9, "training.epochs": 3}
    (blown,) = fit([make_config(wild)], synthetic_data).variants
    assert blown.diverged and blown.stopped_epoch == 1 and blown.epochs_trained == 1
    (tolerated,) = fit([make_config({**wild, "training.divergence_factor": None})], synthetic_data).variants
    assert not tolerated.diverged and np.isfinite(tolerated.history[-1]["val_loss"])
    assert tolerated.history[-1]["val_loss"] > 100 * np.log(3)  # what the rule looks at: far above chance
    (sane,) = fit([make_config({"training.epochs": 3})], synthetic_data).variants
    assert not sane.diverged


# --- a snapshot after an epoch, resumed by a new trainer ------------------------------------

@pytest.mark.parametrize("at, devices", [(2, 1), (9, 1), (9, 2)])
def test_a_run_resumed_from_a_snapshot_equals_the_uninterrupted_run(group, group_configs, synthetic_data, at,
                                                                    devices):
    """The group (dropout draws, max-norm, early stopping at different epochs) snapshotted after
    epoch `at` and resumed by a fresh trainer ends bit-identical to the run never stopped: the
    same parameters, test metrics, histories and epochs; at epoch 9 a variant has stopped already.
    Sharded over two devices, the snapshot is taken and restored across them."""
    if devices > len(jax.devices()):
        pytest.skip("needs two devices")
    if devices > 1:  # the uninterrupted run sharded too (sharding may change the last bits)
        group = fit(group_configs, synthetic_data, devices)
    first = Trainer(group_configs, synthetic_data, devices=devices)
    for record in first.run():
        if record["epoch"] == at:
            snap = first.snapshot()
            break
    assert snap.epoch == at and len(snap.records) == at and snap.seconds > 0
    assert all("finished" not in r for r in snap.records)
    second = Trainer(group_configs, synthetic_data, devices=devices)
    epochs = [record["epoch"] for record in second.run(resume=snap)]
    assert epochs[0] == at + 1
    for resumed, uninterrupted in zip(second.result.variants, group.variants):
        assert_same_run(resumed, uninterrupted, exact=True)
    assert any(v.stopped_epoch <= 9 for v in group.variants) and any(v.stopped_epoch > 9 for v in group.variants)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_snapshot_of_other_variants_is_refused_before_training(group_configs, make_config, synthetic_data):
    trainer = Trainer(group_configs, synthetic_data)
    next(iter(trainer.run()))
    snap = trainer.snapshot()
    wider = [make_config({"model.hidden": [48], "training.epochs": EPOCHS})] * 3
    with pytest.raises(engine.SnapshotMismatch, match="does not fit"):
        next(iter(Trainer(wider, synthetic_data).run(resume=snap)))
    with pytest.raises(engine.SnapshotMismatch, match="does not fit"):
        next(iter(Trainer(group_configs[:2], synthetic_data).run(resume=snap)))


def test_a_snapshot_does_not_change_as_training_goes_on(group_configs, synthetic_data):
    trainer = Trainer(group_configs, synthetic_data)
    records = trainer.run()
    next(records)
    snap = trainer.snapshot()
    before = [a.copy() for a in snap.leaves]
    next(records)  # the next epoch (its input states donated)
    assert all(np.array_equal(a, b) for a, b in zip(snap.leaves, before))
    assert not all(np.array_equal(a, b) for a, b in zip(trainer.snapshot().leaves, before))
