"""The Trainer: many variants of one structure, or of several that share a program, trained
in the slots of one compiled program.

The other engine modules hold what one variant does (a step, an epoch's end, evaluation,
early stopping); the Trainer compiles that for many slots (`programs`): vmapped over a
leading variant axis, slots of different activations sharing one copy of the code
(`families`), optionally sharded over several devices, and runs the epochs. Variants wait in
their family's queue; a variant that stops (early stopping, divergence, its budget, a
search) is evaluated at once and its slot takes the next queued variant before the next
epoch (continuous batching), so a program never trains for its slowest member. Once the
queue is empty, the variants still training are moved into as few parts as they fill, and
idle parts cost nothing. Every variant counts its own steps and epochs, so its numbers do
not depend on the slot or the epoch it entered in. The host wakes once per epoch to receive
a small record. Nothing here touches files, MLflow or the terminal.

What the Trainer keeps is the slots' bookkeeping (which variant each slot holds, the
queues) and the loop: compile, run, stop, exploit. `families` lays the slots out and places
the variants in them, `programs` builds, shards and compiles the programs, and `results`
assembles what they return into records and results.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp.config import RunConfig, numeric_fields
from jaxmlp.data import Dataset
from jaxmlp.engine.families import Family, Slot, family_index, placement, structures_of
from jaxmlp.engine.layout import Layout, holding_layout
from jaxmlp.engine.programs import (Programs, compile_key, compiled, copy_rows, move_rows, placed_data, programs_of,
                                    slot_mesh, slot_sharding, stop_rows)
from jaxmlp.engine.results import GroupResult, VariantResult, over_variants, variant_history, variant_result
from jaxmlp.engine.structure import hparams_of, merge_key, structure_key, structure_of


#: Compiled programs by the static description of what they run (`programs.compile_key`): a
#: chunk of a group whose families equal an earlier chunk's (same layout) runs the programs
#: compiled for that one.
_COMPILED: dict[tuple, Programs] = {}


def release_compiled() -> None:
    """Forget the programs compiled in this process (the persistent compilation cache keeps
    them on disk): a long-lived process that trains many shapes, a notebook or a test session,
    frees their memory and the code mappings each one holds (a process has a bounded number)."""
    _COMPILED.clear()
    jax.clear_caches()


#: What an epoch's record measures on the validation split (absent without one).
VALIDATION_KEYS = ("val_loss", "val_accuracy", "dead_fraction")


@dataclasses.dataclass
class Snapshot:
    """A trainer's state after an epoch, on the host: what `Trainer.run(resume=...)` needs to
    go on as if never interrupted (the states' leaves, random keys as their data; the epoch
    records so far, without their finished results; the seconds trained; per family, which
    variant each slot holds (-1: none) and the queue; the variants finished so far)."""

    epoch: int
    leaves: list[np.ndarray]
    records: list[dict[str, Any]]
    seconds: float
    slots: list[np.ndarray] = dataclasses.field(default_factory=list)
    queues: list[list[int]] = dataclasses.field(default_factory=list)
    finished: list[int] = dataclasses.field(default_factory=list)


class SnapshotMismatch(ValueError):
    """A snapshot that does not fit the trainer (another layout, structure or variant count)."""


class Trainer:
    """Trains a set of variants in the slots of one compiled program.

    The `layout` sets the program's shape: families of parts of slots (default: a slot for
    every variant, `holding_layout`). Variants wait in their family's queue (in the order
    given, `frozen` ones never) and take free slots before each epoch; a slot's activation
    and initialiser are its variant's. With `devices > 1` every part's variant axis is
    sharded over that many devices. Iterate `run()` to receive one host-side record per
    epoch (arrays over variants, in the order given); `result` is set when the loop ends.
    """

    def __init__(self, configs: Sequence[RunConfig], data: Dataset, devices: int = 1, *,
                 layout: Layout | None = None, frozen: Sequence[bool] | None = None):
        self.configs = list(configs)
        self.frozen = np.zeros(len(self.configs), bool) if frozen is None else np.asarray(frozen, bool)
        if self.frozen.shape != (len(self.configs),):
            raise ValueError(f"frozen: {self.frozen.shape[0]} flags for {len(self.configs)} variants; give one per variant")
        if len({merge_key(c) for c in self.configs}) != 1:
            structure_of(self.configs, data)  # raises, naming the keys that differ
        self.layout = layout or holding_layout(self.configs, devices)
        self.structures = structures_of(self.configs, data, self.layout.features)
        self.families = Family.of(self.layout, data)
        self._family, self._selectors = placement(self.families, self.configs)  # per variant
        self._hp = hparams_of(self.configs)
        self.epochs = self.structures[0].epochs
        mesh = slot_mesh(devices)
        self._sharding = slot_sharding(mesh)
        self.data = placed_data(data, mesh)
        self._programs = programs_of(self.families, mesh)
        self._key = compile_key(self.families, devices, self.data)
        self.compile_seconds = 0.0
        self.reused_programs = False  # whether compile() found this trainer's programs already compiled
        self.result: GroupResult | None = None
        self._slots = [np.full(f.shape, -1) for f in self.families]  # the variant each slot holds
        self._slot_active = [np.zeros(f.shape, bool) for f in self.families]  # ... and whether it trains
        self._queues = [collections.deque(i for i in range(len(self.configs))
                                          if self._family[i] == f and not self.frozen[i])
                        for f in range(len(self.families))]
        self._host_inputs = tuple(self._empty_inputs(f) for f in range(len(self.families)))
        self.inputs = self._place(self._host_inputs)
        self.tracked_hparams: tuple[str, ...] = ()  # vmapped numbers each record carries (they may change)
        self._results: dict[int, VariantResult] = {}
        self._pending: dict[int, VariantResult] = {}
        self._pruned: dict[int, int] = {}
        self._lineage: dict[int, list[dict[str, int]]] = {}
        self._entered: dict[int, float] = {}

    def _place(self, tree):
        return jax.device_put(tree, self._sharding)

    def _empty_inputs(self, f: int):
        """A family's inputs with every slot empty: the numbers and selectors of its first
        variant (or the numbers of the layout's template), which an empty slot computes with
        and discards."""
        members = np.flatnonzero(self._family == f)
        if len(members):
            return self.families[f].empty_inputs(self.configs[members[0]], tuple(self._selectors[members[0]]))
        return self.families[f].empty_inputs(self.layout.families[f][0], (0, 0))

    def _states_shape(self):
        """The slots' states as shapes (`jax.ShapeDtypeStruct`), unplaced."""
        return jax.eval_shape(self._programs.init, self.inputs)

    def compile(self) -> float:
        """Compile every program ahead of time, or take them from an earlier Trainer with the
        same families; returns (and keeps) the compile seconds. The refill program also makes
        the first states (every slot that holds a variant refilled from a blank state)."""
        start = time.perf_counter()
        self.reused_programs = self._key in _COMPILED
        if not self.reused_programs:
            states = jax.tree_util.tree_map(
                lambda sd: jax.ShapeDtypeStruct(sd.shape, sd.dtype, sharding=self._sharding), self._states_shape())
            masks = self._place(tuple(np.zeros(f.shape, bool) for f in self.families))
            _COMPILED[self._key] = compiled(self._programs, states, self.inputs, masks, self.data)
        self._programs = _COMPILED[self._key]
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def _blank(self):
        """States of zeros (random keys of zero data), the shape of the slots' states, placed."""
        def zeros(st):
            key = jax.eval_shape(jax.random.key_data, st.key)
            return jax.tree_util.tree_map(lambda sd: jnp.zeros(sd.shape, sd.dtype), st._replace(key=None))._replace(
                key=jax.random.wrap_key_data(jnp.zeros(key.shape, key.dtype)))

        return self._place(tuple(zeros(st) for st in self._states_shape()))

    # -- slots and queues (host side) --
    def _where(self) -> dict[int, Slot]:
        """Each variant in a slot -> its slot."""
        return {int(i): Slot(f, j, row) for f, slots in enumerate(self._slots)
                for (j, row), i in np.ndenumerate(slots) if i >= 0}

    def _occupants(self) -> np.ndarray:
        """The variant of every slot, all families' slots flattened in order (-1: empty)."""
        return np.concatenate([s.reshape(-1) for s in self._slots])

    def _fill(self) -> tuple[list[int], list[np.ndarray]]:
        """Free slots take the next variants of their family's queue (on the host: slot map
        and inputs); returns the variants that entered and, per family, the slots they took."""
        started, masks = [], []
        host = [jax.tree_util.tree_map(np.copy, inputs) for inputs in self._host_inputs]
        now = time.perf_counter()
        for f, (slots, queue) in enumerate(zip(self._slots, self._queues)):
            mask = np.zeros(slots.shape, bool)
            for j, row in zip(*np.nonzero(slots < 0)):
                if not queue:
                    break
                i = queue.popleft()
                slots[j, row], mask[j, row], self._slot_active[f][j, row] = i, True, True
                self._seat(host[f], (j, row), i)
                self._entered[i] = now
                started.append(i)
            masks.append(mask)
        if started:
            self._host_inputs = tuple(host)
            self.inputs = self._place(self._host_inputs)
        return started, masks

    def _seat(self, inputs, slot: tuple[int, int], i: int) -> None:
        """Write variant `i`'s numbers and selectors into a family's host inputs at `slot` (part, row)."""
        hp, sel = inputs
        for name, column in zip(hp._fields, self._hp):
            getattr(hp, name)[slot] = column[i]
        sel.activation[slot], sel.init[slot] = self._selectors[i]
        sel.seed[slot], sel.frozen[slot] = self.configs[i].training.seed, False

    def _compact(self) -> None:
        """Where a family's queue is empty, move the variants still training into as few parts
        as they fill (a gather along the slot axes, random keys included), so the emptied
        parts are skipped: the tail of a program costs only the slots it needs."""
        for f, (family, slots, queue) in enumerate(zip(self.families, self._slots, self._queues)):
            moves = [] if queue else family.compaction(slots)
            if not moves:
                continue
            gather = np.arange(slots.size).reshape(slots.shape)
            vacated = np.zeros(slots.shape, bool)
            active = self._slot_active[f]
            hp, sel = jax.tree_util.tree_map(np.copy, self._host_inputs[f])
            for src, dst in moves:
                gather[dst] = gather[src]
                vacated[src] = True
                slots[dst], slots[src] = slots[src], -1
                active[dst], active[src] = active[src], False
                for a in (*hp, *sel):
                    a[dst] = a[src]
                sel.frozen[src] = True
            self._host_inputs = tuple(inp if g != f else (hp, sel) for g, inp in enumerate(self._host_inputs))
            self.inputs = self._place(self._host_inputs)
            states = list(self.states)
            states[f] = self._place(move_rows(states[f], self._place(gather), self._place(vacated)))
            self.states = tuple(states)

    def run(self, resume: Snapshot | None = None) -> Iterator[dict[str, Any]]:
        """Train until every variant has stopped, one record per epoch of the program.

        Before each epoch free slots take the next queued variants ("started" in the
        record: their indices in the order given). A variant that stopped is evaluated at
        once (test metrics of its selected parameters) and leaves its slot: the epoch's
        record maps the variants that stopped in it (their index in the order given) to
        their `VariantResult`s under "finished", so the caller can log them while the others
        train. Each record counts the slots the epoch ran ("slot_epochs": every slot of the
        parts that trained). Between two records the caller may `stop` variants or let some
        `exploit` others. `result` holds every variant that is not frozen, at the end, in
        the order given. With `resume` (a `snapshot()` of a trainer of the same variants and
        layout) training goes on from the snapshot, every variant's numbers as in an
        uninterrupted run; variants finished in the snapshot but not frozen now train again,
        those frozen now but training in the snapshot train on unreported. Raises
        `SnapshotMismatch` before training when the snapshot does not fit."""
        if not isinstance(self._programs.epoch, jax.stages.Compiled):
            self.compile()
        d = self.data
        n = len(self.configs)
        self._last = {"diverged": np.zeros(n, bool), "best_epoch": np.zeros(n, np.int32)}
        if resume is None:
            self.records: list[dict[str, Any]] = []
            started, masks = self._fill()
            self.states = self._programs.refill(self._blank(), self.inputs, self._place(tuple(masks)))
        else:
            self.states = self._restored(resume)
            started = [i for i in map(int, self._occupants()) if i >= 0 and not self.frozen[i]]
        self._start = time.perf_counter() - (resume.seconds if resume else 0.0)
        while True:
            if self.records:
                self._compact()
                started, masks = self._fill()
                if started:
                    self.states = self._programs.refill(self.states, self.inputs, self._place(tuple(masks)))
            busy = [a.copy() for a in self._slot_active]
            if not any(b.any() for b in busy):
                break
            tic = time.perf_counter()
            self.states, per_family = self._programs.epoch(self.states, self.inputs, d.train, d.val)
            per_family = jax.device_get(per_family)
            record = over_variants(per_family, self._occupants(), self._last)
            if not len(d.val):  # no validation split: no validation metrics
                for key in VALIDATION_KEYS:
                    del record[key]
            record["epoch"] = len(self.records) + 1
            record["epoch_seconds"] = time.perf_counter() - tic
            record["started"] = started
            record["slot_epochs"] = self._slot_epochs(busy)
            if self.tracked_hparams:
                record["hparams"] = self.hparams(self.tracked_hparams)
            self.records.append(record)
            stopped = []
            for f, r in enumerate(per_family):
                now = np.asarray(r["active"]) & (self._slots[f] >= 0)
                stopped += [int(i) for i in self._slots[f][busy[f] & ~now]]
                self._slot_active[f] = now
            pending, self._pending = self._pending, {}
            record["finished"] = {**pending, **self._finish(stopped)}
            yield record
        self._finish([i for i in range(n) if not self.frozen[i] and i not in self._results])
        self.result = GroupResult(self.structures, [self._results[i] for i in sorted(self._results)],
                                  self.compile_seconds, time.perf_counter() - self._start)

    def add(self, configs: Sequence[RunConfig]) -> list[int]:
        """Queue more variants into this trainer, between two records of `run` (or before it):
        each must share the program's structure up to its switched keys and be covered by the
        layout (its activation, initialiser and features); refused otherwise, naming the key.
        Returns their indices; they take free slots before the next epoch, counting their own
        epochs, so their numbers equal those of the same variants given at the start."""
        configs, first = list(configs), dict(merge_key(self.configs[0]))
        for c in configs:
            differ = sorted(k for k, v in merge_key(c) if first.get(k) != v)
            if differ:
                raise ValueError(f"a variant added to this program must share its structure; it differs in "
                                 f"{', '.join(differ)}")
            missing = self.families[family_index(self.families, c)].missing_features(c)
            if missing:
                raise ValueError(f"{', '.join(missing)}: this program was compiled without it (the layout's "
                                 f"features); plan the layout with a variant that needs it")
        family, selectors = placement(self.families, configs)
        known = {structure_key(c) for c in self.configs}
        self.structures += structures_of([c for c in configs if structure_key(c) not in known], self.data,
                                         self.layout.features)
        start = len(self.configs)
        self.configs += configs
        self.frozen = np.concatenate([self.frozen, np.zeros(len(configs), bool)])
        self._family = np.concatenate([self._family, family])
        self._selectors = np.concatenate([self._selectors, selectors])
        self._hp = type(self._hp)(*(np.concatenate([a, b]) for a, b in zip(self._hp, hparams_of(configs))))
        if hasattr(self, "_last"):
            self._last = {k: np.concatenate([a, np.zeros(len(configs), a.dtype)]) for k, a in self._last.items()}
        indices = list(range(start, len(self.configs)))
        for i, f in zip(indices, family):
            self._queues[f].append(i)
        return indices

    @property
    def active(self) -> np.ndarray:
        """Per variant (order given): training in a slot or waiting in a queue (not frozen)."""
        out = np.zeros(len(self.configs), bool)
        out[[i for q in self._queues for i in q]] = True
        for slots, active in zip(self._slots, self._slot_active):
            out[slots[active]] = True
        return out & ~self.frozen

    def _slot_epochs(self, busy: Sequence[np.ndarray]) -> int:
        """Slots of the parts that train this epoch (a part with one busy slot trains them all;
        a program of one part trains it until the end)."""
        if sum(f.n_parts for f in self.families) == 1:
            return self.families[0].part_size
        return sum(int(b.any(axis=1).sum()) * f.part_size for f, b in zip(self.families, busy))

    def snapshot(self) -> Snapshot:
        """The state after the last epoch `run` yielded, on the host (between two records).
        Not under an adaptive search: its decisions live outside the trainer."""
        if self._pruned or self._lineage or self.tracked_hparams:
            raise ValueError("a trainer under an adaptive search cannot be snapshotted")
        states = tuple(st._replace(key=jax.random.key_data(st.key)) for st in self.states)
        records = [{k: v for k, v in r.items() if k != "finished"} for r in self.records]
        # copies: on a CPU the host arrays could alias buffers the next epoch overwrites (donated)
        leaves = [np.array(a, copy=True) for a in jax.device_get(jax.tree_util.tree_leaves(states))]
        return Snapshot(len(self.records), leaves, records, time.perf_counter() - self._start,
                        slots=[s.copy() for s in self._slots], queues=[list(q) for q in self._queues],
                        finished=sorted(set(self._results) | set(self._pending)))

    def _restored(self, snap: Snapshot):
        """The device states of a snapshot, checked leaf by leaf against this trainer's; the
        slot map and queues as they were, variants finished there but not frozen now queued first."""
        shapes = self._states_shape()
        with_key_data = tuple(st._replace(key=jax.eval_shape(jax.random.key_data, st.key)) for st in shapes)
        expected, treedef = jax.tree_util.tree_flatten(with_key_data)
        found = [(a.shape, str(a.dtype)) for a in snap.leaves]
        fits = [(e.shape, str(e.dtype)) for e in expected] == found and 0 < snap.epoch == len(snap.records) \
            and [s.shape for s in snap.slots] == [f.shape for f in self.families] \
            and all(-1 <= int(i) < len(self.configs) for s in snap.slots for i in s.reshape(-1)) \
            and len(snap.queues) == len(self.families)
        if not fits:
            raise SnapshotMismatch(f"the snapshot (epoch {snap.epoch}, {len(snap.leaves)} arrays) does not fit "
                                   f"these {len(self.configs)} variants' programs ({len(expected)} arrays, "
                                   f"{self.epochs} epochs)")
        self.records = [dict(r) for r in snap.records]
        self._slots = [np.array(s, int) for s in snap.slots]
        again = [i for i in snap.finished if not self.frozen[i]]
        for r in self.records:  # their earlier epochs are not theirs any more
            r["trained"] = r["trained"].copy()
            r["trained"][again] = False
        self._queues = [collections.deque([i for i in again if self._family[i] == f]
                                          + [i for i in q if not self.frozen[i]])
                        for f, q in enumerate(snap.queues)]
        states = jax.tree_util.tree_unflatten(treedef, snap.leaves)
        host = []
        for f, (hp, sel) in enumerate(self._empty_inputs(f) for f in range(len(self.families))):
            for slot, i in np.ndenumerate(self._slots[f]):
                if i >= 0:
                    self._seat((hp, sel), slot, i)
            host.append((hp, sel))
            self._slot_active[f] = np.asarray(states[f].active) & (self._slots[f] >= 0)
        self._host_inputs = tuple(host)
        self.inputs = self._place(self._host_inputs)
        for i in range(len(self.configs)):
            self._entered[i] = time.perf_counter()
        return self._place(tuple(st._replace(key=jax.random.wrap_key_data(st.key)) for st in states))

    # -- between two epochs: adaptive search (see `jaxmlp.engine.search`) --
    def _masks(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Per family, a bool mask [part, variant] of the slots that hold the variants `indices`."""
        wanted = np.asarray(list(indices), int)
        return [np.isin(slots, wanted) for slots in self._slots]

    def stop(self, indices: Sequence[int]) -> dict[int, VariantResult]:
        """Stop the variants among `indices` (caller order) that train in a slot now, as early
        stopping would have at their last epoch: their selected parameters are evaluated at
        once and their slots freed; the results come back here and with the next record's
        "finished"."""
        training = set(self._training())
        indices = [int(i) for i in indices if int(i) in training]
        if not indices:
            return {}
        masks = self._masks(indices)
        self.states = tuple(stop_rows(st, self._place(mask)) for st, mask in zip(self.states, masks))
        for active, mask in zip(self._slot_active, masks):
            active &= ~mask
        last = self.records[-1]["variant_epoch"]
        self._pruned.update({i: int(last[i]) for i in indices})
        finished = self._finish(indices)
        self._pending.update(finished)
        return finished

    def _training(self) -> list[int]:
        return [int(i) for slots, active in zip(self._slots, self._slot_active) for i in slots[active]]

    def exploit(self, sources: Mapping[int, int], values: Mapping[str, Mapping[int, float]]) -> None:
        """Each member `dst` of `sources` (caller order) becomes a copy of its source: the whole
        training state (parameters, optimizer state, best parameters, early stopping) but its
        own random key, and every vmapped number; its seed (its identity, not a number) stays
        its own. Then `values` (configuration key -> member -> value) are set. Runs on the
        device (a gather along the slot axes)."""
        where = self._where()
        gathers = [np.arange(slots.size).reshape(slots.shape) for slots in self._slots]
        host = [(jax.tree_util.tree_map(np.copy, hp), sel) for hp, sel in self._host_inputs]
        names = {f.key: f.name for f in numeric_fields()}
        epoch = len(self.records)
        for dst, src in sources.items():
            to, of = where[int(dst)], where[int(src)]
            if to.family != of.family:
                raise ValueError(f"variant {dst} cannot copy variant {src}: they train in different families")
            gathers[to.family][to.cell] = gathers[of.family][of.cell]
            for column in host[to.family][0]:
                column[to.cell] = column[of.cell]
            self._lineage.setdefault(int(dst), []).append({"epoch": epoch, "source": int(src)})
        for key, members in values.items():
            for dst, value in members.items():
                to = where[int(dst)]
                getattr(host[to.family][0], names[key])[to.cell] = value
        self.states = tuple(copy_rows(st, self._place(gather)) for st, gather in zip(self.states, gathers))
        self._host_inputs = tuple(host)
        self.inputs = self._place(self._host_inputs)

    def hparams(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The current values of vmapped numbers (by configuration key) of the variants in slots,
        over variants in caller order (NaN for the others)."""
        names = {f.key: f.name for f in numeric_fields()}
        occupants = self._occupants()
        held = occupants >= 0
        out = {}
        for key in keys:
            flat = np.concatenate([np.asarray(getattr(hp, names[key]), float).reshape(-1) for hp, _ in self._host_inputs])
            values = np.full(len(self.configs), np.nan)
            values[occupants[held]] = flat[held]
            out[key] = values
        return out

    def _finish(self, indices: Sequence[int]) -> dict[int, VariantResult]:
        """Results of the variants `indices` (caller order) that are in a slot and have none
        yet, and their slots freed; each part holding some is evaluated once for all of them
        (one program call per part). Frozen variants leave their slots unreported."""
        d, finished = self.data, {}
        wanted = {int(i) for i in indices}
        for f, (final, slots) in enumerate(zip(self._programs.finals, self._slots)):
            for j in range(slots.shape[0]):
                rows = [row for row in range(slots.shape[1]) if int(slots[j, row]) in wanted]
                if not rows:
                    continue
                reported = [row for row in rows if not self.frozen[slots[j, row]] and slots[j, row] not in self._results]
                if reported:
                    params, test, train, ends = jax.device_get(
                        final(self.states[f], self.inputs[f], jnp.int32(j), d.train, d.val, d.test))
                    now = time.perf_counter()
                    for row in reported:
                        i = int(slots[j, row])
                        self._results[i] = finished[i] = variant_result(
                            self.configs[i], row, params, test, train, ends, history=variant_history(self.records, i),
                            train_seconds=now - self._entered.get(i, self._start), pruned_at=self._pruned.get(i),
                            lineage=self._lineage.get(i, []))
                for row in rows:
                    slots[j, row] = -1
                    self._slot_active[f][j, row] = False
        return finished
