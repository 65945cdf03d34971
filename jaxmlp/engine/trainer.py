"""The Trainer: K variants of one structure, or of several that share a program, trained at once.

The other engine modules hold what one variant does (a step, an epoch's end, evaluation,
early stopping); this module compiles that for many variants: vmapped over a leading variant
axis, parts of different activations sharing one copy of the code (`_Family`), optionally
sharded over several devices, and runs the epochs. The host wakes once per epoch to receive
a small record; a variant that stopped is evaluated at once. Nothing here touches files,
MLflow or the terminal.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from functools import partial
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.config import RunConfig, numeric_fields
from jaxmlp.data import Dataset, Split
from jaxmlp.engine.early_stopping import end_of_epoch
from jaxmlp.engine.evaluation import final_evaluation
from jaxmlp.engine.results import GroupResult, VariantResult, variant_history
from jaxmlp.engine.state import TrainState, init_bits, state_from_bits
from jaxmlp.engine.step import epoch_randomness, step_draws, train_step
from jaxmlp.activations import is_noisy
from jaxmlp.engine.layout import Layout, family_of
from jaxmlp.engine.structure import HParams, Structure, hparams_of, merge_key, structure_key, structure_of
from jaxmlp.models import resolve_init


class Selectors(NamedTuple):
    """Per part, what its variants run as, given as inputs (arrays [part, variant], equal along
    the variant axis), so one compiled program serves parts of any activation or initialiser:
    the index into the family's switched activation and initializer, and the variants that
    are frozen from the start (filler parts, or variants finished earlier)."""

    activation: Any
    init: Any
    frozen: Any


@dataclasses.dataclass(frozen=True)
class _Part:
    """Variants of one structure inside a program; `index` maps its first rows back to the
    caller's order (the rest pad the part to its size)."""

    structure: Structure
    index: np.ndarray
    hp: HParams
    frozen: np.ndarray  # [part size] bool


@dataclasses.dataclass(frozen=True)
class _Family:
    """Parts of a program that differ only in activation and initialiser and have as many
    variants: their code is traced and compiled once, for a structure whose activation and
    initializer are switched ('sigmoid|tanh|...'), and a `lax.scan` runs it part after part,
    the part's selectors choosing its functions (`lax.switch` on a scalar: a real branch, not
    a select). Their states and numbers are stacked: every leaf has leading axes [part, variant].
    Programs of equal families (`key`) are the same program."""

    structure: Structure
    parts: tuple[_Part, ...]

    @property
    def key(self) -> tuple:
        return self.structure, len(self.parts), len(self.parts[0].frozen)

    @property
    def inputs(self) -> tuple[HParams, Selectors]:
        """The family's numbers and selectors, stacked over its parts."""
        acts, inits = self.structure.activation.split("|"), self.structure.initializer.split("|")
        for p in self.parts:
            if p.structure.activation not in acts or _resolved_init(p.structure) not in inits:
                raise ValueError(f"a part of activation {p.structure.activation!r} and initializer "
                                 f"{_resolved_init(p.structure)!r} is not in the layout ({', '.join(acts)}; "
                                 f"{', '.join(inits)})")
        size = len(self.parts[0].frozen)
        selectors = [Selectors(np.full(size, acts.index(p.structure.activation), np.int32),
                               np.full(size, inits.index(_resolved_init(p.structure)), np.int32), p.frozen)
                     for p in self.parts]
        return jax.tree_util.tree_map(lambda *a: np.stack(a), *((p.hp, sel) for p, sel in zip(self.parts, selectors)))

    @staticmethod
    def of(parts: Sequence[_Part], layout: Layout | None = None, make_part=None) -> list["_Family"]:
        """Parts grouped into families, in order of first appearance. With a `layout`, the
        layout's families in its order, each switching over the layout's activations (those
        of its kind) and initialisers, and filled up to its part count with frozen parts
        (`make_part(template)` makes one where the family has none here)."""
        if layout is None:
            by_key: dict[tuple, list[_Part]] = {}
            for p in parts:
                s = p.structure
                key = (dataclasses.replace(s, activation="", initializer=""), s.random_width, len(p.frozen))
                by_key.setdefault(key, []).append(p)
            return [_Family.switched(members, [m.structure.activation for m in members],
                                     [_resolved_init(m.structure) for m in members]) for members in by_key.values()]
        families = []
        for template, n_parts in layout.families:
            noisy = family_of(template)
            members = [p for p in parts if is_noisy(p.structure.activation) == noisy]
            if len(members) > n_parts:
                raise ValueError(f"{len(members)} parts of {layout.part_size} variants exceed the layout's "
                                 f"{n_parts} parts per program")
            last = members[-1] if members else make_part(template)
            filler = dataclasses.replace(last, index=np.zeros(0, int), frozen=np.ones_like(last.frozen))
            members += [filler] * (n_parts - len(members))
            acts = [a for a in layout.activations if is_noisy(a) == noisy]
            families.append(_Family.switched(members, acts, layout.initializers))
        return families

    @staticmethod
    def switched(members: Sequence[_Part], activations: Sequence[str], initializers: Sequence[str]) -> "_Family":
        """A family of `members` whose code switches over `activations` and `initializers`."""
        structure = dataclasses.replace(members[0].structure, activation="|".join(dict.fromkeys(activations)),
                                        initializer="|".join(dict.fromkeys(initializers)))
        return _Family(structure, tuple(members))


