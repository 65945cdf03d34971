"""Momentum schedules: a linear ramp from a start value, per step, vmappable like the learning rate."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmlp import engine
from jaxmlp.optim import make_optimizer, momentum_at

from tests.helpers.engine import assert_same_run, fit, one_variant


@pytest.mark.parametrize("start, end, ramp_epochs", [(0.5, 0.99, 3.0), (0.9, 0.5, 2.0), (-1.0, 0.9, 5.0),
                                                      (0.5, 0.95, 0.0)])
def test_momentum_follows_the_linear_ramp_step_by_step(start, end, ramp_epochs):
    steps_per_epoch = 7
    got = [float(momentum_at(t, steps_per_epoch, jnp.float32(end), jnp.float32(start), jnp.float32(ramp_epochs)))
           for t in range(40)]
    ramp = ramp_epochs * steps_per_epoch
    want = [end if start < 0 or ramp == 0 else start + (end - start) * min(1.0, t / ramp) for t in range(40)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_sgd_with_a_ramped_momentum_equals_the_heavy_ball_recurrence_by_hand():
    """Given to each update, the momentum is the one the update uses."""
    grads = [jnp.asarray([0.3, -1.2]), jnp.asarray([0.1, 0.4]), jnp.asarray([-0.7, 0.2]), jnp.asarray([0.5, 0.5])]
    opt = make_optimizer("sgd")
    params = jnp.zeros(2)
    state = opt.init(params)
    velocity, by_hand = np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads):
        m = momentum_at(t, 2, jnp.float32(0.9), jnp.float32(0.5), jnp.float32(1.0))
        updates, state = opt.update(g, state, params, learning_rate=0.1, momentum=m, weight_decay=0.0,
                                    clip_norm=jnp.inf)
        params = optax.apply_updates(params, updates)
        velocity = float(m) * velocity + np.asarray(g)
        by_hand = by_hand - 0.1 * velocity
    np.testing.assert_allclose(params, by_hand, rtol=1e-6)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_the_engine_steps_with_the_scheduled_momentum(make_config, synthetic_data):
    cfg = make_config({"optimizer.name": "sgd", "optimizer.learning_rate": 0.05, "optimizer.momentum": 0.95,
                       "optimizer.momentum_start": 0.5, "optimizer.momentum_ramp_epochs": 2})
    s, hp = engine.structure_of([cfg], synthetic_data), one_variant(cfg)
    state = engine.init_state(s, cfg.training.seed)
    carry = (state.params, state.opt_state, state.step)
    batch = (jnp.arange(s.batch_size), engine.step_draws(s, jax.random.key(0)))
    seen = []
    for _ in range(3 * s.steps_per_epoch):
        carry, _ = engine.train_step(s, hp, synthetic_data.train, carry, batch)
        seen.append(float(carry[1].hyperparams["momentum"]))
    want = [min(0.95, 0.5 + 0.45 * t / (2 * s.steps_per_epoch)) for t in range(3 * s.steps_per_epoch)]
    np.testing.assert_allclose(seen, want, rtol=1e-6)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_schedule_vmapped_across_variants_equals_each_variant_trained_alone(make_config, synthetic_data):
    ramps = [{"optimizer.momentum_start": 0.5, "optimizer.momentum_ramp_epochs": 3},
             {"optimizer.momentum_start": 0.0, "optimizer.momentum_ramp_epochs": 1},
             {}]
    configs = [make_config({"optimizer.name": "sgd", "optimizer.learning_rate": 0.05, "optimizer.momentum": 0.9,
                            "training.seed": i, **r}) for i, r in enumerate(ramps)]
    together = fit(configs, synthetic_data)
    for cfg, v in zip(configs, together.variants):
        alone = fit([cfg], synthetic_data).variants[0]
        assert_same_run(v, alone, exact=False)
    first = together.variants[0].history
    assert [round(r["momentum"], 6) for r in first[:4]] == \
        pytest.approx([min(0.9, 0.5 + 0.4 * (e * 8 - 1) / 24) for e in range(1, 5)], rel=1e-5)
    assert {round(r["momentum"], 6) for r in together.variants[2].history} == {0.9}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_adam_has_no_momentum_in_its_history(make_config, synthetic_data):
    (v,) = fit([make_config({"optimizer.name": "adam"})], synthetic_data).variants
    assert "momentum" not in v.history[0]
