"""Dampened momentum (`optimizer.momentum_dampening`): the papers' form dw = m dw - (1 - m) lr g,
checked step by step against the recurrence by hand, under a momentum ramp."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import engine
from jaxmlp.losses import get_loss
from jaxmlp.optim import momentum_at

from tests.helpers.engine import one_variant


def _steps(cfg, data, n: int):
    s, hp = engine.structure_of([cfg], data), one_variant(cfg)
    state = engine.init_state(s, cfg.training.seed)
    carry = (state.params, state.opt_state, state.step)
    batch = (jnp.arange(s.batch_size), engine.step_draws(s, jax.random.key(0)))
    seen = [carry[0]]
    for _ in range(n):
        carry, _ = engine.train_step(s, hp, data.train, carry, batch)
        seen.append(carry[0])
    return s, hp, batch, seen


@pytest.mark.parametrize("dampening", [1.0, 0.5, 0.0])
def test_dampened_momentum_follows_the_recurrence_by_hand(make_config, synthetic_data, dampening):
    lr, n = 0.05, 9
    cfg = make_config({"optimizer.name": "sgd", "optimizer.learning_rate": lr, "optimizer.momentum": 0.9,
                       "optimizer.momentum_start": 0.5, "optimizer.momentum_ramp_epochs": 1,
                       "optimizer.momentum_dampening": dampening, "model.dropout": 0.0})
    s, hp, (index, draws), seen = _steps(cfg, synthetic_data, n)
    x, y = synthetic_data.train.x[index], synthetic_data.train.y[index]
    loss = get_loss(s.loss, s.task)
    grad = jax.grad(lambda p: loss(engine.apply_model(s, p, x, hp, draws=draws), y))
    params = seen[0]
    velocity = jax.tree.map(jnp.zeros_like, params)
    for t in range(n):
        m = momentum_at(t, s.steps_per_epoch, hp.momentum, hp.momentum_start, hp.momentum_ramp_epochs)
        g = grad(params)
        velocity = jax.tree.map(lambda v, g_: m * v + (1 - dampening * m) * g_, velocity, g)
        params = jax.tree.map(lambda p, v: p - lr * v, params, velocity)
        for got, want in zip(jax.tree.leaves(seen[t + 1]), jax.tree.leaves(params)):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
