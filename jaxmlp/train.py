"""One variant's training, written for many: structure, state, a step, an epoch's end, evaluation.

A variant's structure (widths, activation, optimizer family, batch size, loss) is static and
shared by its group; its numbers (seed, learning rate, dropout rate, patience, ...) are
values that `jaxmlp.trainer` carries on a leading variant axis and vmaps these functions
over. One epoch is a `lax.scan` of `train_step` over minibatches of a per-variant shuffle,
then `end_of_epoch`: validation, early stopping and freezing of stopped or diverged variants.
Nothing here touches files, MLflow or the terminal. `python -m jaxmlp.train` trains one
configuration (see `jaxmlp.cli`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmlp.activations import ActivationParams
from jaxmlp.config import RunConfig
from jaxmlp.data import Dataset, Split
from jaxmlp.losses import accuracy, get_example_loss, get_loss, resolve_loss
from jaxmlp.models import MLP, n_kernel_weights, params_from_uniform
from jaxmlp.optim import clip_max_norm, make_optimizer, schedule_factor, set_learning_rate

#: Configuration keys whose values may differ inside one compiled group.
NUMERIC_KEYS = (
    "training.seed", "optimizer.learning_rate", "optimizer.momentum", "optimizer.weight_decay",
    "optimizer.decay_rate", "optimizer.warmup_epochs", "optimizer.max_norm", "optimizer.clip_norm",
    "model.dropout", "model.input_dropout", "model.leaky_slope", "model.elu_alpha", "model.noise_std",
    "training.early_stopping.patience", "training.early_stopping.min_delta",
)
NO_PATIENCE = np.iinfo(np.int32).max


def structure_key(cfg: RunConfig) -> tuple:
    """Everything that must be equal for two variants to share a compiled program."""
    return tuple(sorted((k, str(v)) for k, v in cfg.flat().items() if k not in NUMERIC_KEYS))


@dataclasses.dataclass(frozen=True)
class Structure:
    """The static part of a group: one compiled program per Structure."""

    hidden: tuple[int, ...]
    activation: str
    initializer: str
    n_outputs: int
    task: str
    loss: str
    optimizer: str
    nesterov: bool
    schedule: str
    batch_size: int
    epochs: int
    monitor: str
    restore_best: bool
    n_train: int
    n_inputs: int
    use_dropout: bool
    use_input_dropout: bool
    use_weight_decay: bool
    use_max_norm: bool
    use_clip: bool

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n_train // self.batch_size)

    @property
    def model(self) -> MLP:
        return MLP(self.hidden, self.n_outputs, self.activation, self.initializer)

    @property
    def random_width(self) -> int:
        """Uniform draws per example and training step (dropout masks, activation noise)."""
        return self.model.random_width(self.n_inputs, self.use_dropout, self.use_input_dropout)


def structure_of(configs: Sequence[RunConfig], data: Dataset) -> Structure:
    """The shared structure of `configs`; raises if they differ in anything static."""
    keys = {structure_key(c) for c in configs}
    if len(keys) != 1:
        first, other = (dict(k) for k in list(keys)[:2])
        diff = sorted(k for k in first if first[k] != other.get(k))
        raise ValueError(f"variants of one group must share their structure; they differ in {', '.join(diff)}")
    c = configs[0]
    if c.training.batch_size > len(data.train):
        raise ValueError(f"training.batch_size: {c.training.batch_size} exceeds the {len(data.train)} "
                         f"training samples of {data.name}; use at most {len(data.train)}")
    if c.training.early_stopping.monitor == "val_accuracy" and data.task != "classification":
        raise ValueError(f"training.early_stopping.monitor: 'val_accuracy' needs class labels; "
                         f"{data.name} is a regression dataset, use 'val_loss'")
    return Structure(
        hidden=tuple(c.model.hidden), activation=c.model.activation, initializer=c.model.init,
        n_outputs=data.n_outputs, task=data.task, loss=resolve_loss(c.training.loss, data.task),
        optimizer=c.optimizer.name, nesterov=c.optimizer.nesterov, schedule=c.optimizer.schedule,
        batch_size=c.training.batch_size, epochs=c.training.epochs,
        monitor=c.training.early_stopping.monitor, restore_best=c.training.early_stopping.restore_best,
        n_train=len(data.train), n_inputs=int(np.prod(data.input_shape)),
        use_dropout=any(v.model.dropout > 0 for v in configs),
        use_input_dropout=any(v.model.input_dropout > 0 for v in configs),
        use_weight_decay=any(v.optimizer.weight_decay > 0 for v in configs),
        use_max_norm=any(v.optimizer.max_norm is not None for v in configs),
        use_clip=any(v.optimizer.clip_norm is not None for v in configs),
    )


class HParams(NamedTuple):
    """Per-variant numbers; each field is an array with a leading variant axis."""

    seed: Any
    learning_rate: Any
    momentum: Any
    weight_decay: Any
    decay_rate: Any
    warmup_epochs: Any
    max_norm: Any
    clip_norm: Any
    dropout: Any
    input_dropout: Any
    leaky_slope: Any
    elu_alpha: Any
    noise_std: Any
    patience: Any
    min_delta: Any


def hparams_of(configs: Sequence[RunConfig]) -> HParams:
    """Stack the numeric hyperparameters of `configs` along a leading variant axis."""
    def column(get, dtype=np.float32):
        return np.asarray([get(c) for c in configs], dtype)

    def or_inf(value):
        return np.inf if value is None else value

    return HParams(
        seed=column(lambda c: c.training.seed, np.uint32),
        learning_rate=column(lambda c: c.optimizer.learning_rate),
        momentum=column(lambda c: c.optimizer.momentum),
        weight_decay=column(lambda c: c.optimizer.weight_decay),
        decay_rate=column(lambda c: c.optimizer.decay_rate),
        warmup_epochs=column(lambda c: c.optimizer.warmup_epochs),
        max_norm=column(lambda c: or_inf(c.optimizer.max_norm)),
        clip_norm=column(lambda c: or_inf(c.optimizer.clip_norm)),
        dropout=column(lambda c: c.model.dropout),
        input_dropout=column(lambda c: c.model.input_dropout),
        leaky_slope=column(lambda c: c.model.leaky_slope),
        elu_alpha=column(lambda c: c.model.elu_alpha),
        noise_std=column(lambda c: c.model.noise_std),
        patience=column(lambda c: c.training.early_stopping.patience or NO_PATIENCE, np.int32),
        min_delta=column(lambda c: c.training.early_stopping.min_delta),
    )


class EarlyStopping(NamedTuple):
    best_metric: jax.Array
    best_epoch: jax.Array
    bad_epochs: jax.Array


def early_stopping_update(es: EarlyStopping, metric: jax.Array, epoch: jax.Array,
                          min_delta: jax.Array) -> tuple[EarlyStopping, jax.Array]:
    """Track the best (lowest) monitored metric; returns the new state and whether it improved."""
    improved = metric < es.best_metric - min_delta
    return EarlyStopping(
        best_metric=jnp.where(improved, metric, es.best_metric),
        best_epoch=jnp.where(improved, epoch, es.best_epoch),
        bad_epochs=jnp.where(improved, 0, es.bad_epochs + 1),
    ), improved


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    best_params: Any
    es: EarlyStopping
    active: jax.Array
    diverged: jax.Array
    stopped_epoch: jax.Array


def _optimizer(s: Structure, hp: HParams) -> optax.GradientTransformation:
    factory = make_optimizer(s.optimizer, nesterov=s.nesterov, use_weight_decay=s.use_weight_decay,
                             use_clip=s.use_clip)
    return factory(learning_rate=hp.learning_rate, momentum=hp.momentum,
                   weight_decay=hp.weight_decay, clip_norm=hp.clip_norm)


def apply_model(s: Structure, params, x: jax.Array, hp: HParams, *, draws: jax.Array | None = None,
                return_hidden: bool = False, choice: int | jax.Array = 0):
    """Forward pass; training mode (dropout, activation noise) exactly when `draws` is given.
    `choice` selects the function of a switched activation ('a|b|...', see `trainer._Family`)."""
    return s.model.apply(
        params, x, draws=draws,
        dropout_rate=hp.dropout if s.use_dropout else None,
        input_dropout_rate=hp.input_dropout if s.use_input_dropout else None,
        act_params=ActivationParams(hp.leaky_slope, hp.elu_alpha, hp.noise_std, choice),
        return_hidden=return_hidden,
    )


def uniform_from_bits(bits: jax.Array) -> jax.Array:
    """Uniform floats in [0, 1) from random uint32 bits (the mantissa trick `jax.random` uses)."""
    return jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32) - 1.0


def init_bits(s: Structure, seed: jax.Array) -> jax.Array:
    """All the random bits a variant's initial state needs, from its seed, in one call."""
    return jax.random.bits(jax.random.key(seed), (2 + n_kernel_weights(s.model, (s.n_inputs,)),), jnp.uint32)


