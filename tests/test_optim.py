"""Optimizers with injected hyperparameters, learning-rate schedules and max-norm."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmlp.optim import clip_max_norm, make_optimizer, schedule_factor

INF = jnp.inf


def optimizer(name, learning_rate=0.1, momentum=0.0, weight_decay=0.0, clip_norm=INF, **flags):
    """The family's transformation with these numbers given to every update."""
    tx = make_optimizer(name, **flags)
    numbers = {"learning_rate": learning_rate, "momentum": momentum, "weight_decay": weight_decay,
               "clip_norm": clip_norm}
    return optax.GradientTransformation(tx.init, lambda u, state, params=None: tx.update(u, state, params, **numbers))


# A tiny least-squares problem: 20 examples, 3 features, a known linear target.
_RNG = np.random.default_rng(0)
A = jnp.asarray(_RNG.normal(size=(20, 3)).astype(np.float32))
B = A @ jnp.array([1.0, -2.0, 0.5])


def quadratic(params):
    return jnp.mean((A @ params["w"] + params["b"] - B) ** 2)


def minimise(tx, steps=100):
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(quadratic)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return float(quadratic(params))


@pytest.mark.parametrize("name, kwargs", [
    ("sgd", {"learning_rate": 0.05}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    ("adam", {"learning_rate": 0.05}),
    ("adamw", {"learning_rate": 0.05, "weight_decay": 1e-4}),
    ("rmsprop", {"learning_rate": 0.03}),
    ("rmsprop", {"learning_rate": 0.02, "momentum": 0.5}),
], ids=["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "rmsprop-momentum"])
def test_each_optimizer_reduces_the_loss(name, kwargs):
    start = float(quadratic({"w": jnp.zeros(3), "b": jnp.zeros(())}))
    assert minimise(optimizer(name, **kwargs)) < 0.01 * start


def test_the_numbers_given_to_an_update_are_kept_in_the_optimizer_state():
    tx, params = make_optimizer("sgd", use_weight_decay=True, use_clip=True), {"w": jnp.zeros(3)}
    given = {"learning_rate": 0.3, "momentum": 0.9, "weight_decay": 0.01, "clip_norm": 2.0}
    _, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params, **given)
    assert {k: float(v) for k, v in state.hyperparams.items()} == pytest.approx(given)


def test_an_optimizer_is_built_once_per_family():
    assert make_optimizer("sgd", nesterov=True) is make_optimizer("sgd", nesterov=True)
    assert make_optimizer("sgd") is not make_optimizer("adam")


def test_hyperparameters_may_differ_across_vmapped_variants():
    lrs = jnp.array([0.1, 0.2, 0.4])
    grads = {"w": jnp.array([1.0, -2.0])}

    def first_update(lr):
        tx = optimizer("sgd", learning_rate=lr)
        return tx.update(grads, tx.init(grads))[0]["w"]

    np.testing.assert_allclose(np.asarray(jax.vmap(first_update)(lrs)), -np.outer(lrs, [1.0, -2.0]), rtol=1e-6)


def test_the_learning_rate_given_to_each_update_is_the_one_it_uses():
    params = {"w": jnp.array([1.0, 2.0])}
    grads = {"w": jnp.array([0.5, -1.0])}
    tx = make_optimizer("sgd")
    state = tx.init(params)
    numbers = {"momentum": 0.0, "weight_decay": 0.0, "clip_norm": INF}
    before, state = tx.update(grads, state, params, learning_rate=0.1, **numbers)
    np.testing.assert_allclose(before["w"], [-0.05, 0.1], rtol=1e-6)
    after, state = tx.update(grads, state, params, learning_rate=0.5, **numbers)
    np.testing.assert_allclose(after["w"], [-0.25, 0.5], rtol=1e-6)
    assert float(state.hyperparams["learning_rate"]) == 0.5


def updates_for(tx, grads_seq, params):
    state = tx.init(params)
    out = []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        out.append(np.asarray(u["w"]))
    return out


G = {"w": jnp.array([1.0, -2.0])}
P = {"w": jnp.array([3.0, 4.0])}


def test_momentum_and_nesterov_follow_their_recurrences():
    lr, mu, g = 0.1, 0.9, np.array([1.0, -2.0])
    heavy = updates_for(optimizer("sgd", lr, mu), [G, G], P)
    np.testing.assert_allclose(heavy, [-lr * g, -lr * (1 + mu) * g], rtol=1e-6)
    nesterov = updates_for(optimizer("sgd", lr, mu, nesterov=True), [G, G], P)
    np.testing.assert_allclose(nesterov, [-lr * (1 + mu) * g, -lr * (1 + mu + mu**2) * g], rtol=1e-6)


def test_adam_first_step_is_learning_rate_times_sign():
    (u,) = updates_for(optimizer("adam", 0.01), [G], P)
    np.testing.assert_allclose(u, [-0.01, 0.01], rtol=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_weight_decay_shrinks_weights_without_gradient(name):
    zero = {"w": jnp.zeros(2)}
    (u,) = updates_for(optimizer(name, 0.1, weight_decay=0.5, use_weight_decay=True), [zero], P)
    if name in ("sgd", "adamw"):
        np.testing.assert_allclose(u, -0.1 * 0.5 * np.asarray(P["w"]), rtol=1e-5)
    assert np.all(u * np.asarray(P["w"]) < 0)
    (plain,) = updates_for(optimizer(name, 0.1, weight_decay=0.5), [zero], P)
    if name != "adamw":  # weight decay is off unless requested (adamw always decouples it)
        np.testing.assert_array_equal(plain, 0.0)


GRADS = [{"w": jnp.array([0.5, -1.0])}, {"w": jnp.array([-0.2, 0.3])}, {"w": jnp.array([1.5, 0.1])}]
REFERENCE_CHAINS = {  # coupled (L2) weight decay before the optimizer: optax's own composition
    "sgd": lambda wd: optax.chain(optax.add_decayed_weights(wd), optax.sgd(0.1, momentum=0.9)),
    "adam": lambda wd: optax.chain(optax.add_decayed_weights(wd), optax.adam(0.1)),
    "adamw": lambda wd: optax.adamw(0.1, weight_decay=wd),
    "rmsprop": lambda wd: optax.chain(optax.add_decayed_weights(wd), optax.rmsprop(0.1, momentum=0.9)),
}


def updates_along(tx, grads_seq, params):
    """Updates of `tx` along a trajectory: each update applied before the next gradient."""
    state, out = tx.init(params), []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(np.asarray(u["w"]))
    return out


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_weight_decay_equals_optax_own_chain_step_by_step(name):
    momentum = 0.0 if name in ("adam", "adamw") else 0.9
    ours = updates_along(optimizer(name, 0.1, momentum=momentum, weight_decay=0.05, use_weight_decay=True), GRADS, P)
    np.testing.assert_allclose(ours, updates_along(REFERENCE_CHAINS[name](0.05), GRADS, P), rtol=1e-6, atol=1e-8)
    if name != "adamw":  # and the decay is really in it: without it the updates differ
        assert not np.allclose(ours, updates_along(REFERENCE_CHAINS[name](0.0), GRADS, P), rtol=1e-3)


def test_adam_weight_decay_is_l2_added_to_the_gradient_before_the_moments():
    lr, wd, b1, b2, eps = 0.1, 0.05, 0.9, 0.999, 1e-8
    ours = updates_along(optimizer("adam", lr, weight_decay=wd, use_weight_decay=True), GRADS, P)
    p, m, v = np.asarray(P["w"], np.float64), 0.0, 0.0
    for t, (g, u) in enumerate(zip(GRADS, ours), start=1):
        g = np.asarray(g["w"], np.float64) + wd * p
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        expected = -lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(u, expected, rtol=1e-5)
        p = p + expected


def test_rmsprop_weight_decay_is_l2_added_to_the_gradient():
    lr, wd, decay, eps = 0.1, 0.05, 0.9, 1e-8
    ours = updates_along(optimizer("rmsprop", lr, weight_decay=wd, use_weight_decay=True), GRADS, P)
    p, nu = np.asarray(P["w"], np.float64), 0.0
    for g, u in zip(GRADS, ours):
        g = np.asarray(g["w"], np.float64) + wd * p
        nu = decay * nu + (1 - decay) * g**2
        expected = -lr * g / (np.sqrt(nu) + eps)
        np.testing.assert_allclose(u, expected, rtol=1e-5)
        p = p + expected


def test_gradient_clipping_bounds_the_global_norm():
    big = {"w": jnp.array([30.0, -40.0])}  # norm 50
    (u,) = updates_for(optimizer("sgd", 1.0, clip_norm=5.0, use_clip=True), [big], P)
    np.testing.assert_allclose(u, [-3.0, 4.0], rtol=1e-6)
    (small,) = updates_for(optimizer("sgd", 1.0, clip_norm=100.0, use_clip=True), [big], P)
    np.testing.assert_allclose(small, [-30.0, 40.0], rtol=1e-6)
    (unset,) = updates_for(optimizer("sgd", 1.0, clip_norm=INF, use_clip=True), [big], P)
    np.testing.assert_allclose(unset, [-30.0, 40.0], rtol=1e-6)


def test_unknown_optimizer_lists_allowed_names():
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'; allowed: sgd, adam, adamw, rmsprop"):
        optimizer("lbfgs").init(P)


# --- schedules ---------------------------------------------------------------------------

SPE, TOTAL = 10, 100


def factor(schedule, step, decay_rate=1.0, warmup_epochs=0.0):
    return float(schedule_factor(schedule, jnp.int32(step), SPE, TOTAL, jnp.float32(decay_rate),
                                 jnp.float32(warmup_epochs)))


@pytest.mark.parametrize("step", [0, 1, 37, 99, 150])
def test_constant_schedule_is_one(step):
    assert factor("constant", step) == 1.0


@pytest.mark.parametrize("step, expected", [(0, 1.0), (25, 0.5 + 0.5 * math.cos(math.pi / 4)), (50, 0.5),
                                            (75, 0.5 + 0.5 * math.cos(3 * math.pi / 4)), (100, 0.0), (130, 0.0)])
def test_cosine_schedule(step, expected):
    assert factor("cosine", step) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("step, expected", [(0, 1.0), (5, math.sqrt(0.5)), (10, 0.5), (20, 0.25), (35, 0.5**3.5)])
def test_exponential_schedule_decays_by_the_rate_per_epoch(step, expected):
    assert factor("exponential", step, decay_rate=0.5) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("step, expected", [(0, 1 / 20), (9, 10 / 20), (18, 19 / 20), (19, 1.0), (60, 1.0)])
def test_linear_warm_up_over_whole_epochs(step, expected):
    assert factor("constant", step, warmup_epochs=2) == pytest.approx(expected, rel=1e-6)


def test_warm_up_multiplies_the_decay():
    assert factor("cosine", 4, warmup_epochs=1) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 4 / TOTAL)), rel=1e-6)
    assert factor("exponential", 30, decay_rate=0.5, warmup_epochs=1) == pytest.approx(0.125, rel=1e-5)


