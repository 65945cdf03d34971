"""Losses and metrics on a batch of model outputs."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Loss = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def mse_one_hot_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    probs = jax.nn.softmax(logits)
    return jnp.sum((probs - jax.nn.one_hot(labels, logits.shape[-1])) ** 2, axis=-1)


def mse_per_example(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    return (outputs.reshape(targets.shape) - targets) ** 2


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy against integer labels."""
    return cross_entropy_per_example(logits, labels).mean()


def mse_one_hot(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Squared error between softmax probabilities and one-hot targets, summed over classes."""
    return mse_one_hot_per_example(logits, labels).mean()


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error of a regression head (outputs [N, 1] or [N])."""
    return mse_per_example(outputs, targets).mean()


def resolve_loss(loss: str, task: str) -> str:
    """'auto' is cross-entropy for classification and MSE for regression."""
    if loss == "auto":
        return "cross_entropy" if task == "classification" else "mse"
    if task == "regression" and loss != "mse":
        raise ValueError(f"training.loss: {loss!r} needs class labels; a regression dataset allows only 'mse'")
    return loss


def get_loss(loss: str, task: str) -> Loss:
    name = resolve_loss(loss, task)
    if task == "regression":
        return mse
    return cross_entropy if name == "cross_entropy" else mse_one_hot


def get_example_loss(loss: str, task: str) -> Loss:
    """The per-example version of `get_loss` (for sums over chunks of a split)."""
    if task == "regression":
        return mse_per_example
    return cross_entropy_per_example if resolve_loss(loss, task) == "cross_entropy" else mse_one_hot_per_example


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
