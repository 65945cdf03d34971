"""The engine: vmapped variants equal lone runs, early stopping, divergence, max-norm, real datasets."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import train
from jaxmlp.config import load_config
from jaxmlp.data import Dataset, Split, load_dataset
from jaxmlp.trainer import GroupResult, Trainer, VariantResult, fit


def one_variant(cfg) -> train.HParams:
    """The hyperparameters of a single variant, without the leading variant axis."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[0], train.hparams_of([cfg]))


def replay_early_stopping(curve, patience, min_delta):
    """(best_epoch, stop_epoch or None) that a validation curve implies, in float32 like the engine."""
    best, best_epoch, bad = np.float32(np.inf), 0, 0
    for epoch, value in enumerate(np.asarray(curve, np.float32), start=1):
        if value < best - np.float32(min_delta):
            best, best_epoch, bad = value, epoch, 0
        else:
            bad += 1
        if patience is not None and bad >= patience:
            return best_epoch, epoch
    return best_epoch, None


def assert_same_run(a: VariantResult, b: VariantResult, exact: bool) -> None:
    close = np.testing.assert_array_equal if exact else partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)
    assert (a.best_epoch, a.stopped_epoch, a.epochs_trained, a.diverged) == \
        (b.best_epoch, b.stopped_epoch, b.epochs_trained, b.diverged)
    assert len(a.history) == len(b.history)
    for ra, rb in zip(a.history, b.history):
        assert ra.keys() == rb.keys()
        close([ra[k] for k in ra if k != "epoch_seconds"], [rb[k] for k in rb if k != "epoch_seconds"])
    assert a.test.keys() == b.test.keys()
    close([a.test[k] for k in a.test], [b.test[k] for k in a.test])
    assert jax.tree_util.tree_structure(a.params) == jax.tree_util.tree_structure(b.params)
    for pa, pb in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        close(pa, pb)


# --- static structure and hyperparameters ----------------------------------------------------

def test_numeric_values_do_not_change_the_structure(make_config):
    a = make_config()
    b = make_config({"training.seed": 3, "optimizer.learning_rate": 0.5, "model.dropout": 0.3,
                     "optimizer.max_norm": 2.0, "training.early_stopping.patience": None})
    assert train.structure_key(a) == train.structure_key(b)
    assert train.structure_key(a) != train.structure_key(make_config({"model.activation": "tanh"}))


def test_variants_of_different_structure_cannot_share_a_group(make_config, synthetic_data):
    with pytest.raises(ValueError, match=r"must share their structure; they differ in model.hidden$"):
        train.structure_of([make_config(), make_config({"model.hidden": [8]})], synthetic_data)


def test_structure_switches_on_features_any_variant_uses(make_config, synthetic_data):
    s = train.structure_of([make_config(), make_config({"model.dropout": 0.2, "optimizer.clip_norm": 1.0})],
                           synthetic_data)
    assert (s.use_dropout, s.use_clip, s.use_input_dropout, s.use_max_norm, s.use_weight_decay) == \
        (True, True, False, False, False)
    assert (s.n_outputs, s.task, s.loss, s.n_train, s.steps_per_epoch) == (3, "classification", "cross_entropy", 272, 8)


def test_hparams_are_stacked_along_the_variant_axis(make_config):
    hp = train.hparams_of([make_config({"training.seed": 4, "optimizer.max_norm": 2.0}),
                           make_config({"optimizer.learning_rate": 0.1, "training.early_stopping.patience": None})])
    assert all(np.shape(v) == (2,) for v in hp)
    np.testing.assert_array_equal(hp.seed, [4, 0])
    np.testing.assert_allclose(hp.learning_rate, [1e-3, 0.1])
    np.testing.assert_array_equal(hp.max_norm, [2.0, np.inf])
    np.testing.assert_array_equal(hp.clip_norm, [np.inf, np.inf])
    np.testing.assert_array_equal(hp.patience, [10, train.NO_PATIENCE])


def test_batch_larger_than_the_training_set_is_rejected(make_config, synthetic_data):
    big = make_config({"training.batch_size": 1000})
    with pytest.raises(ValueError, match=r"training.batch_size: 1000 exceeds the 272 training samples of "
                                         r"synthetic; use at most 272"):
        Trainer([big], synthetic_data)


def test_accuracy_monitor_on_regression_data_is_rejected(make_config):
    data = load_dataset(load_config({"data": {"name": "diabetes"}}).data)
    cfg = make_config({"data.name": "diabetes", "training.early_stopping.monitor": "val_accuracy"})
    with pytest.raises(ValueError, match=r"training.early_stopping.monitor: 'val_accuracy' needs class labels; "
                                         r"diabetes is a regression dataset, use 'val_loss'"):
        train.structure_of([cfg], data)


