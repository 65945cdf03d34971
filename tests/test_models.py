"""The MLP: shapes, parameter counts, initialisers, dropout, and loss gradients vs finite differences."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import stats

from jaxmlp import config
from jaxmlp.activations import ActivationParams
from jaxmlp.losses import cross_entropy, mse, mse_one_hot
from jaxmlp.models import MLP, count_params, dropout, n_kernel_weights, params_from_uniform, resolve_init

KEY = jax.random.key(0)


def random_params(model: MLP, n_inputs: int, seed: int = 0, dtype=np.float32):
    """Parameters of `model` drawn with numpy (cheaper than compiling the initialiser)."""
    shapes = jax.eval_shape(model.init, KEY, jnp.zeros((1, n_inputs)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        scale = 1 / np.sqrt(leaf.shape[0]) if path[-1].key == "kernel" else 0.1
        return jnp.asarray(rng.normal(scale=scale, size=leaf.shape).astype(dtype))

    return jax.tree_util.tree_map_with_path(draw, shapes)


def jitted_apply(model: MLP):
    return jax.jit(model.apply, static_argnames=("return_hidden",))


@pytest.mark.parametrize("n_outputs", [10, 1], ids=["classification", "regression"])
def test_output_shape_for_classification_and_regression(n_outputs):
    model = MLP((16, 8), n_outputs)
    x = jnp.ones((7, 12))
    out = jax.eval_shape(model.apply, jax.eval_shape(model.init, KEY, x), x)
    assert out.shape == (7, n_outputs)


def test_image_inputs_are_flattened():
    images = jax.random.uniform(KEY, (5, 8, 8))
    model = MLP((16,), 10)
    params = random_params(model, 64)
    apply = jitted_apply(model)
    flat = apply(params, images.reshape(5, 64))
    assert flat.shape == (5, 10)
    np.testing.assert_allclose(apply(params, images), flat, rtol=1e-6)


def test_count_params_counts_weights_and_biases():
    params = jax.eval_shape(MLP((16, 8), 3).init, KEY, jnp.ones((1, 12)))
    assert count_params(params) == (12 * 16 + 16) + (16 * 8 + 8) + (8 * 3 + 3)
    assert count_params(jax.eval_shape(MLP((), 4).init, KEY, jnp.ones((1, 5)))) == 5 * 4 + 4
    assert count_params(random_params(MLP((16, 8), 3), 12)) == 371


def test_return_hidden_gives_one_array_per_hidden_layer():
    x = jax.random.normal(KEY, (9, 6))
    model = MLP((16, 8, 4), 3, activations=("relu",))
    params = random_params(model, 6)
    out, hidden = jitted_apply(model)(params, x, return_hidden=True)
    assert [h.shape for h in hidden] == [(9, 16), (9, 8), (9, 4)]
    p = params["params"]
    h = np.asarray(x)
    for i, layer in enumerate(hidden):
        h = np.maximum(h @ np.asarray(p[f"hidden_{i}"]["kernel"]) + np.asarray(p[f"hidden_{i}"]["bias"]), 0)
        np.testing.assert_allclose(np.asarray(layer), h, rtol=1e-5, atol=1e-6)
    expected = h @ np.asarray(p["output"]["kernel"]) + np.asarray(p["output"]["bias"])
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_auto_init_follows_the_activation():
    assert resolve_init("auto", "relu") == "he_normal"
    assert resolve_init("auto", "elu") == "he_normal"
    assert resolve_init("auto", "tanh") == "glorot_uniform"
    assert resolve_init("auto", "sigmoid") == "glorot_uniform"
    assert resolve_init("auto", "selu") == "lecun_normal"
    assert resolve_init("glorot_normal", "relu") == "glorot_normal"


FAN_IN, FAN_OUT = 256, 512


def hidden_kernel(initializer: str, activation: str = "relu") -> np.ndarray:
    params = MLP((FAN_OUT,), 3, (activation,), (initializer,)).init(KEY, jnp.ones((1, FAN_IN)))["params"]
    assert np.all(np.asarray(params["hidden_0"]["bias"]) == 0)
    return np.asarray(params["hidden_0"]["kernel"])


@pytest.mark.parametrize("initializer, variance", [
    ("he_normal", 2 / FAN_IN), ("he_uniform", 2 / FAN_IN),
    ("glorot_normal", 2 / (FAN_IN + FAN_OUT)), ("glorot_uniform", 2 / (FAN_IN + FAN_OUT)),
    ("lecun_normal", 1 / FAN_IN),
])
def test_initialiser_by_name_has_the_expected_variance(initializer, variance):
    assert hidden_kernel(initializer).var() == pytest.approx(variance, rel=0.05)


def test_auto_init_gives_he_scale_for_relu_and_glorot_scale_for_tanh():
    he, glorot = hidden_kernel("auto", "relu").var(), hidden_kernel("auto", "tanh").var()
    assert he == pytest.approx(2 / FAN_IN, rel=0.05)
    assert glorot == pytest.approx(2 / (FAN_IN + FAN_OUT), rel=0.05)


DISTRIBUTION = {  # the initialisers' shapes: scipy's distribution, standardised to unit variance
    "uniform": stats.uniform(-np.sqrt(3), 2 * np.sqrt(3)),
    "normal": stats.truncnorm(-2, 2, scale=1 / np.sqrt(stats.truncnorm(-2, 2).var())),  # truncated at 2 std
}


def assert_distribution(kernel: np.ndarray, shape: str, variance: float) -> None:
    """`kernel` looks like draws of the named shape with `variance`: its bound (the uniform's
    sqrt(3) std, the truncation at 2 std of the underlying normal) reached but not passed,
    its excess kurtosis, and a Kolmogorov-Smirnov test against the whole distribution."""
    dist = DISTRIBUTION[shape]
    z = kernel.ravel().astype(np.float64) / np.sqrt(variance)
    bound = dist.support()[1]
    assert bound * 0.99 < np.abs(z).max() <= bound * (1 + 1e-5), f"bound {np.abs(z).max():.4f} vs {bound:.4f}"
    # about five standard errors of the sample kurtosis (0.03 for the hidden kernels' 131,072 draws)
    assert stats.kurtosis(z) == pytest.approx(dist.stats(moments="k"), abs=12 / np.sqrt(z.size))
    assert stats.kstest(z, dist.cdf).pvalue > 1e-3


INIT_CASES = [("he_normal", 2 / FAN_IN), ("he_uniform", 2 / FAN_IN), ("glorot_normal", 2 / (FAN_IN + FAN_OUT)),
              ("glorot_uniform", 2 / (FAN_IN + FAN_OUT)), ("lecun_normal", 1 / FAN_IN), ("lecun_uniform", 1 / FAN_IN)]


def engine_kernel(initializer: str) -> np.ndarray:
    """The hidden kernel as the engine initialises it: from one block of uniform draws in (-1, 1)."""
    model = MLP((FAN_OUT,), 3, ("relu",), (initializer,))
    u = jax.random.uniform(KEY, (n_kernel_weights(model, (FAN_IN,)),), minval=-1.0, maxval=1.0)
    params = params_from_uniform(model, u, (FAN_IN,))["params"]
    assert np.all(np.asarray(params["hidden_0"]["bias"]) == 0)
    assert_distribution(np.asarray(params["output"]["kernel"]), "uniform", 2 / (FAN_OUT + 3))  # Glorot-uniform
    return np.asarray(params["hidden_0"]["kernel"])


@pytest.mark.parametrize("initializer, variance", INIT_CASES, ids=[c[0] for c in INIT_CASES])
@pytest.mark.parametrize("source", ["flax_init", "engine"])
def test_initialiser_by_name_has_the_expected_distribution(initializer, variance, source):
    kernel = hidden_kernel(initializer) if source == "flax_init" else engine_kernel(initializer)
    assert_distribution(kernel, initializer.split("_")[1], variance)


@pytest.mark.parametrize("initializer, swapped", [("he_normal", "uniform"), ("he_uniform", "normal")])
def test_the_distribution_check_tells_normal_from_uniform(initializer, swapped):
    with pytest.raises(AssertionError):
        assert_distribution(hidden_kernel(initializer), swapped, 2 / FAN_IN)


# --- dropout -------------------------------------------------------------------------------

def test_inverted_dropout_keeps_the_expectation():
    ones = jnp.ones(400_000)
    for rate in (0.2, 0.5):
        out = np.asarray(dropout(ones, rate, jax.random.uniform(KEY, ones.shape)))
        assert out.mean() == pytest.approx(1.0, abs=0.01)
        assert np.mean(out == 0) == pytest.approx(rate, abs=0.01)
        np.testing.assert_allclose(out[out != 0], 1 / (1 - rate), rtol=1e-6)


def test_dropout_masks_differ_across_draws():
    ones = jnp.ones(1000)
    a, b = (np.asarray(dropout(ones, 0.5, jax.random.uniform(k, ones.shape))) != 0 for k in jax.random.split(KEY))
    assert 0.3 < np.mean(a != b) < 0.7


def test_dropout_rate_may_differ_across_vmapped_variants():
    x = jnp.ones((3, 2000))
    draws = jax.random.uniform(KEY, x.shape)
    out = np.asarray(jax.vmap(dropout)(x, jnp.array([0.0, 0.25, 0.75]), draws))
    np.testing.assert_array_equal(out[0], 1.0)
    assert np.mean(out[1] == 0) == pytest.approx(0.25, abs=0.04)
    assert np.mean(out[2] == 0) == pytest.approx(0.75, abs=0.04)


def identity_net(width: int):
    """Identity activation and identity weights: the output is the dropped-out input."""
    eye, zero = jnp.eye(width), jnp.zeros(width)
    params = {"params": {"hidden_0": {"kernel": eye, "bias": zero}, "output": {"kernel": eye, "bias": zero}}}
    return jitted_apply(MLP((width,), width, activations=("identity",))), params


def test_mlp_dropout_is_off_at_evaluation():
    apply, params = identity_net(2000)
    x = jax.random.normal(KEY, (3, 2000))
    evaluated = apply(params, x, dropout_rate=0.5, input_dropout_rate=0.5)
    np.testing.assert_array_equal(np.asarray(evaluated), np.asarray(apply(params, x)))
    np.testing.assert_allclose(np.asarray(evaluated), np.asarray(x), rtol=1e-6)


def test_mlp_applies_hidden_and_input_dropout_in_training():
    apply, params = identity_net(2000)
    x = jnp.ones((1, 2000))
    hidden_only = np.asarray(apply(params, x, draws=jax.random.uniform(KEY, (1, 2000)), dropout_rate=0.5))
    assert np.mean(hidden_only == 0) == pytest.approx(0.5, abs=0.04)
    np.testing.assert_allclose(hidden_only[hidden_only != 0], 2.0)
    both = np.asarray(apply(params, x, draws=jax.random.uniform(KEY, (1, 4000)), dropout_rate=0.5,
                            input_dropout_rate=0.5))
    assert np.mean(both == 0) == pytest.approx(0.75, abs=0.04)
    np.testing.assert_allclose(both[both != 0], 4.0)


# --- gradients against finite differences ---------------------------------------------------

ACT_PARAMS = ActivationParams(leaky_slope=0.1, elu_alpha=0.7, noise_std=0.5)
KINKED = {"relu", "leaky_relu", "noisy_relu", "elu"}


def _loss_of_flat_params(activation: str, loss, n_outputs: int, targets, train: bool):
    """Loss as a function of the flattened float64 parameters, at a fixed batch and noise key."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 4)))
    model = MLP((5, 4), n_outputs, activations=(activation,))
    flat, unravel = ravel_pytree(random_params(model, 4, seed=2, dtype=np.float64))
    width = model.random_width(4, dropout=False, input_dropout=False)
    draws = jax.random.uniform(jax.random.key(3), (6, width), jnp.float64, minval=1e-7) if train else None

    def f(v):
        return loss(model.apply(unravel(v), x, draws=draws, act_params=ACT_PARAMS), targets)

    def preactivations(v):
        _, state = model.apply(unravel(v), x, act_params=ACT_PARAMS, capture_intermediates=True,
                               mutable=["intermediates"])
        return [np.asarray(state["intermediates"][f"hidden_{i}"]["__call__"][0]) for i in range(2)]

    return f, flat, preactivations


