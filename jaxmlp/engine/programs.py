"""The compiled programs a Trainer runs, for the families of its slots: initialisation, one
epoch of every part, refilling freed slots with the next variants, a part's final
evaluation (`Programs`: jitted, optionally sharded over devices, compiled ahead of time);
and the two small programs an adaptive search runs between epochs (stopping variants,
copying states along the variant axis)."""
from __future__ import annotations

import concurrent.futures
import dataclasses
from functools import partial
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.data import Dataset, Split
from jaxmlp.engine.early_stopping import end_of_epoch
from jaxmlp.engine.evaluation import final_evaluation
from jaxmlp.engine.families import Family
from jaxmlp.engine.state import TrainState, init_bits, state_from_bits
from jaxmlp.engine.step import epoch_randomness, step_draws, train_step
from jaxmlp.engine.structure import HParams, Structure


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


def _over_parts(family: Family, fn, *stacked):
    """`fn(*part_slices)` for every part of the family, outputs stacked on a leading part axis:
    called directly for a lone part, else as the body of a `lax.scan`."""
    if family.n_parts == 1:
        out = fn(*jax.tree_util.tree_map(lambda a: a[0], stacked))
        return jax.tree_util.tree_map(lambda a: a[None], out)
    _, out = jax.lax.scan(lambda _, xs: (None, fn(*xs)), None, stacked)
    return out


def _part_epoch(s: Structure, state: TrainState, hp: HParams, batches, step_keys, next_key, choice,
                train: Split, val: Split):
    """One part's epoch (its variants vmapped, each slot's activation its own `choice`): a scan
    over its minibatch steps, then validation, early stopping and freezing. Each step draws
    its dropout and noise uniforms in one call (none when the structure needs none)."""
    step = jax.vmap(partial(train_step, s), in_axes=(0, None, 0, 0, 0))

    def body(carry, xs):
        index, keys = xs
        return step(hp, train, carry, (index, jax.vmap(partial(step_draws, s))(keys)), choice)

    carry = (state.params, state.opt_state, state.step)
    carry, metrics = jax.lax.scan(body, carry, (jnp.swapaxes(batches, 0, 1), jnp.swapaxes(step_keys, 0, 1)))
    metrics = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), metrics)  # [variant, step]
    finish = jax.vmap(partial(end_of_epoch, s), in_axes=(0, 0, 0, 0, 0, None, 0))
    return finish(state, hp, carry, metrics, next_key, val, choice)


def _n_parts(families: Sequence[Family]) -> int:
    return sum(f.n_parts for f in families)


def program_epoch(families: Sequence[Family], states, inputs, train: Split, val: Split):
    """One epoch of every part, each skipped (`lax.cond`) once all its slots are idle; every
    variant counts its own epochs (`TrainState.epoch`).

    Randomness costs compile time per call site, so all variants of all parts draw their
    epoch's randomness (shuffles, step keys) in one vmapped call.
    """
    s0 = families[0].structure
    bounds = np.cumsum([0] + [int(np.prod(st.active.shape)) for st in states])
    next_keys, batches, step_keys = jax.vmap(partial(
        epoch_randomness, n=s0.n_train, steps=s0.steps_per_epoch, batch_size=s0.batch_size))(
        jnp.concatenate([st.key.reshape(-1) for st in states]))
    several = _n_parts(families) > 1
    new_states, records = [], []
    for family, st, (hp, sel), start, stop in zip(families, states, inputs, bounds[:-1], bounds[1:]):
        rows = [a[start:stop].reshape(*st.active.shape, *a.shape[1:]) for a in (batches, step_keys, next_keys)]
        part_epoch = partial(_part_epoch_or_skip, family.structure, several, train, val)
        new_state, record = _over_parts(family, part_epoch, st, hp, sel, *rows)
        new_states.append(new_state)
        records.append(record)
    return tuple(new_states), tuple(records)