# --- early stopping on a known curve -----------------------------------------------------------

CURVE = [1.0, 0.8, 0.7, 0.69, 0.72, 0.75, 0.71, 0.68, 0.9]


def stop_on_curve(curve, patience, min_delta):
    """Drive early_stopping_update along `curve`; stop as the engine does when bad_epochs reaches patience."""
    es = train.EarlyStopping(jnp.float32(jnp.inf), jnp.int32(0), jnp.int32(0))
    improvements = []
    for epoch, value in enumerate(curve, start=1):
        es, improved = train.early_stopping_update(es, jnp.float32(value), jnp.int32(epoch), jnp.float32(min_delta))
        improvements.append(bool(improved))
        if int(es.bad_epochs) >= patience:
            return int(es.best_epoch), epoch, float(es.best_metric), improvements
    return int(es.best_epoch), None, float(es.best_metric), improvements


@pytest.mark.parametrize("patience, min_delta, best_epoch, stop_epoch, best", [
    (3, 0.0, 4, 7, 0.69),     # 0.69 improves on 0.7; three worse epochs follow
    (3, 0.02, 3, 6, 0.7),     # 0.69 is within min_delta of 0.7, so it does not count
    (5, 0.0, 8, None, 0.68),  # enough patience to see the later improvement
    (1, 0.0, 4, 5, 0.69),
])
def test_early_stopping_update_on_a_known_curve(patience, min_delta, best_epoch, stop_epoch, best):
    got_best_epoch, got_stop, got_best, improvements = stop_on_curve(CURVE, patience, min_delta)
    assert (got_best_epoch, got_stop) == (best_epoch, stop_epoch)
    assert got_best == pytest.approx(best)
    assert improvements[0]
    assert replay_early_stopping(CURVE, patience, min_delta) == (best_epoch, stop_epoch)


def test_early_stopping_update_is_per_variant():
    es = train.EarlyStopping(jnp.array([0.7, 0.7]), jnp.array([3, 3]), jnp.array([0, 2]))
    new, improved = jax.vmap(train.early_stopping_update, in_axes=(0, None, None, 0))(
        es, jnp.float32(0.69), jnp.int32(4), jnp.array([0.0, 0.02]))
    np.testing.assert_array_equal(improved, [True, False])
    np.testing.assert_array_equal(new.best_epoch, [4, 3])
    np.testing.assert_array_equal(new.bad_epochs, [0, 3])
    np.testing.assert_allclose(new.best_metric, [0.69, 0.7])


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


@pytest.mark.parametrize("devices", [1, 2])
def test_activations_merged_in_one_program_equal_variants_trained_alone(make_config, synthetic_data, devices):
    if devices > len(jax.devices()):
        pytest.skip("needs two devices")
    configs = [make_config({"training.early_stopping.patience": 1, "optimizer.learning_rate": 0.05, **o, "model.dropout": 0.2,
                            "training.epochs": 30}) for o in MERGED]
    trainer = Trainer(configs, synthetic_data, devices=devices)
    # tanh, relu/glorot and elu (2 variants each) share one copy of the code, and so does relu/he
    # once padded to 2 for two devices; noisy ReLU draws more noise and has its own
    assert sorted(len(f.parts) for f in trainer.families) == ([1, 1, 3] if devices == 1 else [1, 4])
    finished_in = {}  # variant -> the epoch whose record delivered its result
    for record in trainer.run():
        for r in record["finished"]:
            finished_in[configs.index(r.config)] = record["epoch"]
    for cfg, together in zip(configs, trainer.result.variants):
        assert_same_run(together, fit([cfg], synthetic_data).variants[0], exact=False)
    # a variant is evaluated in the epoch it stops; one still training at the end, after the loop
    for i, r in enumerate(trainer.result.variants):
        assert finished_in.get(i) == r.stopped_epoch or (r.stopped_epoch == 30 and i not in finished_in)
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
    evaluate = jax.jit(partial(train.evaluate, group.structures[0]))
    for v in group.variants:
        hp = one_variant(v.config)
        val = evaluate(v.params, hp, synthetic_data.val)
        assert float(val["loss"]) == pytest.approx(v.best["val_loss"], rel=1e-5)
        assert float(val["accuracy"]) == pytest.approx(v.best["val_accuracy"], abs=1e-6)
        test = evaluate(v.params, hp, synthetic_data.test)
        assert v.test == pytest.approx({"loss": float(test["loss"]), "accuracy": float(test["accuracy"])}, rel=1e-5)
        assert v.test["accuracy"] > 0.6  # three overlapping clusters: chance is 1/3


