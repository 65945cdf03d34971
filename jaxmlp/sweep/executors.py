"""Where a sweep's compiled programs train: in this process (`LocalExecutor`), or on a Ray
cluster (`jaxmlp.sweep.ray_executor`). Either way a program is a `ProgramTask` of plain,
picklable values; the runner hands an executor every program first (`submit`: a cluster
starts them all), then reads each program's stream of events in turn (`run`) and logs them:

    ("compiled", chunk, seconds)    a chunk's programs are ready (compiled or reused)
    ("epoch", chunk, record)        one epoch of a chunk (`Trainer.run`'s record)
    ("result", chunk, (indices, result))   the chunk's end: its trained variants' results
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from jaxmlp.config import RunConfig
from jaxmlp.data import Dataset
from jaxmlp.engine import Layout, Trainer
from jaxmlp.engine.search import Search, run_search

Event = tuple[str, int, Any]


@dataclasses.dataclass(frozen=True)
class ProgramTask:
    """One compiled program's chunks: each chunk's configurations (in its layout's order),
    which of them ride along frozen, and its devices; the search the chunks train under, with
    a setting and a population id per variant."""

    chunks: tuple[tuple[RunConfig, ...], ...]
    frozen: tuple[tuple[bool, ...], ...]
    layout: Layout
    devices: int
    search: Search | None = None
    settings: tuple[np.ndarray, ...] = ()
    populations: tuple[np.ndarray, ...] = ()


def train_program(task: ProgramTask, data: Dataset) -> Iterator[Event]:
    """Train a program's chunks on `data`: one after another, or together under the search."""
    trainers = [Trainer(list(configs), data, task.devices, layout=task.layout, frozen=frozen)
                for configs, frozen in zip(task.chunks, task.frozen)]
    for k, t in enumerate(trainers):
        yield "compiled", k, t.compile()
    if task.search is None:
        for k, t in enumerate(trainers):
            for record in t.run():
                yield "epoch", k, record
            yield "result", k, _result(t)
        return
    for k, record in run_search(trainers, task.search, list(task.settings), list(task.populations)):
        yield "epoch", k, record
    for k, t in enumerate(trainers):
        yield "result", k, _result(t)


def _result(t: Trainer) -> tuple[list[int], Any]:
    return [i for i, frozen in enumerate(t.frozen) if not frozen], t.result


class LocalExecutor:
    """Programs train in this process, on its devices; datasets are placed on the device once."""

    name = "local"

    def __init__(self) -> None:
        self._datasets: dict[str, Dataset] = {}

    def submit(self, tasks: list[ProgramTask]) -> None:
        """Nothing ahead: the programs share this process's devices and train one after another."""

    def run(self, task: ProgramTask, data: Dataset) -> Iterator[Event]:
        key = repr(task.chunks[0][0].data)
        if key not in self._datasets:
            self._datasets[key] = data.on_device()
        return train_program(task, self._datasets[key])

    def discard(self, task: ProgramTask) -> None:
        """Nothing to stop: a program here starts only when `run` is read."""

    def close(self) -> None:
        self._datasets.clear()