def _part_epoch_or_skip(s: Structure, several: bool, train: Split, val: Split, state: TrainState, hp: HParams,
                        sel, batches, step_keys, next_key):
    """A part's epoch in `program_epoch`, skipped when none of its slots trains (with several
    parts; a skipped part's record is zeros, so the record then also says what its slots hold)."""
    run = partial(_part_epoch, s, train=train, val=val)
    new_state, record = _unless_stopped(several, state.active, run, state, hp, batches, step_keys, next_key,
                                        sel.activation)
    if several:
        record.update(active=new_state.active, diverged=new_state.diverged,
                      best_epoch=new_state.es.best_epoch, variant_epoch=new_state.epoch)
    return new_state, record


def program_init(families: Sequence[Family], inputs):
    """Every slot's initial state, from one vmapped random call over all slots; each initialised
    from its variant's seed (`Selectors.seed`) by its selected initializer, empty slots inactive."""
    seeds = jnp.concatenate([sel.seed.reshape(-1) for _, sel in inputs])
    bits = jax.vmap(partial(init_bits, families[0].structure))(seeds)
    out, offset = [], 0
    for family, (_, sel) in zip(families, inputs):
        shape = sel.frozen.shape
        n = int(np.prod(shape))
        init = jax.vmap(jax.vmap(partial(state_from_bits, family.structure)))
        state = init(bits[offset:offset + n].reshape(*shape, -1), sel.init)
        out.append(state._replace(active=~sel.frozen))
        offset += n
    return tuple(out)


def program_refill(families: Sequence[Family], states, inputs, masks):
    """The states with the slots of `masks` (per family, [part, variant] bools) started afresh
    for the variants the inputs now name there: parameters from their seeds, fresh optimizer
    and early-stopping state, their own epoch and step counts at zero."""
    fresh = program_init(families, inputs)
    return tuple(_where_rows(mask, new, old) for mask, new, old in zip(masks, fresh, states))


def _where_rows(mask: jax.Array, new: TrainState, old: TrainState) -> TrainState:
    """Rows [part, variant] of `new` where `mask`, else of `old` (random keys through their data)."""
    def pick(a, b):
        return jnp.where(mask.reshape(*mask.shape, *([1] * (a.ndim - mask.ndim))), a, b)

    state = jax.tree_util.tree_map(pick, new._replace(key=None), old._replace(key=None))
    key = jax.random.wrap_key_data(pick(jax.random.key_data(new.key), jax.random.key_data(old.key)))
    return state._replace(key=key)


def program_final(family: Family, state: TrainState, inputs, part: jax.Array, train: Split, val: Split,
                  test: Split):
    """One part of a family (`part`: its index there, a traced scalar, so one program serves
    every part): the selected parameters, their test and training-split metrics, and each
    slot's epoch count, stopping epoch, best epoch and divergence (`val`: for a temperature
    fitted on it)."""
    state, (hp, sel) = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, part, keepdims=False),
                                              (state, inputs))
    params, test_metrics, train_metrics = jax.vmap(partial(final_evaluation, family.structure),
                                                   in_axes=(0, 0, None, None, None, 0))(state, hp, train, val, test,
                                                                                        sel.activation)
    ends = {"epoch": state.epoch, "stopped_epoch": state.stopped_epoch, "best_epoch": state.es.best_epoch,
            "diverged": state.diverged}
    return params, test_metrics, train_metrics, ends


@jax.jit
def stop_rows(state: TrainState, rows: jax.Array) -> TrainState:
    """The state with the active variants of `rows` stopped in their last epoch."""
    return state._replace(active=state.active & ~rows,
                          stopped_epoch=jnp.where(rows & state.active, state.epoch, state.stopped_epoch))


@jax.jit
def copy_rows(state: TrainState, gather: jax.Array) -> TrainState:
    """Each row [part, variant] of the state replaced by the row `gather` names (its flat index),
    but for its random key."""
    flat = gather.reshape(-1)

    def take(a):
        return a.reshape(-1, *a.shape[2:])[flat].reshape(a.shape)

    key = state.key
    return jax.tree_util.tree_map(take, state._replace(key=None))._replace(key=key)


