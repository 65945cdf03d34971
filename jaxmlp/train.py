"""The training engine: K variants of one structure trained at once in one compiled program.

A variant's structure (widths, activation, optimizer family, batch size, loss) is static and
shared by its group; its numbers (seed, learning rate, dropout rate, patience, ...) are
values carried on a leading variant axis. One epoch is a `lax.scan` over minibatches of a
per-variant shuffle, followed by validation and an early-stopping update, all inside one
jitted, vmapped function; the host wakes once per epoch to receive a small record.
Nothing here touches files, MLflow or the terminal.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from functools import partial
from typing import Any, Iterator, NamedTuple, Sequence

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
    `choice` selects the function of a switched activation ('a|b|...', see `_Family`)."""
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


@dataclasses.dataclass
class VariantResult:
    """What one variant ended with; `history` has one record per epoch it trained."""

    config: RunConfig
    best_epoch: int
    stopped_epoch: int
    epochs_trained: int
    diverged: bool
    test: dict[str, float]
    history: list[dict[str, float]]
    params: Any
    train_final: dict[str, float] = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0  # from the group's first epoch until this variant stopped

    @property
    def best(self) -> dict[str, float]:
        """The epoch record at the best epoch (empty if no epoch improved)."""
        return next((r for r in self.history if r["epoch"] == self.best_epoch), {})


@dataclasses.dataclass
class GroupResult:
    structures: list[Structure]
    variants: list[VariantResult]
    compile_seconds: float
    train_seconds: float


def merge_key(cfg: RunConfig) -> tuple:
    """Structures equal up to this key can share one compiled program (activation and init differ)."""
    return tuple(kv for kv in structure_key(cfg) if kv[0] not in ("model.activation", "model.init"))


@dataclasses.dataclass(frozen=True)
class _Part:
    """Variants of one structure inside a program; `index` maps rows back to the caller's order."""

    structure: Structure
    index: np.ndarray
    hp: HParams


@dataclasses.dataclass(frozen=True)
class _Family:
    """Parts of a program that differ only in activation and initialiser and have as many
    variants: their code is traced and compiled once, for a structure whose activation is
    switched ('sigmoid|tanh|...'), and a `lax.scan` runs it part after part, the part's index
    choosing its activation (`lax.switch` on a scalar: a real branch, not a select). Their
    states and numbers are stacked: every leaf has leading axes [part, variant]."""

    structure: Structure
    parts: tuple[_Part, ...]

    @property
    def hp(self) -> HParams:
        return jax.tree_util.tree_map(lambda *a: np.stack(a), *(p.hp for p in self.parts))

    @staticmethod
    def of(parts: Sequence[_Part]) -> list["_Family"]:
        """Parts grouped into families, in order of first appearance."""
        by_key: dict[tuple, list[_Part]] = {}
        for p in parts:
            s = p.structure
            key = (dataclasses.replace(s, activation="", initializer=""), s.random_width, len(p.hp.seed))
            by_key.setdefault(key, []).append(p)
        return [_Family(dataclasses.replace(members[0].structure,
                                            activation="|".join(m.structure.activation for m in members)),
                        tuple(members)) for members in by_key.values()]


def _skipped(run, *args):
    """What `run(*args)` returns shaped, for a part whose variants all stopped: the first
    argument (its state) unchanged and zeros for the rest."""
    state, rest = jax.eval_shape(run, *args)
    return args[0], jax.tree_util.tree_map(lambda sd: jnp.zeros(sd.shape, sd.dtype), rest)


def _unless_stopped(several: bool, active, run, *args):
    """`run(*args)`, skipped by `lax.cond` when the part has no active variant (only when
    several parts share the program: a lone part runs until the host stops the loop)."""
    if not several:
        return run(*args)
    return jax.lax.cond(active.any(), run, partial(_skipped, run), *args)


def _over_parts(family: _Family, fn, *stacked):
    """`fn(*part_slices, choice)` for every part of the family, outputs stacked on a leading
    part axis: called directly for a lone part, else as the body of a `lax.scan`."""
    if len(family.parts) == 1:
        out = fn(*jax.tree_util.tree_map(lambda a: a[0], stacked), 0)
        return jax.tree_util.tree_map(lambda a: a[None], out)
    _, out = jax.lax.scan(lambda _, xs: (None, fn(*xs)), None, (*stacked, jnp.arange(len(family.parts))))
    return out


