"""The Trainer: K variants of one structure, or of several that share a program, trained at once.

The other engine modules hold what one variant does (a step, an epoch's end, evaluation,
early stopping); the Trainer compiles that for many variants (`programs`): vmapped over a
leading variant axis, parts of different activations sharing one copy of the code
(`families`), optionally sharded over several devices, and runs the epochs. The host wakes
once per epoch to receive a small record; a variant that stopped is evaluated at once.
Nothing here touches files, MLflow or the terminal.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.config import RunConfig, numeric_fields
from jaxmlp.data import Dataset, Split
from jaxmlp.engine.families import Family, Part
from jaxmlp.engine.layout import Layout
from jaxmlp.engine.programs import copy_rows, program_epoch, program_final, program_init, stop_rows
from jaxmlp.engine.results import GroupResult, VariantResult, variant_history
from jaxmlp.engine.structure import hparams_of, merge_key, structure_key, structure_of


#: Compiled programs by the static description of what they run: a chunk of a group whose
#: families equal an earlier chunk's (same layout) runs the programs compiled for that one.
_COMPILED: dict[tuple, tuple] = {}

#: What an epoch's record measures on the validation split (absent without one).
VALIDATION_KEYS = ("val_loss", "val_accuracy", "dead_fraction")


@dataclasses.dataclass
class Snapshot:
    """A trainer's state after an epoch, on the host: what `Trainer.run(resume=...)` needs to
    go on as if never interrupted (the states' leaves, random keys as their data; the epoch
    records so far, without their finished results; the seconds trained)."""

    epoch: int
    leaves: list[np.ndarray]
    records: list[dict[str, Any]]
    seconds: float


class SnapshotMismatch(ValueError):
    """A snapshot that does not fit the trainer (another layout, structure or variant count)."""


class Trainer:
    """Trains a set of variants in one compiled program.

    Variants are split into parts of one structure each (they may differ in activation
    and initialiser, see `merge_key`); each part is vmapped, and all parts run in the same
    jitted epoch, parts that differ only in activation and initialiser sharing one copy of
    the code (`Family`). With `devices > 1` every part's variant axis is sharded over that
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
                parts.append(Part(structure_of(group, data, features), np.asarray(piece), hparams_of(group),
                                   self.frozen[padded]))

        def filler_part(template: RunConfig) -> Part:
            group = [template] * layout.part_size
            return Part(structure_of(group, data, features), np.zeros(0, int), hparams_of(group), np.ones(size, bool))

        self.families = tuple(Family.of(parts, layout, filler_part))
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
        programs = [partial(program_init, self.families), partial(program_epoch, self.families),
                    *(partial(program_final, f) for f in self.families)]
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
        self._init_fn = programs[0]  # (its output's shapes check a snapshot)
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
        specs = [((v,), v), ((v, v, P(), P(), P()), (v, v))] + [((v, v, P(), P(), P(), P()), P("variants"))] * len(programs[2:])
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
            finals = [pool.submit(f.lower(st, inp, jnp.int32(0), d.train, d.val, d.test).compile)
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

    def run(self, resume: Snapshot | None = None) -> Iterator[dict[str, Any]]:
        """Train until no variant is active or the epoch budget is spent, one record per epoch.

        A variant that stopped is evaluated at once (test metrics of its selected
        parameters, which no longer change): the epoch's record maps the variants that
        stopped in it (their index in the order given) to their `VariantResult`s under
        "finished", so the caller can log them while the others train. Between two records
        the caller may `stop` variants or let some `exploit` others. `result` holds every
        variant that is not frozen, at the end, in the order given. With `resume` (a
        `snapshot()` of a trainer of the same variants and layout) training goes on from
        the snapshot's epoch, every number as in an uninterrupted run; variants frozen now
        but active in the snapshot train on unreported. Raises `SnapshotMismatch` before
        training when the snapshot does not fit."""
        if not isinstance(self._epoch, jax.stages.Compiled):
            self.compile()
        d = self.data
        if resume is None:
            self.states = self._place(self._init(self.inputs))
            self.records: list[dict[str, Any]] = []
            self.active = ~self.frozen
        else:
            self.states = self._restored(resume)
            self.records = [dict(r) for r in resume.records]
            self.active = np.asarray(self.records[-1]["active"]) & ~self.frozen
        self._start = time.perf_counter() - (resume.seconds if resume else 0.0)
        for epoch in range(len(self.records) + 1, self.epochs + 1):
            if not self.active.any():
                break
            tic = time.perf_counter()
            self.states, per_family = self._epoch(self.states, self.inputs, jnp.int32(epoch), d.train, d.val)
            record = self._gather(jax.device_get(per_family))
            if not len(d.val):  # no validation split: no validation metrics
                for key in VALIDATION_KEYS:
                    del record[key]
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

    def snapshot(self) -> Snapshot:
        """The state after the last epoch `run` yielded, on the host (between two records).
        Not under an adaptive search: its decisions live outside the trainer."""
        if self._pruned or self._lineage or self.tracked_hparams:
            raise ValueError("a trainer under an adaptive search cannot be snapshotted")
        states = tuple(st._replace(key=jax.random.key_data(st.key)) for st in self.states)
        records = [{k: v for k, v in r.items() if k != "finished"} for r in self.records]
        # copies: on a CPU the host arrays could alias buffers the next epoch overwrites (donated)
        leaves = [np.array(a, copy=True) for a in jax.device_get(jax.tree_util.tree_leaves(states))]
        return Snapshot(len(self.records), leaves, records, time.perf_counter() - self._start)

    def _restored(self, snap: Snapshot):
        """The device states of a snapshot, checked leaf by leaf against this trainer's."""
        shapes = jax.eval_shape(self._init_fn, self.inputs)
        with_key_data = tuple(st._replace(key=jax.eval_shape(jax.random.key_data, st.key)) for st in shapes)
        expected, treedef = jax.tree_util.tree_flatten(with_key_data)
        found = [(a.shape, str(a.dtype)) for a in snap.leaves]
        if [(e.shape, str(e.dtype)) for e in expected] != found or not 0 < snap.epoch <= self.epochs \
                or len(snap.records) != snap.epoch:
            raise SnapshotMismatch(f"the snapshot (epoch {snap.epoch}, {len(snap.leaves)} arrays) does not fit "
                                   f"these {len(self.configs)} variants' programs ({len(expected)} arrays, "
                                   f"{self.epochs} epochs)")
        states = jax.tree_util.tree_unflatten(treedef, snap.leaves)
        return self._place(tuple(st._replace(key=jax.random.wrap_key_data(st.key)) for st in states))

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
        self.states = tuple(stop_rows(st, self._place(mask), jnp.int32(epoch))
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
        self.states = tuple(copy_rows(st, self._place(gather)) for st, gather in zip(self.states, gathers))
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
                params, test, train, stopped = jax.device_get(final(state, inputs, jnp.int32(j), d.train, d.val, d.test))
                seconds, last = time.perf_counter() - self._start, records[-1]
                for row in rows:
                    i = int(part.index[row])
                    self._results[i] = VariantResult(
                        config=self.configs[i], best_epoch=int(last["best_epoch"][i]),
                        stopped_epoch=int(stopped[row]) or len(records),
                        epochs_trained=int(sum(r["trained"][i] for r in records)),
                        diverged=bool(last["diverged"][i]),
                        test={k: float(v[row]) for k, v in test.items() if np.ndim(v[row]) == 0},
                        train_final={k: float(v[row]) for k, v in train.items() if np.ndim(v[row]) == 0},
                        reliability=test["reliability"][row].tolist() if "reliability" in test else [],
                        history=variant_history(records, i),
                        params=jax.tree_util.tree_map(lambda a, row=row: a[row], params),
                        train_seconds=seconds, pruned_at=self._pruned.get(i), lineage=self._lineage.get(i, []),
                        test_dead_fraction=[float(f) for f in test["dead_fraction"][row]])
                    finished[i] = self._results[i]
        return finished