def test_history_has_one_record_per_trained_epoch(group):
    for v in group.variants:
        for row in v.history:
            assert set(row) == {"epoch", "epoch_seconds", "train_loss", "train_accuracy", "val_loss",
                                "val_accuracy", "learning_rate", "dead_fraction_0"}
            assert row["learning_rate"] == pytest.approx(v.config.optimizer.learning_rate)
            assert 0 <= row["dead_fraction_0"] <= 1 and 0 <= row["val_accuracy"] <= 1
        assert v.history[-1]["train_loss"] < v.history[0]["train_loss"]


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
    records = list(trainer.run())
    return blown, trainer.result, records


def test_nan_in_one_variant_leaves_the_others_bit_identical(divergence):
    blown, sane, _ = divergence
    for i in (0, 2):
        assert not blown.variants[i].diverged
        assert_same_run(blown.variants[i], sane.variants[i], exact=True)


def test_diverged_variant_is_frozen_with_finite_parameters(divergence):
    blown, sane, _ = divergence
    v = blown.variants[1]
    assert v.diverged and not sane.variants[1].diverged
    assert v.epochs_trained < 6 == blown.variants[0].epochs_trained
    assert v.stopped_epoch == v.epochs_trained == v.history[-1]["epoch"]
    assert not np.isfinite(v.history[-1]["val_loss"])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(v.params))
    assert all(np.isfinite(x) for x in v.test.values())


def test_trainer_yields_one_record_per_epoch_with_a_variant_axis(divergence):
    _, result, records = divergence
    assert [r["epoch"] for r in records] == list(range(1, 7))
    for r in records:
        assert r["val_loss"].shape == r["active"].shape == r["best_epoch"].shape == (3,)
        assert r["dead_fraction"].shape == (3, 1)
        assert r["trained"].all() and r["active"].all() and not r["diverged"].any()
    for i, v in enumerate(result.variants):
        np.testing.assert_array_equal([row["val_loss"] for row in v.history], [r["val_loss"][i] for r in records])
    assert result.compile_seconds > 0


# --- max-norm ------------------------------------------------------------------------------------

def kernel_column_norms(params) -> list[jax.Array]:
    return [jnp.linalg.norm(leaf, axis=0) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if path[-1].key == "kernel"]


def test_max_norm_holds_after_every_step(make_config, synthetic_data):
    cfg = make_config({"model.hidden": [32, 16], "optimizer.name": "sgd", "optimizer.learning_rate": 0.2,
                       "optimizer.momentum": 0.5, "optimizer.max_norm": 0.8})
    s = train.structure_of([cfg], synthetic_data)
    hp = one_variant(cfg)
    batches = jnp.arange(30 * s.batch_size).reshape(30, s.batch_size) % s.n_train
    draws = jnp.zeros((30, s.batch_size, s.random_width))

    @jax.jit
    def norms_per_step():
        state = train.init_state(s, hp)

        def step(carry, batch):
            carry, (loss, _, _) = train.train_step(s, hp, synthetic_data.train, carry, batch)
            return carry, (jnp.stack([n.max() for n in kernel_column_norms(carry[0])]), loss)

        start = jnp.stack([n.max() for n in kernel_column_norms(state.params)])
        _, (norms, losses) = jax.lax.scan(step, (state.params, state.opt_state, state.step), (batches, draws))
        return start, norms, losses

    start, norms, losses = jax.device_get(norms_per_step())
    assert start.max() > 1.0  # the initial weights violate the bound, so clipping has work to do
    assert norms.shape == (30, 3)
    assert norms.max() <= 0.8 * (1 + 1e-5)
    assert norms.max() >= 0.8 * (1 - 1e-3)
    assert losses[-5:].mean() < losses[:5].mean()


def test_max_norm_bounds_the_kernels_of_a_trained_variant(group):
    bounded = [v for v in group.variants if v.config.optimizer.max_norm is not None]
    assert [v.config.optimizer.max_norm for v in bounded] == [1.0]
    assert max(float(n.max()) for n in kernel_column_norms(bounded[0].params)) <= 1.0 * (1 + 1e-5)
    free = [v for v in group.variants if v.config.optimizer.max_norm is None]
    assert max(float(n.max()) for v in free for n in kernel_column_norms(v.params)) > 1.0


