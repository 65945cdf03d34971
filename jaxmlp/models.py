"""The Flax MLP: a pure definition applied with `model.apply(params, x, ...)`.

Structure (widths, activation, initialiser, output size) lives in module attributes and
is static; dropout rates and activation parameters are call arguments, so they can be
traced values that differ across vmapped variants.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmlp.activations import ActivationParams, get_activation

_INITIALIZERS = {
    "he_normal": nn.initializers.he_normal,
    "he_uniform": nn.initializers.he_uniform,
    "glorot_normal": nn.initializers.glorot_normal,
    "glorot_uniform": nn.initializers.glorot_uniform,
    "lecun_normal": nn.initializers.lecun_normal,
    "lecun_uniform": nn.initializers.lecun_uniform,
}
_AUTO_INIT = {"sigmoid": "glorot_uniform", "tanh": "glorot_uniform", "softplus": "glorot_uniform",
              "identity": "glorot_uniform", "selu": "lecun_normal"}


def resolve_init(init: str, activation: str) -> str:
    """'auto' picks He for rectifier-like units, Glorot for saturating ones, LeCun for SELU."""
    return _AUTO_INIT.get(activation, "he_normal") if init == "auto" else init


def dropout(x: jax.Array, rate: jax.Array | float | None, key: jax.Array | None) -> jax.Array:
    """Inverted dropout with a rate that may be a traced value; None or no key means off."""
    if rate is None or key is None:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class MLP(nn.Module):
    """Fully connected layers with a named activation and a linear output layer.

    Classification heads return logits (softmax gives probabilities); regression heads
    return one linear output per example.
    """

    hidden: Sequence[int]
    n_outputs: int
    activation: str = "relu"
    initializer: str = "auto"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool = False,
        dropout_rate: jax.Array | float | None = None,
        input_dropout_rate: jax.Array | float | None = None,
        act_params: ActivationParams = ActivationParams(),
        return_hidden: bool = False,
    ):
        act = get_activation(self.activation)
        kernel_init = _INITIALIZERS[resolve_init(self.initializer, self.activation)]()
        x = x.reshape(x.shape[0], -1)
        x = dropout(x, input_dropout_rate, self.make_rng("dropout") if train and input_dropout_rate is not None else None)
        hidden = []
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, kernel_init=kernel_init, name=f"hidden_{i}")(x)
            noise_key = self.make_rng("noise") if train and self.activation == "noisy_relu" else None
            x = act(x, act_params, noise_key, train)
            hidden.append(x)
            x = dropout(x, dropout_rate, self.make_rng("dropout") if train and dropout_rate is not None else None)
        out = nn.Dense(self.n_outputs, kernel_init=nn.initializers.glorot_uniform(), name="output")(x)
        return (out, hidden) if return_hidden else out


def count_params(params) -> int:
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