def _resolved_init(s: Structure) -> str:
    return resolve_init(s.initializer, s.activation)


@jax.jit
def _stop_rows(state: TrainState, rows: jax.Array, epoch: jax.Array) -> TrainState:
    """The state with the active variants of `rows` stopped in `epoch`."""
    return state._replace(active=state.active & ~rows,
                          stopped_epoch=jnp.where(rows & state.active, epoch, state.stopped_epoch))


@jax.jit
def _copy_rows(state: TrainState, gather: jax.Array) -> TrainState:
    """Each row [part, variant] of the state replaced by the row `gather` names (its flat index),
    but for its random key."""
    flat = gather.reshape(-1)

    def take(a):
        return a.reshape(-1, *a.shape[2:])[flat].reshape(a.shape)

    key = state.key
    return jax.tree_util.tree_map(take, state._replace(key=None))._replace(key=key)


#: Compiled programs by the static description of what they run: a chunk of a group whose
#: families equal an earlier chunk's (same layout) runs the programs compiled for that one.
_COMPILED: dict[tuple, tuple] = {}


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
    """`fn(*part_slices)` for every part of the family, outputs stacked on a leading part axis:
    called directly for a lone part, else as the body of a `lax.scan`."""
    if len(family.parts) == 1:
        out = fn(*jax.tree_util.tree_map(lambda a: a[0], stacked))
        return jax.tree_util.tree_map(lambda a: a[None], out)
    _, out = jax.lax.scan(lambda _, xs: (None, fn(*xs)), None, stacked)
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


def _program_epoch(families: Sequence[_Family], states, inputs, epoch, train: Split, val: Split):
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
    for i, (family, st, (hp, sel)) in enumerate(zip(families, states, inputs)):
        rows = lambda a: a[bounds[i]:bounds[i + 1]].reshape(*shapes[i], *a.shape[1:])  # noqa: E731
        run = partial(_part_epoch, family.structure, epoch=epoch, train=train, val=val)

        def one_part(st, hp, sel, batches, step_keys, next_key, run=run):
            new_state, record = _unless_stopped(several, st.active, run, st, hp, batches, step_keys, next_key,
                                                sel.activation[0])
            if several:
                record.update(active=new_state.active, diverged=new_state.diverged, best_epoch=new_state.es.best_epoch)
            return new_state, record

        new_state, record = _over_parts(family, one_part, st, hp, sel, rows(batches), rows(step_keys), rows(next_keys))
        new_states.append(new_state)
        records.append(record)
    return tuple(new_states), tuple(records)