def _part_epoch(s: Structure, state: TrainState, hp: HParams, batches, step_keys, next_key, choice,
                epoch: jax.Array, train: Split, val: Split):
    """One part's epoch (its variants vmapped): a scan over its minibatch steps, then
    validation, early stopping and freezing. Each step draws its dropout and noise
    uniforms in one call (none when the structure needs none)."""
    step = jax.vmap(partial(train_step, s, choice=choice), in_axes=(0, None, 0, 0))

    def body(carry, xs):
        index, keys = xs
        return step(hp, train, carry, (index, jax.vmap(partial(step_draws, s))(keys)))

    carry = (state.params, state.opt_state, state.step)
    carry, metrics = jax.lax.scan(body, carry, (jnp.swapaxes(batches, 0, 1), jnp.swapaxes(step_keys, 0, 1)))
    metrics = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), metrics)  # [variant, step]
    finish = jax.vmap(partial(end_of_epoch, s, choice=choice), in_axes=(0, 0, 0, 0, 0, None, None))
    return finish(state, hp, carry, metrics, next_key, epoch, val)


def _n_parts(families: Sequence[_Family]) -> int:
    return sum(len(f.parts) for f in families)


def _program_epoch(families: Sequence[_Family], states, hps, epoch, train: Split, val: Split):
    """One epoch of every part, each skipped (`lax.cond`) once all its variants stopped.

    Randomness costs compile time per call site, so all variants of all parts draw their
    epoch's randomness (shuffles, step keys) in one vmapped call.
    """
    s0 = families[0].structure
    shapes = [st.active.shape for st in states]  # [part, variant] per family
    bounds = np.cumsum([0] + [int(np.prod(sh)) for sh in shapes])
    next_keys, batches, step_keys = jax.vmap(partial(
        epoch_randomness, n=s0.n_train, steps=s0.steps_per_epoch, batch_size=s0.batch_size))(
        jnp.concatenate([st.key.reshape(-1) for st in states]))
    several = _n_parts(families) > 1
    new_states, records = [], []
    for i, (family, st, hp) in enumerate(zip(families, states, hps)):
        rows = lambda a: a[bounds[i]:bounds[i + 1]].reshape(*shapes[i], *a.shape[1:])  # noqa: E731
        run = partial(_part_epoch, family.structure, epoch=epoch, train=train, val=val)

        def one_part(st, hp, batches, step_keys, next_key, choice, run=run):
            new_state, record = _unless_stopped(several, st.active, run, st, hp, batches, step_keys, next_key, choice)
            if several:
                record.update(active=new_state.active, diverged=new_state.diverged, best_epoch=new_state.es.best_epoch)
            return new_state, record

        new_state, record = _over_parts(family, one_part, st, hp, rows(batches), rows(step_keys), rows(next_keys))
        new_states.append(new_state)
        records.append(record)
    return tuple(new_states), tuple(records)


def _program_init(families: Sequence[_Family], hps):
    """Every part's initial states (by its own structure: the initialiser may differ) from
    one vmapped random call over all variants."""
    seeds = jnp.concatenate([hp.seed.reshape(-1) for hp in hps])
    bits = jax.vmap(partial(init_bits, families[0].structure))(seeds)
    out, offset = [], 0
    for family, hp in zip(families, hps):
        states = []
        for j, part in enumerate(family.parts):
            hp_j = jax.tree_util.tree_map(lambda a: a[j], hp)
            n = hp_j.seed.shape[0]
            states.append(jax.vmap(partial(state_from_bits, part.structure))(hp_j, bits[offset:offset + n]))
            offset += n
        out.append(jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states))
    return tuple(out)


def _program_final(family: _Family, state: TrainState, hp: HParams, part: jax.Array, train: Split, test: Split):
    """One part of a family (`part`: its index there, a traced scalar, so one program serves
    every part): the selected parameters, their test and training-split metrics, and the
    epoch each variant stopped in."""
    state, hp = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, part, keepdims=False), (state, hp))
    params, test_metrics, train_metrics = jax.vmap(partial(final_evaluation, family.structure, choice=part),
                                                   in_axes=(0, 0, None, None))(state, hp, train, test)
    return params, test_metrics, train_metrics, state.stopped_epoch