def test_last_parameters_are_kept_without_restore_best(divergence, synthetic_data):
    _, sane, _ = divergence
    evaluate = jax.jit(partial(train.evaluate, sane.structures[0]))
    for v in sane.variants:
        val = evaluate(v.params, one_variant(v.config), synthetic_data.val)
        assert float(val["loss"]) == pytest.approx(v.history[-1]["val_loss"], rel=1e-5)
        assert float(val["accuracy"]) == pytest.approx(v.history[-1]["val_accuracy"], abs=1e-6)


def test_accuracy_monitor_picks_the_first_most_accurate_epoch(divergence):
    _, sane, _ = divergence
    for v in sane.variants:
        accuracies = [r["val_accuracy"] for r in v.history]
        assert v.best_epoch == int(np.argmax(accuracies)) + 1
        assert v.best["val_accuracy"] == max(accuracies)


# --- dropout inside the engine --------------------------------------------------------------

def test_engine_dropout_masks_differ_across_variants_and_steps(make_config):
    """With one example per batch, an output weight moves exactly when its hidden unit was kept."""
    width, steps = 64, 4
    one = Split(jnp.ones((1, 4)), jnp.array([3.0]))
    data = Dataset("one", "regression", one, one, one)
    configs = [make_config({"model.hidden": [width], "model.activation": "identity", "model.dropout": rate,
                            "training.seed": seed, "training.batch_size": 1, "optimizer.name": "sgd",
                            "optimizer.learning_rate": 0.01})
               for seed, rate in [(0, 0.5), (1, 0.5), (2, 0.0)]]
    s = train.structure_of(configs, data)
    hp = train.hparams_of(configs)

    @jax.jit
    def kept_units(hp):
        state = jax.vmap(partial(train.init_state, s))(hp)
        step_all = jax.vmap(partial(train.train_step, s), in_axes=(0, None, 0, (None, 0)))

        def step(carry, key):
            draws = jax.vmap(lambda k: jax.random.uniform(k, (1, s.random_width)))(jax.random.split(key, 3))
            new, _ = step_all(hp, one, carry, (jnp.zeros(1, jnp.int32), draws))
            moved = new[0]["params"]["output"]["kernel"][..., 0] != carry[0]["params"]["output"]["kernel"][..., 0]
            return new, moved

        keys = jax.random.split(jax.random.key(0), steps)
        _, kept = jax.lax.scan(step, (state.params, state.opt_state, state.step), keys)
        return kept

    kept = np.asarray(kept_units(hp))  # [step, variant, unit]
    assert kept.shape == (steps, 3, width)
    assert kept[:, 2].all()  # no dropout: every unit learns
    assert np.all((kept[:, :2].mean(axis=-1) > 0.25) & (kept[:, :2].mean(axis=-1) < 0.75))
    for t in range(steps):
        assert not np.array_equal(kept[t, 0], kept[t, 1])
    for v in (0, 1):
        for t in range(steps - 1):
            assert not np.array_equal(kept[t, v], kept[t + 1, v])


# --- real datasets ------------------------------------------------------------------------------

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


def test_evaluate_counts_dead_units_over_the_whole_split_across_chunks(make_config):
    """Unit 0 never fires, unit 1 always, unit 2 only on the split's last example (past the
    first evaluation chunk): only unit 0 is dead; loss and accuracy equal the unchunked ones."""
    n = train.EVAL_CHUNK + 37
    x = np.zeros((n, 2), np.float32)
    x[-1, 0] = 1.0
    y = np.zeros(n, np.int32)
    data = Dataset("tiny", "classification", Split(x, y), Split(x, y), Split(x, y), num_classes=2)
    s = train.structure_of([make_config({"model.hidden": [3], "model.activation": "relu"})], data)
    kernel = jnp.array([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0]])
    params = {"params": {"hidden_0": {"kernel": kernel, "bias": jnp.array([-1.0, 1.0, 0.0])},
                         "output": {"kernel": jnp.array([[0.0, 0.0], [1.0, -1.0], [0.0, 0.0]]),
                                    "bias": jnp.zeros(2)}}}
    hp = one_variant(make_config({}))
    metrics = jax.device_get(jax.jit(partial(train.evaluate, s))(params, hp, Split(jnp.asarray(x), jnp.asarray(y))))
    np.testing.assert_allclose(metrics["dead_fraction"], [1 / 3])
    logits = np.asarray(s.model.apply(params, jnp.asarray(x)))
    expected = np.mean(np.log1p(np.exp(logits[:, 1] - logits[:, 0])))
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["accuracy"]) == 1.0
