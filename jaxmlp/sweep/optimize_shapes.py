"""The shapes of an optimised sweep: settings that differ in structure (`model.hidden`,
`training.batch_size`, ...) need a compiled program each.

A structural key in `optimize.params` must be a `choice`, so that the space proposes a finite
set of shapes (at most MAX_SHAPES): each is one program of its own in the study (`Programs`),
its slots and memory planned up front. A shape's program runs while a proposal of that shape
trains; once its last trial stops it goes idle and costs nothing, and the next proposal of
that shape starts it again with the programs compiled the first time (`Trainer.compile`
reuses programs of the same families). A proposal of a shape whose program is not running
is not held back: its program starts before the next epoch, and its variants take their
slots then, as a proposal of a running shape would, so the study's proposals do not depend
on which programs happened to run. All programs run epoch by epoch together, their records
merged into one over the study's variants (numbered in the order they joined).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from jaxmlp.config import RunConfig, load_config, numeric_fields, set_dotted, switched_keys
from jaxmlp.data import Dataset
from jaxmlp.engine import GroupResult, Layout, Trainer, VariantResult
from jaxmlp.sweep.distributions import checked
from jaxmlp.sweep.errors import SweepError

#: Programs an optimised sweep may need at most (structural choices multiplied together).
MAX_SHAPES = 8

#: A shape: the structural parameters' values, by key, in file order (empty without any).
Shape = tuple[tuple[str, Any], ...]


def structural_keys(params: Mapping[str, Any]) -> list[str]:
    """The keys of `params` that are neither vmapped numbers nor switched (activation, initialiser)."""
    vmapped = {f.key for f in numeric_fields()} | set(switched_keys())
    return [key for key in params if key not in vmapped]


def check_shapes(source: str, params: Mapping[str, Any], base: RunConfig) -> None:
    """Refuse structural parameters the study cannot give a program each: ranges (`int`,
    `uniform`, `loguniform`: too many shapes), data keys (one dataset for all programs), and
    more than MAX_SHAPES shapes in all."""
    for key in structural_keys(params):
        kind, _ = checked(source, key, params[key], "optimize.params")
        if key.startswith("data."):
            raise SweepError(f"{source}: optimize.params.{key}: the study's programs share one dataset; "
                             "fix the key in base, or compare its values in one sweep each")
        if kind != "choice":
            raise SweepError(f"{source}: optimize.params.{key}: structural (each value needs a program of its "
                             f"own), so it must be a choice, not {kind}; list the values to try, e.g. "
                             "{choice: [...]}")
    n = len(shapes_of(params, base))
    if n > MAX_SHAPES:
        keys = ", ".join(structural_keys(params))
        raise SweepError(f"{source}: optimize.params: {keys} make {n} shapes, each a program of its own; "
                         f"give at most {MAX_SHAPES} (fewer choices)")


def shapes_of(params: Mapping[str, Any], base: RunConfig) -> list[Shape]:
    """Every shape the space can propose: the product of the structural choices (a conditional
    one may also keep its base value)."""
    flat = base.flat()
    keys = structural_keys(params)
    options = [list(params[k].choice) + ([flat[k]] if params[k].when and flat[k] not in params[k].choice else [])
               for k in keys]
    return list(dict.fromkeys(tuple(zip(keys, map(_hashable, values))) for values in itertools.product(*options)))


def shape_of(config: RunConfig, keys: Sequence[str]) -> Shape:
    """A configuration's shape: its values of the structural `keys`."""
    flat = config.flat()
    return tuple((k, _hashable(flat[k])) for k in keys)


def _hashable(value: Any) -> Any:
    """A value as a shape keeps it: lists (`model.hidden`) as tuples."""
    return tuple(map(_hashable, value)) if isinstance(value, (list, tuple)) else value


def reshaped(config: RunConfig, shape: Shape, source: str) -> RunConfig:
    """`config` with the structural values of `shape` (itself where it has them already)."""
    raw = config.to_dict()
    for key, value in shape:
        raw = set_dotted(raw, key, list(value) if isinstance(value, tuple) else value)
    return load_config(raw, source=source)


def shape_label(shape: Shape) -> str:
    return " ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in shape) or "(one shape)"


def joined(layouts: Sequence[Layout]) -> Layout:
    """The study's programs as one layout (their families side by side): its slots, parts and
    fingerprint; `split` takes it apart again."""
    if len(layouts) == 1:
        return layouts[0]
    sizes = [layout.family_shape(k)[1] for layout in layouts for k in range(len(layout.families))]
    return dataclasses.replace(layouts[0], part_size=max(sizes), families=sum((lo.families for lo in layouts), ()),
                               part_sizes=tuple(sizes))


def split(layout: Layout, keys: Sequence[str]) -> dict[Shape, Layout]:
    """Each shape's layout, from the study's joined one (its families grouped by their template's shape)."""
    by_shape: dict[Shape, list[int]] = {}
    for k, (template, _) in enumerate(layout.families):
        by_shape.setdefault(shape_of(template, keys), []).append(k)
    if len(by_shape) == 1:
        return {shape: layout for shape in by_shape}
    return {shape: dataclasses.replace(
        layout, families=tuple(layout.families[k] for k in ks),
        part_sizes=tuple(layout.family_shape(k)[1] for k in ks),
        part_size=max(layout.family_shape(k)[1] for k in ks)) for shape, ks in by_shape.items()}