def state_from_bits(s: Structure, hp: HParams, bits: jax.Array) -> TrainState:
    """A fresh state: the training key and the parameters, both from `init_bits`."""
    params = params_from_uniform(s.model, 2.0 * uniform_from_bits(bits[2:]) - 1.0, (s.n_inputs,))
    return TrainState(
        params=params, opt_state=_optimizer(s, hp).init(params), key=jax.random.wrap_key_data(bits[:2]),
        step=jnp.int32(0), best_params=params,
        es=EarlyStopping(jnp.float32(jnp.inf), jnp.int32(0), jnp.int32(0)),
        active=jnp.bool_(True), diverged=jnp.bool_(False), stopped_epoch=jnp.int32(0),
    )


def init_state(s: Structure, hp: HParams) -> TrainState:
    """A fresh state for one variant, fully determined by its seed."""
    return state_from_bits(s, hp, init_bits(s, hp.seed))


#: Splits larger than this are evaluated in chunks, bounding activation memory.
EVAL_CHUNK = 4096


def evaluate(s: Structure, params, hp: HParams, split: Split, choice: int | jax.Array = 0) -> dict[str, jax.Array]:
    """Loss, accuracy (classification) and dead-unit fraction per hidden layer on a whole split.

    Large splits are processed in chunks of EVAL_CHUNK examples (the last one padded and
    masked), so memory does not grow with the split.
    """
    n = split.x.shape[0]
    chunk = min(n, EVAL_CHUNK)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    mask = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)
    x = jnp.pad(split.x, [(0, pad)] + [(0, 0)] * (split.x.ndim - 1)).reshape(n_chunks, chunk, *split.x.shape[1:])
    y = jnp.pad(split.y, [(0, pad)] + [(0, 0)] * (split.y.ndim - 1)).reshape(n_chunks, chunk, *split.y.shape[1:])
    example_loss = get_example_loss(s.loss, s.task)

    def chunk_sums(args):
        xc, yc, mc = args
        out, hidden = apply_model(s, params, xc, hp, return_hidden=True, choice=choice)
        sums = {"loss": jnp.sum(jnp.where(mc, example_loss(out, yc), 0.0)),
                "alive": tuple(jnp.any((h != 0) & mc[:, None], axis=0) for h in hidden)}
        if s.task == "classification":
            sums["correct"] = jnp.sum(jnp.where(mc, jnp.argmax(out, -1) == yc, False))
        return sums

    sums = jax.lax.map(chunk_sums, (x, y, mask))
    dead = [jnp.mean(~jnp.any(alive, axis=0)) for alive in sums["alive"]]
    metrics = {"loss": sums["loss"].sum() / n, "dead_fraction": jnp.stack(dead) if dead else jnp.zeros((0,))}
    if s.task == "classification":
        metrics["accuracy"] = sums["correct"].sum() / n
    return metrics


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
    opt_state = set_learning_rate(opt_state, lr)
    updates, opt_state = _optimizer(s, hp).update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if s.use_max_norm:
        params = clip_max_norm(params, hp.max_norm)
    acc = accuracy(out, y) if s.task == "classification" else jnp.float32(jnp.nan)
    return (params, opt_state, step + 1), (loss, acc, lr)


