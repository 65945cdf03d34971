"""One variant's engine pieces: structure and numbers, early stopping, max-norm, dropout, evaluation."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest


from jaxmlp import engine
from jaxmlp.config import load_config
from jaxmlp.data import Dataset, Split, load_dataset
from jaxmlp.engine import Trainer

from tests.helpers.engine import kernel_column_norms, one_variant, replay_early_stopping


# --- static structure and hyperparameters ----------------------------------------------------

def test_numeric_values_do_not_change_the_structure(make_config):
    a = make_config()
    b = make_config({"training.seed": 3, "optimizer.learning_rate": 0.5, "model.dropout": 0.3,
                     "optimizer.max_norm": 2.0, "training.early_stopping.patience": None})
    assert engine.structure_key(a) == engine.structure_key(b)
    assert engine.structure_key(a) != engine.structure_key(make_config({"model.activation": "tanh"}))


def test_variants_of_different_structure_cannot_share_a_group(make_config, synthetic_data):
    with pytest.raises(ValueError, match=r"must share their structure; they differ in model.hidden$"):
        engine.structure_of([make_config(), make_config({"model.hidden": [8]})], synthetic_data)


def test_structure_switches_on_features_any_variant_uses(make_config, synthetic_data):
    s = engine.structure_of([make_config(), make_config({"model.dropout": 0.2, "optimizer.clip_norm": 1.0})],
                           synthetic_data)
    assert (s.use_dropout, s.use_clip, s.use_input_dropout, s.use_max_norm, s.use_weight_decay) == \
        (True, True, False, False, False)
    assert (s.n_outputs, s.task, s.loss, s.n_train, s.steps_per_epoch) == (3, "classification", "cross_entropy", 272, 8)


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
        engine.structure_of([cfg], data)


# --- early stopping on a known curve -----------------------------------------------------------

CURVE = [1.0, 0.8, 0.7, 0.69, 0.72, 0.75, 0.71, 0.68, 0.9]


def stop_on_curve(curve, patience, min_delta):
    """Drive early_stopping_update along `curve`; stop as the engine does when bad_epochs reaches patience."""
    es = engine.EarlyStopping(jnp.float32(jnp.inf), jnp.int32(0), jnp.int32(0))
    improvements = []
    for epoch, value in enumerate(curve, start=1):
        es, improved = engine.early_stopping_update(es, jnp.float32(value), jnp.int32(epoch), jnp.float32(min_delta))
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
    es = engine.EarlyStopping(jnp.array([0.7, 0.7]), jnp.array([3, 3]), jnp.array([0, 2]))
    new, improved = jax.vmap(engine.early_stopping_update, in_axes=(0, None, None, 0))(
        es, jnp.float32(0.69), jnp.int32(4), jnp.array([0.0, 0.02]))
    np.testing.assert_array_equal(improved, [True, False])
    np.testing.assert_array_equal(new.best_epoch, [4, 3])
    np.testing.assert_array_equal(new.bad_epochs, [0, 3])
    np.testing.assert_allclose(new.best_metric, [0.69, 0.7])


# --- max-norm ------------------------------------------------------------------------------------

def test_max_norm_holds_after_every_step(make_config, synthetic_data):
    cfg = make_config({"model.hidden": [32, 16], "optimizer.name": "sgd", "optimizer.learning_rate": 0.2,
                       "optimizer.momentum": 0.5, "optimizer.max_norm": 0.8})
    s = engine.structure_of([cfg], synthetic_data)
    hp = one_variant(cfg)
    batches = jnp.arange(30 * s.batch_size).reshape(30, s.batch_size) % s.n_train
    draws = jnp.zeros((30, s.batch_size, s.random_width))

    @jax.jit
    def norms_per_step():
        state = engine.init_state(s, cfg.training.seed)

        def step(carry, batch):
            carry, (loss, _, _) = engine.train_step(s, hp, synthetic_data.train, carry, batch)
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
    s = engine.structure_of(configs, data)
    hp = engine.hparams_of(configs)

    @jax.jit
    def kept_units(hp):
        state = jax.vmap(partial(engine.init_state, s))(jnp.asarray([c.training.seed for c in configs], jnp.uint32))
        step_all = jax.vmap(partial(engine.train_step, s), in_axes=(0, None, 0, (None, 0)))

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


def test_evaluate_counts_dead_units_over_the_whole_split_across_chunks(make_config):
    """Unit 0 never fires, unit 1 always, unit 2 only on the split's last example (past the
    first evaluation chunk): only unit 0 is dead; loss and accuracy equal the unchunked ones."""
    n = engine.EVAL_CHUNK + 37
    x = np.zeros((n, 2), np.float32)
    x[-1, 0] = 1.0
    y = np.zeros(n, np.int32)
    data = Dataset("tiny", "classification", Split(x, y), Split(x, y), Split(x, y), num_classes=2)
    s = engine.structure_of([make_config({"model.hidden": [3], "model.activation": "relu"})], data)
    kernel = jnp.array([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0]])
    params = {"params": {"hidden_0": {"kernel": kernel, "bias": jnp.array([-1.0, 1.0, 0.0])},
                         "output": {"kernel": jnp.array([[0.0, 0.0], [1.0, -1.0], [0.0, 0.0]]),
                                    "bias": jnp.zeros(2)}}}
    hp = one_variant(make_config({}))
    metrics = jax.device_get(jax.jit(partial(engine.evaluate, s))(params, hp, Split(jnp.asarray(x), jnp.asarray(y))))
    np.testing.assert_allclose(metrics["dead_fraction"], [1 / 3])
    logits = np.asarray(s.model.apply(params, jnp.asarray(x)))
    expected = np.mean(np.log1p(np.exp(logits[:, 1] - logits[:, 0])))
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["accuracy"]) == 1.0
