"""Where a sweep's compiled programs train: in this process (`LocalExecutor`), or on a Ray
cluster (`jaxmlp.sweep.ray_executor`). Either way a program is a `ProgramTask` of plain,
picklable values; the runner hands an executor every program first (`submit`: a cluster
starts them all), then reads each program's stream of events in turn (`run`) and logs them:

    ("compiled", chunk, seconds)    a chunk's programs are ready (compiled or reused)
    ("resumed", chunk, epoch)       a chunk goes on from its snapshot after `epoch` (local only)
    ("notice", chunk, text)         something the user should know (a snapshot not used)
    ("epoch", chunk, record)        one epoch of a chunk (`Trainer.run`'s record)
    ("result", chunk, (indices, result))   the chunk's end: its trained variants' results
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator

import numpy as np

from jaxmlp.config import RunConfig
from jaxmlp.data import Dataset, dataset_key
from jaxmlp.engine import Layout, SnapshotMismatch, Trainer
from jaxmlp.engine.search import Search, run_search
from jaxmlp.sweep.snapshots import Snapshots

Event = tuple[str, int, Any]


@dataclasses.dataclass(frozen=True)
class ProgramTask:
    """One compiled program's chunks: each chunk's configurations (in its layout's order),
    which of them ride along frozen, and its devices; the search the chunks train under, with
    a setting and a population id per variant; per chunk, the name of its snapshot (none
    under a search, or where snapshots are off)."""

    chunks: tuple[tuple[RunConfig, ...], ...]
    frozen: tuple[tuple[bool, ...], ...]
    layout: Layout
    devices: int
    search: Search | None = None
    settings: tuple[np.ndarray, ...] = ()
    populations: tuple[np.ndarray, ...] = ()
    snapshot_keys: tuple[str, ...] = ()


def train_program(task: ProgramTask, data: Dataset, snapshots: Snapshots | None = None) -> Iterator[Event]:
    """Train a program's chunks on `data`: one after another, or together under the search;
    with `snapshots` (and the task's snapshot keys), each chunk from its snapshot if it has
    one, written as it trains (`_snapshotted`)."""
    trainers = [Trainer(list(configs), data, task.devices, layout=task.layout, frozen=frozen)
                for configs, frozen in zip(task.chunks, task.frozen)]
    for k, t in enumerate(trainers):
        yield "compiled", k, t.compile()
    if task.search is None:
        for k, t in enumerate(trainers):
            if snapshots is not None and task.snapshot_keys:
                yield from _snapshotted(k, t, snapshots, task.snapshot_keys[k])
            else:
                for record in t.run():
                    yield "epoch", k, record
            yield "result", k, _result(t)
        return
    for k, record in run_search(trainers, task.search, list(task.settings), list(task.populations)):
        yield "epoch", k, record
    for k, t in enumerate(trainers):
        yield "result", k, _result(t)


def _snapshotted(k: int, t: Trainer, snapshots: Snapshots, key: str) -> Iterator[Event]:
    """A chunk's epochs, from its snapshot where one fits; the snapshot rewritten after the
    first epoch that ends `snapshots.every` seconds after the last write, and when the reader
    stops early (Ctrl-C, SIGTERM, a failure), removed at the chunk's end."""
    try:
        resume = snapshots.load(key)
    except ValueError as err:
        resume = None
        yield "notice", k, f"{err}; the chunk starts over"
    records = t.run(resume=resume)
    try:
        first = next(records, None)
    except SnapshotMismatch as err:
        yield "notice", k, f"{snapshots.path(key)}: {err}; the chunk starts over"
        records = t.run()
        first = next(records, None)
    else:
        if resume is not None:
            yield "resumed", k, resume.epoch
    saved, written = resume.epoch if resume else 0, time.monotonic()
    record = first
    try:
        while record is not None:
            if time.monotonic() - written >= snapshots.every and t.active.any():
                snapshots.save(key, t.snapshot())
                saved, written = record["epoch"], time.monotonic()
            yield "epoch", k, record
            record = next(records, None)
    except GeneratorExit:  # the reader stopped between two epochs: keep what was trained
        if t.records and len(t.records) > saved and t.active.any():
            snapshots.save(key, t.snapshot())
        raise
    snapshots.discard(key)


def _result(t: Trainer) -> tuple[list[int], Any]:
    return [i for i, frozen in enumerate(t.frozen) if not frozen], t.result


class LocalExecutor:
    """Programs train in this process, on its devices; datasets are placed on the device once."""

    name = "local"

    def __init__(self, snapshots: Snapshots | None = None) -> None:
        self._datasets: dict[str, Dataset] = {}
        self.snapshots = snapshots

    def submit(self, tasks: list[ProgramTask]) -> None:
        """Nothing ahead: the programs share this process's devices and train one after another."""

    def run(self, task: ProgramTask, data: Dataset) -> Iterator[Event]:
        key = dataset_key(task.chunks[0][0].data)
        if key not in self._datasets:
            self._datasets[key] = data.on_device()
        return train_program(task, self._datasets[key], self.snapshots)

    def discard(self, task: ProgramTask) -> None:
        """Nothing to stop: a program here starts only when `run` is read."""

    def close(self) -> None:
        self._datasets.clear()
