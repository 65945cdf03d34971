"""Optax optimizers whose numeric hyperparameters are values, not compiled constants.

`make_optimizer` builds one GradientTransformation per optimizer family with
`optax.inject_hyperparams`, so learning rate, momentum, weight decay and clipping
threshold live in the optimizer state and may differ across vmapped variants. The
schedule multiplies the base learning rate as a pure function of the step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


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


def make_optimizer(name: str, *, nesterov: bool = False, use_weight_decay: bool = False,
                   use_clip: bool = False) -> callable:
    """A factory `(learning_rate, momentum, weight_decay, clip_norm) -> GradientTransformation`.

    Call it with per-variant values (possibly traced) to get a transformation whose state
    carries them in `state.hyperparams`.
    """
    return optax.inject_hyperparams(_transform(name, nesterov, use_weight_decay, use_clip))


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


def set_hyperparams(opt_state, **values: jax.Array):
    """The same optimizer state with the named hyperparameters replaced (inject_hyperparams state)."""
    hyperparams = dict(opt_state.hyperparams, **{k: jnp.asarray(v, jnp.float32) for k, v in values.items()})
    return opt_state._replace(hyperparams=hyperparams)


def clip_max_norm(params, max_norm: jax.Array):
    """Rescale each unit's incoming weights (kernel columns) to norm <= max_norm."""
    def clip(path, leaf):
        if getattr(path[-1], "key", None) != "kernel":
            return leaf
        norms = jnp.sqrt(jnp.sum(leaf**2, axis=0, keepdims=True))
        return leaf * jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-12))

    return jax.tree_util.tree_map_with_path(clip, params)