def test_unknown_schedule_lists_allowed_names():
    with pytest.raises(ValueError, match="unknown schedule 'linear'; allowed: constant, cosine, exponential"):
        factor("linear", 0)


# --- max-norm ----------------------------------------------------------------------------

def test_clip_max_norm_rescales_only_long_kernel_columns():
    kernel = np.array([[3.0, 0.1, 0.0], [4.0, 0.2, 0.0]])  # column norms 5, ~0.22, 0
    params = {"params": {"hidden_0": {"kernel": jnp.asarray(kernel), "bias": jnp.array([10.0, 10.0, 10.0])}}}
    out = clip_max_norm(params, jnp.float32(1.0))["params"]["hidden_0"]
    np.testing.assert_allclose(out["kernel"][:, 0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(out["kernel"][:, 1:], kernel[:, 1:].astype(np.float32))
    np.testing.assert_array_equal(out["bias"], [10.0, 10.0, 10.0])


def test_clip_max_norm_bounds_every_layer():
    rng = np.random.default_rng(1)
    params = {"params": {name: {"kernel": jnp.asarray(rng.normal(size=shape) * 2), "bias": jnp.ones(shape[1])}
                         for name, shape in [("hidden_0", (8, 16)), ("hidden_1", (16, 4)), ("output", (4, 3))]}}
    clipped = clip_max_norm(params, 1.5)
    for name, layer in clipped["params"].items():
        norms = np.linalg.norm(np.asarray(layer["kernel"]), axis=0)
        assert norms.max() <= 1.5 * (1 + 1e-6)
        original = np.linalg.norm(np.asarray(params["params"][name]["kernel"]), axis=0)
        np.testing.assert_allclose(norms, np.minimum(original, 1.5), rtol=1e-5)
    unbounded = clip_max_norm(params, jnp.inf)
    for name, layer in unbounded["params"].items():
        np.testing.assert_array_equal(layer["kernel"], params["params"][name]["kernel"])