@jax.jit
def move_rows(state: TrainState, gather: jax.Array, vacated: jax.Array) -> TrainState:
    """Each row [part, variant] of the state replaced by the row `gather` names (its flat
    index), random key included; the rows of `vacated` (moved away) become inactive."""
    flat = gather.reshape(-1)

    def take(a):
        return a.reshape(-1, *a.shape[2:])[flat].reshape(a.shape)

    moved = jax.tree_util.tree_map(take, state._replace(key=None))
    moved = moved._replace(key=jax.random.wrap_key_data(take(jax.random.key_data(state.key))))
    return moved._replace(active=moved.active & ~vacated)


class Programs(NamedTuple):
    """A trainer's programs: `init` (traced only: its output's shapes) and, jitted with the
    states donated, or compiled (`compiled`), the epoch, the refill and each family's final
    evaluation."""

    init: Callable
    epoch: Callable
    refill: Callable
    finals: tuple[Callable, ...]


def programs_of(families: Sequence[Family], mesh: jax.sharding.Mesh | None = None) -> Programs:
    """The programs of `families`, jitted; with a `mesh`, sharded over its devices (`shard_map`)."""
    programs = [partial(program_init, families), partial(program_epoch, families),
                partial(program_refill, families), *(partial(program_final, f) for f in families)]
    if mesh is not None:
        programs = _sharded(programs, mesh)
    init, epoch, refill, *finals = programs
    return Programs(init, jax.jit(epoch, donate_argnums=0), jax.jit(refill, donate_argnums=0),
                    tuple(jax.jit(f) for f in finals))


def _sharded(programs: Sequence[Callable], mesh: jax.sharding.Mesh) -> list[Callable]:
    """Each device runs the programs on its share of every part's slots (`shard_map`: no
    cross-device work, and it compiles about as fast as the one-device program)."""
    P = jax.sharding.PartitionSpec
    v = P(None, "variants")  # [part, variant, ...]
    specs = [((v,), v), ((v, v, P(), P()), (v, v)), ((v, v, v), v)] + \
        [((v, v, P(), P(), P(), P()), P("variants"))] * (len(programs) - 3)
    return [jax.shard_map(f, mesh=mesh, in_specs=i, out_specs=o, check_vma=False)
            for f, (i, o) in zip(programs, specs)]


def slot_mesh(devices: int) -> jax.sharding.Mesh | None:
    """The mesh the slot axis is sharded over (None on one device: nothing is sharded)."""
    return jax.sharding.Mesh(np.asarray(jax.devices()[:devices]), ("variants",)) if devices > 1 else None


def slot_sharding(mesh: jax.sharding.Mesh | None) -> jax.sharding.NamedSharding | None:
    """How arrays [part, variant, ...] are placed: their slots split over the mesh's devices."""
    return None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "variants"))


def placed_data(data: Dataset, mesh: jax.sharding.Mesh | None) -> Dataset:
    """The dataset on the device, or replicated on every device of the mesh."""
    data = data if isinstance(data.train.x, jax.Array) else data.on_device()
    if mesh is None:
        return data
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    put = lambda split: Split(*jax.device_put(tuple(split), replicated))  # noqa: E731
    return dataclasses.replace(data, train=put(data.train), val=put(data.val), test=put(data.test))


def compile_key(families: Sequence[Family], devices: int, data: Dataset) -> tuple:
    """What compiled programs depend on: equal keys run the same compiled programs."""
    return (tuple(f.key for f in families), devices,
            tuple((a.shape, str(a.dtype)) for a in (*data.train, *data.val, *data.test)))


def compiled(programs: Programs, states, inputs, masks, data: Dataset) -> Programs:
    """The programs compiled ahead of time for these states (shapes), inputs and refill masks.
    XLA compiles without the GIL: each program compiles in a thread while the next one is traced."""
    with concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="jaxmlp-compile") as pool:
        epoch = pool.submit(programs.epoch.lower(states, inputs, data.train, data.val).compile)
        refill = pool.submit(programs.refill.lower(states, inputs, masks).compile)
        finals = [pool.submit(f.lower(st, inp, jnp.int32(0), data.train, data.val, data.test).compile)
                  for f, st, inp in zip(programs.finals, states, inputs)]
        return programs._replace(epoch=epoch.result(), refill=refill.result(), finals=tuple(f.result() for f in finals))
