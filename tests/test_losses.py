"""Losses and metrics against their formulas; loss gradients against finite differences."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp.losses import (accuracy, cross_entropy, get_loss, mse, mse_one_hot,
                           resolve_loss)

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(8, 5)).astype(np.float32) * 3
LABELS = RNG.integers(5, size=8).astype(np.int32)


def np_log_softmax(z):
    z = z.astype(np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_cross_entropy_is_mean_negative_log_likelihood():
    expected = -np_log_softmax(LOGITS)[np.arange(8), LABELS].mean()
    assert float(cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS))) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [0.0, 2000.0, 0.0]])
    loss = float(cross_entropy(logits, jnp.array([1, 1])))
    assert np.isfinite(loss) and loss == pytest.approx(1000.0 / 2, rel=1e-6)


def test_mse_one_hot_sums_squared_probability_errors_over_classes():
    probs = np.exp(np_log_softmax(LOGITS))
    expected = ((probs - np.eye(5)[LABELS]) ** 2).sum(axis=-1).mean()
    assert float(mse_one_hot(jnp.asarray(LOGITS), jnp.asarray(LABELS))) == pytest.approx(expected, rel=1e-5)


def test_mse_accepts_column_or_flat_outputs():
    targets = RNG.normal(size=6).astype(np.float32)
    outputs = RNG.normal(size=(6, 1)).astype(np.float32)
    expected = np.mean((outputs[:, 0] - targets) ** 2)
    assert float(mse(jnp.asarray(outputs), jnp.asarray(targets))) == pytest.approx(expected, rel=1e-6)
    assert float(mse(jnp.asarray(outputs[:, 0]), jnp.asarray(targets))) == pytest.approx(expected, rel=1e-6)


def test_accuracy_is_fraction_of_argmax_hits():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.1, 0.2]])
    assert float(accuracy(logits, jnp.array([0, 1, 1, 0]))) == pytest.approx(0.5)
    assert float(accuracy(jnp.asarray(LOGITS), jnp.asarray(LABELS))) == pytest.approx(np.mean(LOGITS.argmax(-1) == LABELS))


def test_auto_loss_depends_on_the_task():
    assert resolve_loss("auto", "classification") == "cross_entropy"
    assert resolve_loss("auto", "regression") == "mse"
    assert resolve_loss("mse", "classification") == "mse"
    assert get_loss("auto", "classification") is cross_entropy
    assert get_loss("mse", "classification") is mse_one_hot
    assert get_loss("auto", "regression") is mse


def test_cross_entropy_on_regression_names_the_key_and_the_fix():
    with pytest.raises(ValueError, match=r"training.loss: 'cross_entropy' needs class labels; .* allows only 'mse'"):
        resolve_loss("cross_entropy", "regression")


@pytest.mark.parametrize("loss, targets", [
    (cross_entropy, LABELS), (mse_one_hot, LABELS), (mse, RNG.normal(size=(8, 5)).astype(np.float32)),
], ids=["cross_entropy", "mse_one_hot", "mse"])
def test_loss_gradient_wrt_outputs_matches_finite_differences(loss, targets):
    with jax.enable_x64(True):
        z = jnp.asarray(LOGITS, jnp.float64)
        t = jnp.asarray(targets)
        h = 1e-6
        steps = h * jnp.eye(z.size, dtype=z.dtype).reshape(z.size, *z.shape)
        fd = jax.jit(jax.vmap(lambda d: (loss(z + d, t) - loss(z - d, t)) / (2 * h)))(steps).reshape(z.shape)
        grad = jax.jit(jax.grad(loss))(z, t)
        assert grad.dtype == jnp.float64 and float(jnp.abs(grad).max()) > 1e-3
        np.testing.assert_allclose(np.asarray(grad), np.asarray(fd), rtol=1e-6, atol=1e-9)