class Trainer:
    """Trains a set of variants in one compiled program.

    Variants are split into parts of one structure each (they may differ in activation
    and initialiser, see `merge_key`); each part is vmapped, and all parts run in the same
    jitted epoch, parts that differ only in activation and initialiser sharing one copy of
    the code (`_Family`). With `devices > 1` every part's variant axis is sharded over that
    many devices (padded with copies of its last variant). Iterate `run()` to receive one
    host-side record per epoch (arrays over variants, in the order given); `result` is set
    when the loop ends.
    """

    def __init__(self, configs: Sequence[RunConfig], data: Dataset, devices: int = 1):
        self.configs = list(configs)
        if len({merge_key(c) for c in self.configs}) != 1:
            structure_of(self.configs, data)  # raises, naming the keys that differ
        by_structure: dict[tuple, list[int]] = {}
        for i, c in enumerate(self.configs):
            by_structure.setdefault(structure_key(c), []).append(i)
        parts = []
        for rows in by_structure.values():
            padded = rows + [rows[-1]] * (-len(rows) % devices)
            group = [self.configs[i] for i in padded]
            parts.append(_Part(structure_of(group, data), np.asarray(rows), hparams_of(group)))
        self.families = tuple(_Family.of(parts))
        self.parts = [p for f in self.families for p in f.parts]
        self.structures = [p.structure for p in self.parts]
        self.epochs = self.structures[0].epochs
        self.data = data if isinstance(data.train.x, jax.Array) else data.on_device()
        self.compile_seconds = 0.0
        self.result: GroupResult | None = None
        programs = [partial(_program_init, self.families), partial(_program_epoch, self.families),
                    *(partial(_program_final, f) for f in self.families)]
        self._variant_sharding = None
        if devices > 1:
            programs = self._shard(programs, devices)
        self.hps = self._place(tuple(f.hp for f in self.families))
        self._init = jax.jit(programs[0])
        self._epoch = jax.jit(programs[1], donate_argnums=0)
        self._finals = [jax.jit(f) for f in programs[2:]]

    def _shard(self, programs, devices: int):
        """Each device runs the programs on its share of every part's variants (`shard_map`:
        no cross-device work, and it compiles about as fast as the one-device program)."""
        P = jax.sharding.PartitionSpec
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:devices]), ("variants",))
        replicated = jax.sharding.NamedSharding(mesh, P())
        put = lambda split: Split(*jax.device_put(tuple(split), replicated))  # noqa: E731
        self.data = dataclasses.replace(self.data, train=put(self.data.train), val=put(self.data.val),
                                        test=put(self.data.test))
        v = P(None, "variants")  # [part, variant, ...]
        self._variant_sharding = jax.sharding.NamedSharding(mesh, v)
        specs = [((v,), v), ((v, v, P(), P(), P()), (v, v))] + [((v, v, P(), P(), P()), P("variants"))] * len(programs[2:])
        return [jax.shard_map(f, mesh=mesh, in_specs=i, out_specs=o, check_vma=False)
                for f, (i, o) in zip(programs, specs)]

    def _place(self, tree):
        return jax.device_put(tree, self._variant_sharding)

    def compile(self) -> float:
        """Compile every program ahead of time; returns (and keeps) the compile seconds."""
        start = time.perf_counter()
        d = self.data
        states = jax.tree_util.tree_map(
            lambda sd: jax.ShapeDtypeStruct(sd.shape, sd.dtype, sharding=self._variant_sharding),
            jax.eval_shape(self._init, self.hps))
        # XLA compiles without the GIL: each program compiles in a thread while the next one is traced.
        with concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="jaxmlp-compile") as pool:
            init = pool.submit(self._init.lower(self.hps).compile)
            epoch = pool.submit(self._epoch.lower(states, self.hps, jnp.int32(1), d.train, d.val).compile)
            finals = [pool.submit(f.lower(st, hp, jnp.int32(0), d.train, d.test).compile)
                      for f, st, hp in zip(self._finals, states, self.hps)]
            self._init, self._epoch = init.result(), epoch.result()
            self._finals = [f.result() for f in finals]
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def _gather(self, per_family: Sequence[Any]) -> Any:
        """Per-family host arrays [part, variant, ...] in the caller's variant order (padding dropped)."""
        order = np.argsort(np.concatenate([p.index for p in self.parts]))
        pieces = [jax.tree_util.tree_map(lambda a, j=j, n=len(p.index): np.asarray(a)[j, :n], x)
                  for f, x in zip(self.families, per_family) for j, p in enumerate(f.parts)]
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a)[order], *pieces)

    def run(self) -> Iterator[dict[str, Any]]:
        """Train until no variant is active or the epoch budget is spent, one record per epoch.

        A variant that stopped is evaluated at once (test metrics of its selected
        parameters, which no longer change): the epoch's record lists the `VariantResult`s
        of the variants that stopped in it under "finished", so the caller can log them while
        the others train. `result` holds every variant at the end, in the order given."""
        if not isinstance(self._epoch, jax.stages.Compiled):
            self.compile()
        d = self.data
        self._start = time.perf_counter()
        self._results: dict[int, VariantResult] = {}
        states = self._place(self._init(self.hps))
        records = []
        for epoch in range(1, self.epochs + 1):
            tic = time.perf_counter()
            states, per_family = self._epoch(states, self.hps, jnp.int32(epoch), d.train, d.val)
            record = self._gather(jax.device_get(per_family))
            record["epoch"] = epoch
            record["epoch_seconds"] = time.perf_counter() - tic
            records.append(record)
            record["finished"] = self._finish(states, records, ~record["active"])
            yield record
            if not record["active"].any():
                break
        self._finish(states, records, np.ones(len(self.configs), bool))
        self.result = GroupResult(self.structures, [self._results[i] for i in range(len(self.configs))],
                                  self.compile_seconds, time.perf_counter() - self._start)

    def _finish(self, states, records: list[dict[str, Any]], done: np.ndarray) -> list[VariantResult]:
        """Results of the variants `done` (caller order) that have none yet; their part is
        evaluated once for all of them (one program call per part)."""
        d, finished = self.data, []
        for family, final, state, hp in zip(self.families, self._finals, states, self.hps):
            for j, part in enumerate(family.parts):
                rows = [row for row, i in enumerate(part.index) if done[i] and i not in self._results]
                if not rows:
                    continue
                params, test, train, stopped = jax.device_get(final(state, hp, jnp.int32(j), d.train, d.test))
                seconds, last = time.perf_counter() - self._start, records[-1]
                for row in rows:
                    i = part.index[row]
                    self._results[i] = VariantResult(
                        config=self.configs[i], best_epoch=int(last["best_epoch"][i]),
                        stopped_epoch=int(stopped[row]) or len(records),
                        epochs_trained=int(sum(r["trained"][i] for r in records)),
                        diverged=bool(last["diverged"][i]),
                        test={k: float(v[row]) for k, v in test.items() if k != "dead_fraction"},
                        train_final={k: float(v[row]) for k, v in train.items() if k != "dead_fraction"},
                        history=variant_history(records, i),
                        params=jax.tree_util.tree_map(lambda a, row=row: a[row], params),
                        train_seconds=seconds)
                    finished.append(self._results[i])
        return finished


def variant_history(records: Sequence[dict[str, np.ndarray]], i: int) -> list[dict[str, float]]:
    """Variant i's per-epoch metrics (only epochs it trained), with one key per dead-unit layer."""
    history = []
    for r in records:
        if not r["trained"][i]:
            continue
        row = {"epoch": r["epoch"], "epoch_seconds": r["epoch_seconds"]}
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate"):
            if np.isfinite(r[key][i]) or key.endswith("loss"):
                row[key] = float(r[key][i])
        row.update({f"dead_fraction_{j}": float(f) for j, f in enumerate(r["dead_fraction"][i])})
        history.append(row)
    return history


def fit(configs: Sequence[RunConfig], data: Dataset) -> GroupResult:
    """Train `configs` (one structure) to the end and return their results."""
    trainer = Trainer(configs, data)
    for _ in trainer.run():
        pass
    return trainer.result


def enable_compilation_cache(path: str) -> None:
    """Persist compiled programs in `path` so a repeated run compiles nothing."""
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


if __name__ == "__main__":
    from jaxmlp.cli import main

    raise SystemExit(main())