def _check_gradient(f, flat, h=1e-6):
    """Analytic gradient against central differences along every coordinate."""
    eye = jnp.eye(flat.size, dtype=flat.dtype)

    @jax.jit
    def both(v):
        return jax.grad(f)(v), (jax.vmap(f)(v + h * eye) - jax.vmap(f)(v - h * eye)) / (2 * h)

    grad, fd = both(flat)
    assert grad.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(grad))) > 1e-3
    np.testing.assert_allclose(np.asarray(grad), np.asarray(fd), rtol=1e-5, atol=1e-8)


GRADIENT_CASES = [(name, False) for name in config.ACTIVATIONS] + [("noisy_relu", True)]


@pytest.mark.parametrize("activation, train", GRADIENT_CASES,
                         ids=[f"{a}-{'train' if t else 'eval'}" for a, t in GRADIENT_CASES])
def test_loss_gradient_matches_finite_differences(activation, train):
    with jax.enable_x64(True):
        labels = jnp.array([0, 1, 2, 0, 1, 2])
        f, flat, preactivations = _loss_of_flat_params(activation, cross_entropy, 3, labels, train)
        if activation in KINKED and not train:
            assert min(np.abs(z).min() for z in preactivations(flat)) > 1e-4, "test point too close to a kink"
        _check_gradient(f, flat)


