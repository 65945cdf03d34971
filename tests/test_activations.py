"""Each named activation equals its formula; noisy ReLU is random only in training."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import config
from jaxmlp.activations import ACTIVATIONS, ActivationParams, get_activation, is_noisy, switched_activation

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
PARAMS = ActivationParams(leaky_slope=0.2, elu_alpha=0.5, noise_std=0.7)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# References in float64 numpy; gelu is JAX's default tanh approximation (Hendrycks & Gimpel, eq. 2).
FORMULAS = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, PARAMS.leaky_slope * x),
    "noisy_relu": lambda x: np.maximum(x, 0.0),  # at evaluation
    "elu": lambda x: np.where(x > 0, x, PARAMS.elu_alpha * (np.exp(x) - 1.0)),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1.0)),
    "gelu": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "identity": lambda x: x,
}

X = np.concatenate([np.linspace(-6.0, 6.0, 1201), [-30.0, -1e-3, 0.0, 1e-3, 30.0]]).astype(np.float32)


def test_every_configurable_activation_is_implemented():
    assert set(config.ACTIVATIONS) == set(ACTIVATIONS) == set(FORMULAS)


@pytest.mark.parametrize("name", config.ACTIVATIONS)
def test_activation_equals_its_formula(name):
    out = get_activation(name)(jnp.asarray(X), PARAMS, None)
    assert out.dtype == jnp.float32 and out.shape == X.shape
    np.testing.assert_allclose(np.asarray(out), FORMULAS[name](X.astype(np.float64)), rtol=2e-6, atol=2e-6)


def test_switched_activation_applies_the_chosen_function_and_its_gradient():
    names = ["sigmoid", "tanh", "elu", "relu"]
    switched = switched_activation(names)
    x = jnp.asarray(X)
    for choice, name in enumerate(names):
        params = PARAMS._replace(choice=jnp.int32(choice))
        np.testing.assert_array_equal(np.asarray(switched(x, params, None)),
                                      np.asarray(get_activation(name)(x, PARAMS, None)))
        grad = jax.grad(lambda x: switched(x, params, None).sum())(x)
        alone = jax.grad(lambda x: get_activation(name)(x, PARAMS, None).sum())(x)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(alone), rtol=1e-5, atol=1e-7)


def test_one_name_is_its_function_unswitched_and_only_noisy_relu_draws_noise():
    assert switched_activation(("elu",)) is get_activation("elu")
    assert [name for name in ACTIVATIONS if is_noisy(name)] == ["noisy_relu"]
    with pytest.raises(ValueError, match="'relux'.*allowed: sigmoid"):
        switched_activation(("relu", "relux"))


def test_gelu_is_close_to_the_exact_gelu():
    from scipy.special import erf

    exact = 0.5 * X * (1.0 + erf(X / math.sqrt(2.0)))
    out = get_activation("gelu")(jnp.asarray(X), PARAMS, None)
    np.testing.assert_allclose(np.asarray(out), exact, atol=1e-3)
    # tightly: its distance from the exact gelu is the tanh approximation's own, to float32 rounding
    x = X.astype(np.float64)
    exact = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    approximation_error = FORMULAS["gelu"](x) - exact
    np.testing.assert_allclose(np.asarray(out, np.float64) - exact, approximation_error, rtol=0, atol=2e-6)
    assert np.abs(approximation_error).max() > 1e-4  # so the check tells the two forms apart


def test_activation_parameters_may_be_traced_per_variant():
    slopes = jnp.array([0.0, 0.1, 0.5])
    x = jnp.array([-2.0, -0.5, 1.5])
    out = jax.vmap(lambda s: get_activation("leaky_relu")(x, ActivationParams(leaky_slope=s), None))(slopes)
    np.testing.assert_allclose(np.asarray(out), np.where(x >= 0, x, slopes[:, None] * x), rtol=1e-6)
    alphas = jnp.array([0.5, 2.0])
    out = jax.vmap(lambda a: get_activation("elu")(x, ActivationParams(elu_alpha=a), None))(alphas)
    np.testing.assert_allclose(np.asarray(out), np.where(x > 0, x, alphas[:, None] * np.expm1(x)), rtol=1e-6)


def test_elu_gradient_is_finite_for_large_inputs():
    grad = jax.grad(lambda x: get_activation("elu")(x, PARAMS, None))(jnp.float32(100.0))
    assert grad == 1.0


NOISY = get_activation("noisy_relu")
Z = jnp.linspace(-3.0, 3.0, 4096)


def normal(seed: int, shape=Z.shape):
    return jax.random.normal(jax.random.key(seed), shape, Z.dtype)


def test_noisy_relu_is_random_in_training():
    a = NOISY(Z, PARAMS, normal(0))
    b = NOISY(Z, PARAMS, normal(1))
    assert np.mean(np.asarray(a) != np.asarray(b)) > 0.5
    assert not np.array_equal(np.asarray(a), np.maximum(np.asarray(Z), 0))
    assert np.all(np.asarray(a) >= 0)


def test_noisy_relu_in_training_adds_scaled_gaussian_noise_before_the_rectifier():
    noise = normal(3)
    out = NOISY(Z, PARAMS, noise)
    np.testing.assert_allclose(np.asarray(out), np.maximum(np.asarray(Z) + PARAMS.noise_std * np.asarray(noise), 0),
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(NOISY(Z, PARAMS, noise)), np.asarray(out))


def test_noisy_relu_noise_has_the_configured_scale():
    # E[max(0, s*N(0,1))] = s / sqrt(2 pi)
    zeros = jnp.zeros(200_000)
    for std in (0.5, 2.0):
        out = NOISY(zeros, ActivationParams(noise_std=std), normal(7, zeros.shape))
        assert float(out.mean()) == pytest.approx(std / math.sqrt(2 * math.pi), rel=0.02)


def test_noisy_relu_with_zero_noise_is_relu():
    out = NOISY(Z, ActivationParams(noise_std=0.0), normal(0))
    np.testing.assert_array_equal(np.asarray(out), np.maximum(np.asarray(Z), 0))


def test_noisy_relu_is_deterministic_relu_at_evaluation():
    np.testing.assert_array_equal(np.asarray(NOISY(Z, PARAMS, None)), np.maximum(np.asarray(Z), 0))
    np.testing.assert_array_equal(np.asarray(NOISY(Z, PARAMS)), np.maximum(np.asarray(Z), 0))


def test_unknown_activation_lists_allowed_names():
    with pytest.raises(ValueError, match=r"unknown activation 'relux'; allowed: sigmoid, tanh, relu"):
        get_activation("relux")
