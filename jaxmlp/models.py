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

from jaxmlp.activations import ActivationParams, is_noisy, switched_activation
from jaxmlp.config import ModelConfig

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


def dropout(x: jax.Array, rate: jax.Array | float, u: jax.Array) -> jax.Array:
    """Inverted dropout given uniform draws `u` shaped like x; `rate` may be a traced value."""
    keep = 1.0 - rate
    return jnp.where(u < keep, x / keep, 0.0).astype(x.dtype)


class _Draws:
    """Consecutive column slices of one block of uniform draws."""

    def __init__(self, u: jax.Array):
        self.u, self.offset = u, 0

    def take(self, width: int) -> jax.Array:
        self.offset += width
        return self.u[:, self.offset - width:self.offset]


def random_width(hidden: Sequence[int], n_inputs: int, *, input_dropout: bool, dropout: bool, noisy: bool) -> int:
    """Uniform draws per example of one training forward pass: an input dropout mask, and per
    hidden unit its activation noise and its dropout mask, where these are on."""
    return n_inputs * input_dropout + sum(hidden) * (dropout + noisy)


class MLP(nn.Module):
    """Fully connected layers with a named activation and a linear output layer.

    Classification heads return logits (softmax gives probabilities); regression heads
    return one linear output per example. Training mode (dropout, activation noise) is on
    exactly when `draws` is given: uniform numbers in (0, 1), `random_width(...)` per
    example, that the caller draws in one random call (each call costs XLA compile time).
    """

    hidden: Sequence[int]
    n_outputs: int
    activations: tuple[str, ...] = ("relu",)  # several: switched, `act_params.choice` selects one
    initializers: tuple[str, ...] = ("auto",)  # several: switched, `params_from_uniform`'s choice selects one

    @property
    def noisy(self) -> bool:
        """Whether its activation draws noise in training (a switched one's functions all do, or none)."""
        return all(map(is_noisy, self.activations))

    @property
    def kernel_initializers(self) -> tuple[str, ...]:
        """The hidden kernels' initializer names, 'auto' resolved for the activation (a switched
        net's initializers come resolved)."""
        return tuple(resolve_init(name, self.activations[0]) for name in self.initializers)

    def random_width(self, n_inputs: int, dropout: bool, input_dropout: bool) -> int:
        """How many uniform draws per example one training forward pass needs."""
        return random_width(self.hidden, n_inputs, input_dropout=input_dropout, dropout=dropout,
                            noisy=self.noisy)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        draws: jax.Array | None = None,
        dropout_rate: jax.Array | float | None = None,
        input_dropout_rate: jax.Array | float | None = None,
        act_params: ActivationParams = ActivationParams(),
        return_hidden: bool = False,
    ):
        act = switched_activation(self.activations)
        # A switched initializer's first function: `params_from_uniform` makes the real parameters.
        kernel_init = _INITIALIZERS[self.kernel_initializers[0]]()
        x = x.reshape(x.shape[0], -1)
        train = draws is not None
        if train:
            draws = _Draws(draws)
        if train and input_dropout_rate is not None:
            x = dropout(x, input_dropout_rate, draws.take(x.shape[1]))
        hidden = []
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, kernel_init=kernel_init, name=f"hidden_{i}")(x)
            noisy = train and self.noisy
            x = act(x, act_params, jax.scipy.special.ndtri(draws.take(width)) if noisy else None)
            hidden.append(x)
            if train and dropout_rate is not None:
                x = dropout(x, dropout_rate, draws.take(width))
        out = nn.Dense(self.n_outputs, kernel_init=nn.initializers.glorot_uniform(), name="output")(x)
        return (out, hidden) if return_hidden else out


_VARIANCE_SCALING = {"he": (2.0, "in"), "glorot": (1.0, "avg"), "lecun": (1.0, "in")}


def variance_scaling(u: jax.Array, name: str, fan_in: int, fan_out: int) -> jax.Array:
    """Map uniform draws in (-1, 1) to the named initializer's distribution.

    Uniform variants scale linearly; normal variants become the normal truncated at two
    standard deviations (as `jax.nn.initializers.variance_scaling`) by its inverse CDF.
    """
    family, distribution = name.split("_")
    scale, mode = _VARIANCE_SCALING[family]
    variance = scale / (fan_in if mode == "in" else (fan_in + fan_out) / 2)
    if distribution == "uniform":
        return u * jnp.sqrt(3.0 * variance)
    z = jnp.sqrt(2.0) * jax.scipy.special.erfinv(u * jax.scipy.special.erf(jnp.sqrt(2.0)))
    return z * jnp.sqrt(variance) / 0.87962566103423978  # std of the standard normal truncated to [-2, 2]


def _abstract_params(model: MLP, input_shape: tuple[int, ...]):
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *input_shape), jnp.float32))
    return jax.tree_util.tree_flatten_with_path(abstract)


def n_kernel_weights(model: MLP, input_shape: tuple[int, ...]) -> int:
    leaves, _ = _abstract_params(model, input_shape)
    return sum(leaf.size for path, leaf in leaves if path[-1].key == "kernel")


def params_from_uniform(model: MLP, u: jax.Array, input_shape: tuple[int, ...], init_choice: int | jax.Array = 0):
    """Parameters from `n_kernel_weights` uniform draws in (-1, 1), with the initializers'
    distributions: kernels by the named initializer (the output layer Glorot-uniform),
    biases zero. Equivalent in distribution to `model.init`, but the caller draws all of
    them in one random call, which compiles several times faster than one per layer.
    A switched initializer (several `model.initializers`) applies the one `init_choice` selects."""
    leaves, treedef = _abstract_params(model, input_shape)
    names = model.kernel_initializers
    out, offset = [], 0
    for path, leaf in leaves:
        if path[-1].key != "kernel":
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
            continue
        draws = u[offset:offset + leaf.size].reshape(leaf.shape)
        if path[-2].key == "output" or len(names) == 1:
            out.append(variance_scaling(draws, "glorot_uniform" if path[-2].key == "output" else names[0], *leaf.shape))
        else:
            branches = [lambda d, name=name: variance_scaling(d, name, *leaf.shape) for name in names]
            out.append(jax.lax.switch(init_choice, branches, draws))
        offset += leaf.size
    return jax.tree_util.tree_unflatten(treedef, out)


def count_params(params) -> int:
    """Parameters of a parameter tree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


def n_parameters(widths: Sequence[int], biases: bool = True) -> int:
    """Parameters of the fully connected layers between `widths` (inputs, hidden..., outputs),
    known without building the model; without biases: the weights a step multiplies by."""
    return sum(a * b + b * biases for a, b in zip(widths, widths[1:]))


def build_mlp(model: ModelConfig, n_outputs: int) -> MLP:
    """The MLP a model configuration describes."""
    return MLP(tuple(model.hidden), n_outputs, (model.activation,), (model.init,))


def activation_params(model: ModelConfig) -> ActivationParams:
    """A model configuration's activation numbers, as the MLP takes them at evaluation."""
    return ActivationParams(model.leaky_slope, model.elu_alpha, model.noise_std)
