"""Optax optimizers whose numeric hyperparameters are values, not compiled constants.

`make_optimizer` builds one GradientTransformation per optimizer family, once: its numbers
(`OPTIMIZER_NUMBERS`: learning rate, momentum, weight decay, clipping threshold) are given
to every update as keyword arguments (`optax.inject_hyperparams` fed by `Given`), so they
may differ across vmapped variants and change between steps (schedules, PBT), and the state
keeps the last ones used (`state.hyperparams`). The schedule multiplies the base learning
rate as a pure function of the step.
"""
from __future__ import annotations

import dataclasses
from functools import cache

import jax
import jax.numpy as jnp
import optax

#: The numbers an optimizer's update takes as keyword arguments.
OPTIMIZER_NUMBERS = ("learning_rate", "momentum", "weight_decay", "clip_norm")


def _transform(name: str, nesterov: bool, use_weight_decay: bool, use_clip: bool):
    def build(learning_rate, momentum, weight_decay, clip_norm):
        parts = [optax.clip_by_global_norm(clip_norm)] if use_clip else []
        if use_weight_decay and name != "adamw":
            parts.append(optax.add_decayed_weights(weight_decay))
        if name == "sgd":
            parts.append(optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))
        elif name == "adam":
            parts.append(optax.adam(learning_rate))
        elif name == "adamw":
            parts.append(optax.adamw(learning_rate, weight_decay=weight_decay))
        elif name == "rmsprop":
            parts.append(optax.rmsprop(learning_rate, momentum=momentum, nesterov=nesterov))
        else:
            raise ValueError(f"unknown optimizer {name!r}; allowed: sgd, adam, adamw, rmsprop")
        return optax.chain(*parts)

    return build


@dataclasses.dataclass(frozen=True)
class Given:
    """An optimizer number given to each update as the keyword argument `name` (an Optax
    stateful schedule without state): NaN in a fresh state, before any update was given one."""

    name: str

    def init(self) -> tuple:
        return ()

    def update(self, state: tuple, **numbers: jax.Array) -> tuple:
        return state

    def __call__(self, state: tuple, **numbers: jax.Array) -> jax.Array:
        return numbers.get(self.name, jnp.float32(jnp.nan))


@cache
def make_optimizer(name: str, *, nesterov: bool = False, use_weight_decay: bool = False,
                   use_clip: bool = False) -> optax.GradientTransformationExtraArgs:
    """The optimizer family's transformation, built once; each `update(grads, state, params,
    **numbers)` takes the `OPTIMIZER_NUMBERS` as keyword arguments (possibly traced, per
    variant) and leaves them in `state.hyperparams`."""
    build = _transform(name, nesterov, use_weight_decay, use_clip)
    return optax.inject_hyperparams(build)(**{number: Given(number) for number in OPTIMIZER_NUMBERS})


def schedule_factor(schedule: str, step: jax.Array, steps_per_epoch: int, total_steps: int,
                    decay_rate: jax.Array, warmup_epochs: jax.Array) -> jax.Array:
    """Multiplier of the base learning rate at `step` (0-based): linear warm-up times decay."""
    step = jnp.asarray(step, jnp.float32)
    warmup_steps = warmup_epochs * steps_per_epoch
    warmup = jnp.where(warmup_steps > 0, jnp.minimum(1.0, (step + 1) / jnp.maximum(warmup_steps, 1)), 1.0)
    if schedule == "constant":
        decay = 1.0
    elif schedule == "exponential":
        decay = decay_rate ** (step / steps_per_epoch)
    elif schedule == "cosine":
        decay = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(step / total_steps, 1.0)))
    else:
        raise ValueError(f"unknown schedule {schedule!r}; allowed: constant, cosine, exponential")
    return warmup * decay


def momentum_at(step: jax.Array, steps_per_epoch: int, momentum: jax.Array, start: jax.Array,
                ramp_epochs: jax.Array) -> jax.Array:
    """Momentum at `step` (0-based): a linear ramp from `start` to `momentum` over `ramp_epochs`
    epochs, then constant (Hinton et al. 2012; Srivastava et al. 2014). A negative `start`
    (no ramp configured) or no ramp epochs give `momentum` throughout."""
    ramp_steps = ramp_epochs * steps_per_epoch
    progress = jnp.where(ramp_steps > 0, jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / jnp.maximum(ramp_steps, 1)),
                         1.0)
    return jnp.where(start < 0, momentum, start + (momentum - start) * progress)


def clip_max_norm(params, max_norm: jax.Array):
    """Rescale each unit's incoming weights (kernel columns) to norm <= max_norm."""
    def clip(path, leaf):
        if getattr(path[-1], "key", None) != "kernel":
            return leaf
        norms = jnp.sqrt(jnp.sum(leaf**2, axis=0, keepdims=True))
        return leaf * jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))

    return jax.tree_util.tree_map_with_path(clip, params)
