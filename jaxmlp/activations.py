"""Named activation functions as pure functions of (x, params, noise).

Every activation takes the same arguments so the model can call any of them by name:
`params` holds the numeric knobs (leaky slope, ELU alpha, noise std) as values that may
differ across vmapped variants; `noise` (standard normal draws shaped like x in training,
None at evaluation) matters only to noisy ReLU.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp


class ActivationParams(NamedTuple):
    """Numeric activation hyperparameters (scalars or traced values)."""

    leaky_slope: float | jax.Array = 0.01
    elu_alpha: float | jax.Array = 1.0
    noise_std: float | jax.Array = 1.0
    choice: int | jax.Array = 0  # which of a switched activation's functions (see `switched_activation`)


Activation = Callable[[jax.Array, ActivationParams, jax.Array | None], jax.Array]


def _elementwise(fn: Callable[[jax.Array], jax.Array]) -> Activation:
    return lambda x, params, noise=None: fn(x)


def leaky_relu(x, params, noise=None):
    return jnp.where(x >= 0, x, params.leaky_slope * x)


def elu(x, params, noise=None):
    return jnp.where(x > 0, x, params.elu_alpha * jnp.expm1(jnp.minimum(x, 0.0)))


def noisy_relu(x, params, noise=None):
    """max(0, x + std * noise) in training (Nair & Hinton 2010); plain ReLU at evaluation (noise None)."""
    if noise is None:
        return jax.nn.relu(x)
    return jax.nn.relu(x + params.noise_std * noise)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": _elementwise(jax.nn.sigmoid),
    "tanh": _elementwise(jnp.tanh),
    "relu": _elementwise(jax.nn.relu),
    "leaky_relu": leaky_relu,
    "noisy_relu": noisy_relu,
    "elu": elu,
    "selu": _elementwise(jax.nn.selu),
    "gelu": _elementwise(jax.nn.gelu),
    "softplus": _elementwise(jax.nn.softplus),
    "swish": _elementwise(jax.nn.silu),
    "silu": _elementwise(jax.nn.silu),
    "identity": _elementwise(lambda x: x),
}


def get_activation(name: str) -> Activation:
    """The named activation."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}") from None


def switched_activation(names: Sequence[str]) -> Activation:
    """The activation that applies the function of `names` which `params.choice` selects
    (`lax.switch`: one compiled copy of the surrounding code serves them all); one name is
    its function itself, with no switch."""
    if len(names) == 1:
        return get_activation(names[0])
    branches = [get_activation(n) for n in names]
    return lambda x, params, noise=None: jax.lax.switch(params.choice, branches, x, params, noise)


def is_noisy(name: str) -> bool:
    """Whether the named activation draws noise in training."""
    return name == "noisy_relu"