def step_draws(s: Structure, key: jax.Array) -> jax.Array:
    """One variant's uniform draws for one step, [batch_size, random_width], in one random call
    (none when the structure has no dropout or noise): `train_step`'s dropout masks and noise."""
    if not s.random_width:
        return jnp.zeros((s.batch_size, 0), jnp.float32)
    return jax.random.uniform(key, (s.batch_size, s.random_width), minval=1e-7)


def epoch_randomness(key: jax.Array, n: int, steps: int, batch_size: int):
    """One random call per variant and epoch: the next epoch's key, this epoch's shuffled
    minibatches [steps, batch_size] (sorted random bits; the remainder is dropped) and
    one key per step (for that step's dropout and noise draws)."""
    bits = jax.random.bits(key, (n + 2 * (steps + 1),), jnp.uint32)
    keys = jax.random.wrap_key_data(bits[n:].reshape(steps + 1, 2))
    batches = jnp.argsort(bits[:n])[: steps * batch_size].reshape(steps, batch_size)
    return keys[0], batches, keys[1:]


def end_of_epoch(s: Structure, state: TrainState, hp: HParams, carry, metrics, next_key: jax.Array,
                 epoch: jax.Array, val: Split, choice: int | jax.Array = 0) -> tuple[TrainState, dict[str, jax.Array]]:
    """Validate, update early stopping and freeze: one variant, after its minibatch steps.

    A variant that is no longer active keeps its state unchanged; one whose loss turns
    NaN or infinite keeps its last finite state and is marked diverged.
    """
    params, opt_state, step = carry
    losses, accs, lrs = metrics
    val_metrics = evaluate(s, params, hp, val, choice)
    train_loss = losses.mean()
    finite = jnp.isfinite(train_loss) & jnp.isfinite(val_metrics["loss"])
    monitored = val_metrics["loss"] if s.monitor == "val_loss" else -val_metrics["accuracy"]
    es, improved = early_stopping_update(state.es, monitored, epoch, hp.min_delta)
    best_params = jax.tree_util.tree_map(lambda new, old: jnp.where(improved, new, old), params, state.best_params)
    proceed = state.active & finite
    still_active = proceed & (es.bad_epochs < hp.patience)
    candidate = TrainState(params, opt_state, next_key, step, best_params, es, still_active, state.diverged,
                           state.stopped_epoch)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(proceed, new, old), candidate, state)
    new_state = new_state._replace(
        active=still_active,
        diverged=state.diverged | (state.active & ~finite),
        stopped_epoch=jnp.where(state.active & ~still_active, epoch, state.stopped_epoch),
    )
    record = {
        "trained": state.active, "train_loss": train_loss, "train_accuracy": accs.mean(),
        "val_loss": val_metrics["loss"], "val_accuracy": val_metrics.get("accuracy", jnp.float32(jnp.nan)),
        "dead_fraction": val_metrics["dead_fraction"], "learning_rate": lrs[-1],
        "active": new_state.active, "diverged": new_state.diverged, "best_epoch": new_state.es.best_epoch,
    }
    return new_state, record


def final_evaluation(s: Structure, state: TrainState, hp: HParams, train: Split, test: Split,
                     choice: int | jax.Array = 0):
    """Selected parameters (best on validation, or the last ones) with their test metrics and,
    for the generalisation gap, their training-split metrics in evaluation mode."""
    params = state.best_params if s.restore_best else state.params
    return params, evaluate(s, params, hp, test, choice), evaluate(s, params, hp, train, choice)


def merge_key(cfg: RunConfig) -> tuple:
    """Structures equal up to this key can share one compiled program (activation and init differ)."""
    return tuple(kv for kv in structure_key(cfg) if kv[0] not in ("model.activation", "model.init"))


if __name__ == "__main__":
    from jaxmlp.cli import main

    raise SystemExit(main())
