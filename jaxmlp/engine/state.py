"""A variant's training state and its initialisation from the seed alone."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.engine.step import optimizer_of
from jaxmlp.engine.structure import Structure
from jaxmlp.models import n_kernel_weights, params_from_uniform


class EarlyStopping(NamedTuple):
    """The best (lowest) monitored validation metric so far, its epoch, and epochs without improvement."""

    best_metric: jax.Array
    best_epoch: jax.Array
    bad_epochs: jax.Array


class TrainState(NamedTuple):
    """One variant's whole training state; `active` is False once it stopped or diverged. Its
    time is its own: `step` and `epoch` count its updates and epochs since it entered a slot,
    so its schedules, shuffles and history do not depend on when or where it trained."""

    params: Any
    opt_state: Any
    key: jax.Array  # the variant's random key: drawn from its seed, advanced every epoch
    step: jax.Array
    epoch: jax.Array  # epochs the variant trained
    best_params: Any
    es: EarlyStopping
    active: jax.Array
    diverged: jax.Array
    stopped_epoch: jax.Array
    initial_loss: jax.Array  # the first minibatch's loss before any update (NaN until then)


def uniform_from_bits(bits: jax.Array) -> jax.Array:
    """Uniform floats in [0, 1) from random uint32 bits (the mantissa trick `jax.random` uses)."""
    return jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32) - 1.0


def init_bits(s: Structure, seed: jax.Array) -> jax.Array:
    """All the random bits a variant's initial state needs, from its seed, in one call."""
    return jax.random.bits(jax.random.key(seed), (2 + n_kernel_weights(s.model, (s.n_inputs,)),), jnp.uint32)


def state_from_bits(s: Structure, bits: jax.Array, init_choice: int | jax.Array = 0) -> TrainState:
    """A fresh state: the training key and the parameters, both from `init_bits` (`init_choice`:
    which function of a switched initializer, see `models.params_from_uniform`)."""
    params = params_from_uniform(s.model, 2.0 * uniform_from_bits(bits[2:]) - 1.0, (s.n_inputs,), init_choice)
    return TrainState(
        params=params, opt_state=optimizer_of(s).init(params), key=jax.random.wrap_key_data(bits[:2]),
        step=jnp.int32(0), epoch=jnp.int32(0), best_params=params,
        es=EarlyStopping(jnp.float32(jnp.inf), jnp.int32(0), jnp.int32(0)),
        active=jnp.bool_(True), diverged=jnp.bool_(False), stopped_epoch=jnp.int32(0),
        initial_loss=jnp.float32(jnp.nan),
    )


def init_state(s: Structure, seed: jax.Array) -> TrainState:
    """A fresh state for one variant, fully determined by its seed (its numbers are given to
    each step, not kept in the state)."""
    return state_from_bits(s, init_bits(s, seed))