class Programs:
    """The study's programs, one per shape (`layouts`), run epoch by epoch together; variants
    are numbered in the order they are added, and each epoch's records are merged into one
    over them (what `Trainer.run` yields for one program)."""

    def __init__(self, layouts: Mapping[Shape, Layout], keys: Sequence[str], data: Dataset, devices: int):
        self.layouts, self.keys, self.data, self.devices = dict(layouts), list(keys), data, devices
        self.running: dict[Shape, tuple[Trainer, Iterator[dict[str, Any]] | None, list[int]]] = {}
        self.where: dict[int, tuple[Shape, int]] = {}  # variant -> its shape and index in that trainer
        self.results: dict[int, VariantResult] = {}
        self.started: list[Trainer] = []  # every program started, in order (a compile each, or reused)
        self.epoch = 0
        self._kept = {"diverged": np.zeros(0, bool), "best_epoch": np.zeros(0, np.int32)}  # last seen

    @property
    def n(self) -> int:
        return len(self.where)

    def add(self, configs: Sequence[RunConfig]) -> list[int]:
        """Queue variants of one shape into its program (started before the next epoch where it
        is not running); returns their numbers."""
        if not configs:
            return []
        shape = shape_of(configs[0], self.keys)
        if shape not in self.running:
            trainer = Trainer(configs, self.data, self.devices, layout=self.layouts[shape])
            self.running[shape] = (trainer, None, [])
            local = list(range(len(configs)))
        else:
            local = self.running[shape][0].add(configs)
        numbers = list(range(self.n, self.n + len(configs)))
        self.running[shape][2].extend(numbers)
        self.where.update({g: (shape, i) for g, i in zip(numbers, local)})
        for key, kept in self._kept.items():
            self._kept[key] = np.concatenate([kept, np.zeros(len(configs), kept.dtype)])
        return numbers

    def compile(self) -> list[float]:
        """Start the programs added since the last epoch (compiled, or reused); their compile seconds."""
        seconds = []
        for shape, (trainer, run, numbers) in self.running.items():
            if run is None:
                seconds.append(trainer.compile())
                self.started.append(trainer)
                self.running[shape] = (trainer, trainer.run(), numbers)
        return seconds

    def step(self) -> dict[str, Any] | None:
        """One epoch of every running program, as one record (None once none trains)."""
        parts = []
        for shape, (trainer, run, numbers) in list(self.running.items()):
            record = next(run, None)
            if record is None:  # its variants all stopped and none was added: idle from now on
                self.results.update({numbers[i]: r for i, r in enumerate(trainer.result.variants)})
                del self.running[shape]
            else:
                parts.append((record, np.asarray(numbers)))
        if not parts:
            return None
        self.epoch += 1
        return self._merged(parts)

    def _merged(self, parts: list[tuple[dict[str, Any], np.ndarray]]) -> dict[str, Any]:
        """The programs' records of one epoch as one over all variants: per-variant arrays in
        their numbers' order (variants of idle programs: not trained, NaN metrics, divergence
        and best epoch as last seen), the started and finished by number, slot-epochs and
        seconds added up."""
        out: dict[str, Any] = {"epoch": self.epoch, "started": [], "finished": {}, "slot_epochs": 0,
                               "epoch_seconds": 0.0}
        for record, numbers in parts:
            out["started"] += [int(numbers[i]) for i in record["started"]]
            out["finished"].update({int(numbers[i]): r for i, r in record["finished"].items()})
            out["slot_epochs"] += record["slot_epochs"]
            out["epoch_seconds"] += record["epoch_seconds"]
            for key, value in record.items():
                if isinstance(value, np.ndarray):
                    out[key] = self._scatter(out.get(key), key, value, numbers)
        for key in self._kept:
            self._kept[key] = out[key].copy()
        return out

    def _scatter(self, into: np.ndarray | None, key: str, value: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        """`value` (over one program's variants) written at `numbers` into an array over all
        (trailing axes padded where programs differ, e.g. dead units per layer of another depth)."""
        if into is None:
            fill = False if value.dtype == bool else (0 if value.dtype.kind in "iu" else np.nan)
            into = self._kept[key].copy() if key in self._kept else np.full((self.n, *value.shape[1:]), fill,
                                                                             value.dtype)
        if into.shape[1:] != value.shape[1:]:
            wide = tuple(max(a, b) for a, b in zip(into.shape[1:], value.shape[1:]))
            pad = lambda a: np.pad(a, [(0, 0)] + [(0, w - s) for w, s in zip(wide, a.shape[1:])],  # noqa: E731
                                   constant_values=np.nan)
            into, value = pad(into), pad(value)
        into[numbers] = value
        return into

    def stop(self, numbers: Sequence[int]) -> dict[int, VariantResult]:
        """Stop the variants `numbers` that train now (a search's pruning), in their programs."""
        stopped = {}
        for shape, (trainer, _, all_numbers) in self.running.items():
            local = [self.where[g][1] for g in numbers if self.where[g][0] == shape]
            stopped.update({all_numbers[i]: r for i, r in trainer.stop(local).items()})
        return stopped

    def result(self, compile_seconds: float, seconds: float) -> GroupResult:
        """Every variant's result, in their numbers' order (the programs still running end now)."""
        for trainer, run, numbers in self.running.values():
            if run is not None:
                for _ in run:
                    pass
                self.results.update({numbers[i]: r for i, r in enumerate(trainer.result.variants)})
        return GroupResult([s for t in self.started for s in t.structures],
                           [self.results[i] for i in sorted(self.results)], compile_seconds, seconds)