@pytest.mark.parametrize("loss, n_outputs, targets", [
    (mse_one_hot, 3, [0, 1, 2, 2, 1, 0]),
    (mse, 1, [0.5, -1.0, 2.0, 0.0, 1.5, -0.3]),
], ids=["mse_one_hot", "mse"])
def test_other_losses_gradient_matches_finite_differences(loss, n_outputs, targets):
    with jax.enable_x64(True):
        f, flat, _ = _loss_of_flat_params("tanh", loss, n_outputs, jnp.asarray(targets), train=False)
        _check_gradient(f, flat)


def test_a_switched_mlp_equals_the_plain_mlp_of_its_chosen_activation_and_initializer():
    """Choice k of ('tanh', 'relu') x ('glorot_uniform', 'he_normal'): the parameters from the
    same draws and the outputs of the net of those names alone (to rounding: XLA compiles a
    switch's branch apart, which may round an ulp otherwise)."""
    acts, inits = ("tanh", "relu"), ("glorot_uniform", "he_normal")
    switched = MLP((6,), 3, acts, inits)
    assert switched.kernel_initializers == inits and not switched.noisy
    u = jax.random.uniform(KEY, (n_kernel_weights(switched, (4,)),), minval=-1.0, maxval=1.0)
    x = jax.random.normal(jax.random.key(1), (5, 4))
    for k in range(2):
        alone = MLP((6,), 3, (acts[k],), (inits[k],))
        params = params_from_uniform(switched, u, (4,), jnp.int32(k))
        expected = params_from_uniform(alone, u, (4,))
        jax.tree_util.tree_map(partial(np.testing.assert_allclose, rtol=1e-6, atol=0), params, expected)
        out = switched.apply(params, x, act_params=ActivationParams(choice=jnp.int32(k)))
        np.testing.assert_allclose(np.asarray(out), np.asarray(alone.apply(expected, x)), rtol=1e-5, atol=1e-6)


def test_auto_initializers_resolve_for_the_activation_and_noise_follows_it():
    assert MLP((4,), 2, ("tanh",)).kernel_initializers == ("glorot_uniform",)
    assert MLP((4,), 2, ("noisy_relu",), ("auto",)).kernel_initializers == ("he_normal",)
    assert MLP((4,), 2, ("noisy_relu",)).noisy and not MLP((4,), 2, ("relu",)).noisy
    assert MLP((4,), 2, ("noisy_relu",)).random_width(3, dropout=True, input_dropout=False) == 2 * 4