def _program_init(families: Sequence[_Family], inputs):
    """Every part's initial states, from one vmapped random call over all variants; each part
    initialised by its selected initializer, frozen variants inactive from the start."""
    seeds = jnp.concatenate([hp.seed.reshape(-1) for hp, _ in inputs])
    bits = jax.vmap(partial(init_bits, families[0].structure))(seeds)
    out, offset = [], 0
    for family, (hp, sel) in zip(families, inputs):
        shape = sel.frozen.shape
        n = int(np.prod(shape))
        init = jax.vmap(jax.vmap(partial(state_from_bits, family.structure)))
        state = init(hp, bits[offset:offset + n].reshape(*shape, -1), sel.init)
        out.append(state._replace(active=~sel.frozen))
        offset += n
    return tuple(out)


def _program_final(family: _Family, state: TrainState, inputs, part: jax.Array, train: Split, test: Split):
    """One part of a family (`part`: its index there, a traced scalar, so one program serves
    every part): the selected parameters, their test and training-split metrics, and the
    epoch each variant stopped in."""
    state, (hp, sel) = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, part, keepdims=False),
                                              (state, inputs))
    params, test_metrics, train_metrics = jax.vmap(partial(final_evaluation, family.structure,
                                                           choice=sel.activation[0]),
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

    def __init__(self, configs: Sequence[RunConfig], data: Dataset, devices: int = 1, *,
                 layout: Layout | None = None, frozen: Sequence[bool] | None = None):
        self.configs = list(configs)
        self.frozen = np.zeros(len(self.configs), bool) if frozen is None else np.asarray(frozen, bool)
        if self.frozen.shape != (len(self.configs),):
            raise ValueError(f"frozen: {self.frozen.shape[0]} flags for {len(self.configs)} variants; give one per variant")
        if len({merge_key(c) for c in self.configs}) != 1:
            structure_of(self.configs, data)  # raises, naming the keys that differ
        by_structure: dict[tuple, list[int]] = {}
        for i, c in enumerate(self.configs):
            by_structure.setdefault(structure_key(c), []).append(i)
        features = layout.features if layout else frozenset()
        parts = []
        for rows in by_structure.values():
            size = layout.part_size if layout else len(rows) + (-len(rows) % devices)
            for piece in (rows[start:start + size] for start in range(0, len(rows), size)):
                padded = piece + [piece[-1]] * (size - len(piece))
                group = [self.configs[i] for i in padded]
                parts.append(_Part(structure_of(group, data, features), np.asarray(piece), hparams_of(group),
                                   self.frozen[padded]))

        def filler_part(template: RunConfig) -> _Part:
            group = [template] * layout.part_size
            return _Part(structure_of(group, data, features), np.zeros(0, int), hparams_of(group), np.ones(size, bool))

        self.families = tuple(_Family.of(parts, layout, filler_part))
        self.parts = [p for f in self.families for p in f.parts]
        self.structures = [p.structure for p in self.parts if len(p.index)]
        self.epochs = self.structures[0].epochs
        self.data = data if isinstance(data.train.x, jax.Array) else data.on_device()
        self.compile_seconds = 0.0
        self.reused_programs = False  # whether compile() found this trainer's programs already compiled
        self.result: GroupResult | None = None
        d = self.data
        self._key = (tuple(f.key for f in self.families), devices,
                     tuple((a.shape, str(a.dtype)) for a in (*d.train, *d.val, *d.test)))
        programs = [partial(_program_init, self.families), partial(_program_epoch, self.families),
                    *(partial(_program_final, f) for f in self.families)]
        self._variant_sharding = None
        if devices > 1:
            programs = self._shard(programs, devices)
        self._host_inputs = tuple(f.inputs for f in self.families)
        self.inputs = self._place(self._host_inputs)
        self.tracked_hparams: tuple[str, ...] = ()  # vmapped numbers each record carries (they may change)
        self._results: dict[int, VariantResult] = {}
        self._pending: dict[int, VariantResult] = {}
        self._pruned: dict[int, int] = {}
        self._lineage: dict[int, list[dict[str, int]]] = {}
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
        """Compile every program ahead of time, or take them from an earlier Trainer with the
        same families; returns (and keeps) the compile seconds."""
        start = time.perf_counter()
        self.reused_programs = self._key in _COMPILED
        if self.reused_programs:
            self._init, self._epoch, self._finals = _COMPILED[self._key]
            self.compile_seconds = time.perf_counter() - start
            return self.compile_seconds
        d = self.data
        states = jax.tree_util.tree_map(
            lambda sd: jax.ShapeDtypeStruct(sd.shape, sd.dtype, sharding=self._variant_sharding),
            jax.eval_shape(self._init, self.inputs))
        # XLA compiles without the GIL: each program compiles in a thread while the next one is traced.
        with concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="jaxmlp-compile") as pool:
            init = pool.submit(self._init.lower(self.inputs).compile)
            epoch = pool.submit(self._epoch.lower(states, self.inputs, jnp.int32(1), d.train, d.val).compile)
            finals = [pool.submit(f.lower(st, inp, jnp.int32(0), d.train, d.test).compile)
                      for f, st, inp in zip(self._finals, states, self.inputs)]
            self._init, self._epoch = init.result(), epoch.result()
            self._finals = [f.result() for f in finals]
        _COMPILED[self._key] = (self._init, self._epoch, self._finals)
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
        parameters, which no longer change): the epoch's record maps the variants that
        stopped in it (their index in the order given) to their `VariantResult`s under
        "finished", so the caller can log them while the others train. Between two records
        the caller may `stop` variants or let some `exploit` others. `result` holds every
        variant that is not frozen, at the end, in the order given."""
        if not isinstance(self._epoch, jax.stages.Compiled):
            self.compile()
        d = self.data
        self._start = time.perf_counter()
        self.states = self._place(self._init(self.inputs))
        self.records: list[dict[str, Any]] = []
        self.active = ~self.frozen
        for epoch in range(1, self.epochs + 1):
            if not self.active.any():
                break
            tic = time.perf_counter()
            self.states, per_family = self._epoch(self.states, self.inputs, jnp.int32(epoch), d.train, d.val)
            record = self._gather(jax.device_get(per_family))
            record["epoch"] = epoch
            record["epoch_seconds"] = time.perf_counter() - tic
            if self.tracked_hparams:
                record["hparams"] = self.hparams(self.tracked_hparams)
            self.records.append(record)
            self.active = record["active"] & ~self.frozen
            pending, self._pending = self._pending, {}
            record["finished"] = {**pending, **self._finish(~self.active & ~self.frozen)}
            yield record
        self._finish(~self.frozen)
        self.result = GroupResult(self.structures, [self._results[i] for i in sorted(self._results)],
                                  self.compile_seconds, time.perf_counter() - self._start)

    # -- between two epochs: adaptive search (see `jaxmlp.engine.search`) --
    def _rows(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Per family, a bool mask [part, variant] of the rows that hold the variants `indices`."""
        masks = [np.zeros(np.shape(inputs[1].frozen), bool) for inputs in self._host_inputs]
        wanted = set(int(i) for i in indices)
        for f, family in enumerate(self.families):
            for j, part in enumerate(family.parts):
                for row, i in enumerate(part.index):
                    masks[f][j, row] = int(i) in wanted
        return masks

    def stop(self, indices: Sequence[int]) -> dict[int, VariantResult]:
        """Stop the active variants among `indices` (caller order) now, as early stopping would
        have at the last epoch: their selected parameters are evaluated at once; the results
        come back here and with the next record's "finished"."""
        indices = [int(i) for i in indices if self.active[i]]
        if not indices:
            return {}
        epoch = len(self.records)
        self.states = tuple(_stop_rows(st, self._place(mask), jnp.int32(epoch))
                            for st, mask in zip(self.states, self._rows(indices)))
        self.active[indices] = False
        self._pruned.update({i: epoch for i in indices})
        done = np.zeros(len(self.configs), bool)
        done[indices] = True
        finished = self._finish(done)
        self._pending.update(finished)
        return finished

    def exploit(self, sources: Mapping[int, int], values: Mapping[str, Mapping[int, float]]) -> None:
        """Each member `dst` of `sources` (caller order) becomes a copy of its source: the whole
        training state (parameters, optimizer state, best parameters, early stopping) but its
        own random key, and every vmapped number but its seed; then `values` (configuration
        key -> member -> value) are set. Runs on the device (a gather along the variant axis)."""
        where = {int(i): (f, j, row) for f, family in enumerate(self.families)
                 for j, part in enumerate(family.parts) for row, i in enumerate(part.index)}
        epoch = len(self.records)
        shapes = [np.shape(inputs[1].frozen) for inputs in self._host_inputs]
        gathers = [np.arange(int(np.prod(shape))).reshape(shape) for shape in shapes]
        host = [(jax.tree_util.tree_map(np.copy, hp), sel) for hp, sel in self._host_inputs]
        names = {f.key: f.name for f in numeric_fields(type(self.configs[0]))}
        for dst, src in sources.items():
            (f, j, row), (g, k, col) = where[int(dst)], where[int(src)]
            if f != g:
                raise ValueError(f"variant {dst} cannot copy variant {src}: they train in different families")
            gathers[f][j, row] = gathers[f][k, col]
            for name in names.values():
                if name != "seed":
                    getattr(host[f][0], name)[j, row] = getattr(host[f][0], name)[k, col]
            self._lineage.setdefault(int(dst), []).append({"epoch": epoch, "source": int(src)})
        for key, members in values.items():
            for dst, value in members.items():
                f, j, row = where[int(dst)]
                getattr(host[f][0], names[key])[j, row] = value
        self.states = tuple(_copy_rows(st, self._place(gather)) for st, gather in zip(self.states, gathers))
        self._host_inputs = tuple(host)
        self.inputs = self._place(self._host_inputs)

    def hparams(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The current values of vmapped numbers (by configuration key), over variants in caller order."""
        names = {f.key: f.name for f in numeric_fields(type(self.configs[0]))}
        return self._gather([{key: getattr(hp, names[key]) for key in keys} for hp, _ in self._host_inputs])

    def _finish(self, done: np.ndarray) -> dict[int, VariantResult]:
        """Results of the variants `done` (caller order) that have none yet; their part is
        evaluated once for all of them (one program call per part)."""
        d, finished, records = self.data, {}, self.records
        for family, final, state, inputs in zip(self.families, self._finals, self.states, self.inputs):
            for j, part in enumerate(family.parts):
                rows = [row for row, i in enumerate(part.index) if done[i] and i not in self._results]
                if not rows:
                    continue
                params, test, train, stopped = jax.device_get(final(state, inputs, jnp.int32(j), d.train, d.test))
                seconds, last = time.perf_counter() - self._start, records[-1]
                for row in rows:
                    i = int(part.index[row])
                    self._results[i] = VariantResult(
                        config=self.configs[i], best_epoch=int(last["best_epoch"][i]),
                        stopped_epoch=int(stopped[row]) or len(records),
                        epochs_trained=int(sum(r["trained"][i] for r in records)),
                        diverged=bool(last["diverged"][i]),
                        test={k: float(v[row]) for k, v in test.items() if k != "dead_fraction"},
                        train_final={k: float(v[row]) for k, v in train.items() if k != "dead_fraction"},
                        history=variant_history(records, i),
                        params=jax.tree_util.tree_map(lambda a, row=row: a[row], params),
                        train_seconds=seconds, pruned_at=self._pruned.get(i), lineage=self._lineage.get(i, []))
                    finished[i] = self._results[i]
        return finished
