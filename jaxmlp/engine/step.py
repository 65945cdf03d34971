"""One variant's minibatch step: the forward pass, the loss's gradient, the Optax update.

Written for one variant and vmapped by `jaxmlp.engine.trainer` over a leading variant axis;
an epoch is a `lax.scan` of `train_step` over the minibatches of a per-variant shuffle
(`epoch_randomness`), each step's dropout and noise drawn in one call (`step_draws`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxmlp.activations import ActivationParams
from jaxmlp.data import Split
from jaxmlp.engine.structure import HParams, Structure
from jaxmlp.losses import accuracy, get_loss
from jaxmlp.optim import clip_max_norm, make_optimizer, momentum_at, schedule_factor


def optimizer_of(s: Structure) -> optax.GradientTransformationExtraArgs:
    """The structure's Optax transformation, built once; `train_step` gives it the variant's
    numbers at every update, so numbers changed during training (schedules, PBT) take effect."""
    return make_optimizer(s.optimizer, nesterov=s.nesterov, use_weight_decay=s.use_weight_decay, use_clip=s.use_clip)


def apply_model(s: Structure, params, x: jax.Array, hp: HParams, *, draws: jax.Array | None = None,
                return_hidden: bool = False, choice: int | jax.Array = 0):
    """Forward pass; training mode (dropout, activation noise) exactly when `draws` is given.
    `choice` selects the function of a switched activation (a tuple of names, see `engine.families.Family`)."""
    return s.model.apply(
        params, x, draws=draws,
        dropout_rate=hp.dropout if s.use_dropout else None,
        input_dropout_rate=hp.input_dropout if s.use_input_dropout else None,
        act_params=ActivationParams(hp.leaky_slope, hp.elu_alpha, hp.noise_std, choice),
        return_hidden=return_hidden,
    )


def train_step(s: Structure, hp: HParams, train: Split, carry, batch: tuple[jax.Array, jax.Array],
               choice: int | jax.Array = 0):
    """One minibatch of gradient descent; carry is (params, opt_state, step), batch is
    (example indices, uniform draws [batch, s.random_width] for dropout and noise)."""
    params, opt_state, step = carry
    batch_index, draws = batch
    x, y = train.x[batch_index], train.y[batch_index]
    loss_fn = get_loss(s.loss, s.task)

    def objective(p):
        out = apply_model(s, p, x, hp, draws=draws, choice=choice)
        return loss_fn(out, y), out

    (loss, out), grads = jax.value_and_grad(objective, has_aux=True)(params)
    total_steps = s.steps_per_epoch * s.epochs
    lr = hp.learning_rate * schedule_factor(s.schedule, step, s.steps_per_epoch, total_steps,
                                            hp.decay_rate, hp.warmup_epochs)
    momentum = momentum_at(step, s.steps_per_epoch, hp.momentum, hp.momentum_start, hp.momentum_ramp_epochs)
    grads = jax.tree.map(lambda g: g * (1 - hp.momentum_dampening * momentum), grads)
    updates, opt_state = optimizer_of(s).update(grads, opt_state, params, learning_rate=lr, momentum=momentum,
                                                weight_decay=hp.weight_decay, clip_norm=hp.clip_norm)
    params = optax.apply_updates(params, updates)
    if s.use_max_norm:
        params = clip_max_norm(params, hp.max_norm)
    acc = accuracy(out, y) if s.task == "classification" else jnp.float32(jnp.nan)
    return (params, opt_state, step + 1), (loss, acc, lr)


def step_draws(s: Structure, key: jax.Array) -> jax.Array:
    """One variant's uniform draws for one step, [batch_size, random_width], in one random call
    (none when the structure has no dropout or noise): `train_step`'s dropout masks and noise.
    Dropout alone needs only a comparison with the keep probability, so its draws are 16-bit
    (`uniform16`, a third of the cost of float32 draws on a CPU); activation noise goes
    through the normal's inverse CDF and keeps float32 draws."""
    if not s.random_width:
        return jnp.zeros((s.batch_size, 0), jnp.float32)
    if s.model.noisy:
        return jax.random.uniform(key, (s.batch_size, s.random_width), minval=1e-7)
    return uniform16(key, (s.batch_size, s.random_width))


def uniform16(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Uniform draws on the 2**16 midpoints (b + 1/2) / 2**16 of (0, 1), two per 32-bit word:
    the first ceil(n/2) columns from each word's low half, the rest from its high half. As
    dropout draws, a keep probability acts rounded to a multiple of 2**-16 (off by at most
    2**-17)."""
    rows, n = shape
    words = jax.random.bits(key, (rows, (n + 1) // 2), jnp.uint32)
    halves = jnp.concatenate([words & 0xFFFF, words >> 16], axis=1)[:, :n]
    return (halves.astype(jnp.float32) + 0.5) * (1.0 / 65536)


def epoch_randomness(key: jax.Array, n: int, steps: int, batch_size: int):
    """One random call per variant and epoch: the next epoch's key, this epoch's shuffled
    minibatches [steps, batch_size] (sorted random bits; the remainder is dropped) and
    one key per step (for that step's dropout and noise draws)."""
    bits = jax.random.bits(key, (n + 2 * (steps + 1),), jnp.uint32)
    keys = jax.random.wrap_key_data(bits[n:].reshape(steps + 1, 2))
    batches = jnp.argsort(bits[:n])[: steps * batch_size].reshape(steps, batch_size)
    return keys[0], batches, keys[1:]


