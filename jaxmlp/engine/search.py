"""Adaptive search inside the training loop: successive halving and population-based training.

A whole population trains in a few compiled programs, so a scheduler needs no process per
trial: at its epochs it looks at every variant's validation metric (a few numbers per
variant on the host, so chunks of one group and shards on several devices agree), and the
programs carry out the decision on the device: pruned variants stop exactly as early
stopping stops them (`Trainer.stop`), exploiting members copy their source's state along
the variant axis (`Trainer.exploit`).

Successive halving is asynchronous by default (ASHA): a setting is judged at a rung as soon
as its seeds have reached it, against every setting judged there so far, and a pruned
setting's slots take the next queued variants at once. The synchronous rule (every setting
in lockstep, judged together) and PBT run their chunks interleaved epoch by epoch
(`run_search`), so that every decision sees them all. The decisions are pure functions of
the metrics and a seed, so a rerun makes the same ones.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from jaxmlp.engine.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class SuccessiveHalving:
    """At each rung epoch, the settings (a setting: its seeds, which live or die together)
    ranked by `aggregate` over seeds of their best `metric` so far keep the best `keep`
    fraction of those still training (at least one); the others stop. Diverged variants rank
    last. `asynchronous`: each setting is judged when its seeds reach the rung, against the
    settings judged there before it (`AsyncHalving`), instead of all settings together."""

    rungs: tuple[int, ...]
    keep: float
    metric: str = "val_loss"
    aggregate: str = "mean"
    asynchronous: bool = False


@dataclasses.dataclass(frozen=True)
class PopulationBasedTraining:
    """Every `interval` epochs, in each population (the active variants of one structure in
    one program), the bottom `quantile` by the current `metric` copies the state and numbers
    of a member of the top `quantile` (chosen at random), then multiplies each `perturb` key
    by one of its factors (or, with `resample_probability`, draws it anew from `resample`)."""

    interval: int
    quantile: float
    perturb: Mapping[str, Sequence[float]]
    metric: str = "val_loss"
    seed: int = 0
    resample_probability: float = 0.0
    resample: Mapping[str, Callable[[np.random.Generator], float]] = dataclasses.field(default_factory=dict)
    bounds: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


Search = SuccessiveHalving | PopulationBasedTraining

_AGGREGATES = {"mean": np.mean, "median": np.median, "best": np.min}


def _score(metric: str, values: np.ndarray) -> np.ndarray:
    """Lower is better; NaN (never evaluated, diverged) ranks last."""
    scores = np.asarray(values, float) * (-1.0 if metric == "val_accuracy" else 1.0)
    return np.where(np.isfinite(scores), scores, np.inf)


def best_so_far(trainer: Trainer, metric: str) -> np.ndarray:
    """Each variant's best `metric` over the epochs it trained (as a score: lower is better)."""
    scores = np.full(len(trainer.configs), np.inf)
    for r in trainer.records:
        epoch_scores = np.where(r["trained"], _score(metric, r[metric]), np.inf)
        scores = np.minimum(scores, epoch_scores)
    diverged = trainer.records[-1]["diverged"] if trainer.records else np.zeros(len(scores), bool)
    return np.where(diverged, np.inf, scores)


def halving_survivors(scores: np.ndarray, settings: np.ndarray, active: np.ndarray, keep: float,
                      aggregate: str = "mean") -> np.ndarray:
    """Which variants stop at a rung: those of the settings ranked below the best `keep`
    fraction of the settings with an active variant. `scores` per variant (lower is better,
    inf for diverged), `settings` per variant (seeds of a setting share an id). Ties keep
    the setting listed first."""
    alive = list(dict.fromkeys(settings[active].tolist()))
    if not alive:
        return np.zeros(len(scores), bool)
    agg = _AGGREGATES[aggregate]
    setting_scores = [float(agg(scores[settings == s])) if np.isfinite(scores[settings == s]).all() else math.inf
                      for s in alive]
    order = sorted(range(len(alive)), key=lambda k: (setting_scores[k], k))
    n_keep = max(1, int(math.floor(keep * len(alive) + 1e-9)))
    dropped = {alive[k] for k in order[n_keep:]}
    return active & np.isin(settings, list(dropped))


def pbt_step(trainer: Trainer, pbt: PopulationBasedTraining, epoch: int, population: np.ndarray,
             rng: np.random.Generator) -> tuple[dict[int, int], dict[str, dict[int, float]]]:
    """One exploit-and-explore step of the populations of a trainer (`population`: an id per
    variant): the members that copy (member -> source) and their perturbed values."""
    scores = _score(pbt.metric, trainer.records[-1][pbt.metric])
    current = trainer.hparams(list(pbt.perturb))
    sources: dict[int, int] = {}
    values: dict[str, dict[int, float]] = {key: {} for key in pbt.perturb}
    for pop in dict.fromkeys(population.tolist()):
        members = np.flatnonzero((population == pop) & trainer.active)
        n = int(math.floor(pbt.quantile * len(members) + 1e-9))
        if n == 0:
            continue
        ranked = members[np.argsort(scores[members], kind="stable")]
        top, bottom = ranked[:n], ranked[-n:]
        for member in bottom:
            source = int(top[rng.integers(n)])
            sources[int(member)] = source
            for key, factors in pbt.perturb.items():
                if key in pbt.resample and rng.random() < pbt.resample_probability:
                    value = pbt.resample[key](rng)
                else:
                    value = float(current[key][source]) * float(factors[rng.integers(len(factors))])
                low, high = pbt.bounds.get(key, (-math.inf, math.inf))
                values[key][int(member)] = float(min(max(value, low), high))
    return sources, values


def run_search(trainers: Sequence[Trainer], search: Search | None, settings: Sequence[np.ndarray],
               populations: Sequence[np.ndarray] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train the chunks of one group epoch by epoch together, applying `search` after the
    epochs it acts on; yields (chunk index, epoch record) as `Trainer.run` does. `settings`
    per chunk: a setting id per variant (comparable across chunks); `populations` per chunk
    (PBT): a population id per variant. Variants a rung stops come with their chunk's next
    record (or its result)."""
    runs = [t.run() for t in trainers]
    if isinstance(search, PopulationBasedTraining):
        for t in trainers:
            t.tracked_hparams = tuple(search.perturb)
    if isinstance(search, SuccessiveHalving) and search.asynchronous:
        yield from _run_async_halving(trainers, search, settings)
        return
    running = list(range(len(trainers)))
    epoch = 0
    while running:
        epoch += 1
        for k in list(running):
            try:
                yield k, next(runs[k])
            except StopIteration:
                running.remove(k)
        if not running or epoch >= max(t.epochs for t in trainers):
            continue  # nothing left to decide for: the last epoch's states are the results
        if isinstance(search, SuccessiveHalving) and epoch in search.rungs:
            _halve(trainers, search, settings)
        elif isinstance(search, PopulationBasedTraining) and epoch % search.interval == 0:
            for k, t in enumerate(trainers):
                if t.active.any():
                    rng = np.random.default_rng([search.seed, epoch, k])
                    sources, values = pbt_step(t, search, epoch, populations[k], rng)
                    if sources:
                        t.exploit(sources, values)


def _run_async_halving(trainers: Sequence[Trainer], search: SuccessiveHalving,
                       settings: Sequence[np.ndarray]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each trainer (its slots fed by a queue) under asynchronous halving: the variants a rung
    prunes stop before the next epoch, and their slots take the next queued variants."""
    for k, t in enumerate(trainers):
        halving = AsyncHalving(search, settings[k])
        for record in t.run():
            pruned = halving.after_epoch(t, record)
            yield k, record
            if pruned:
                t.stop(pruned)


def _halve(trainers: Sequence[Trainer], search: SuccessiveHalving, settings: Sequence[np.ndarray]) -> None:
    scores = np.concatenate([best_so_far(t, search.metric) for t in trainers])
    active = np.concatenate([t.active for t in trainers])
    stop = halving_survivors(scores, np.concatenate(settings), active, search.keep, search.aggregate)
    offset = 0
    for t in trainers:
        n = len(t.configs)
        t.stop(np.flatnonzero(stop[offset:offset + n]))
        offset += n


class AsyncHalving:
    """Asynchronous successive halving over one trainer's variants (`settings`: an id per
    variant; the seeds of a setting live or die together). A variant's best `metric` so far
    is noted when its own epoch count reaches a rung (or when it stops before); once every
    seed of a setting is noted there, the setting's `aggregate` is ranked against all settings
    noted at that rung so far, and it goes on only within the best `keep` fraction (at least
    one: the first setting at a rung always goes on). Settings complete in the same epoch are
    judged together (ties keep the setting listed first), so variants that train in lockstep
    are pruned as the synchronous rule prunes them. Later settings never change an earlier
    decision, and the decisions depend on the order settings reach a rung only through that."""

    def __init__(self, search: SuccessiveHalving, settings: np.ndarray):
        self.search, self.settings = search, np.asarray(settings)
        self.best = np.full(len(self.settings), np.inf)
        self.noted: dict[int, dict[int, float]] = {r: {} for r in search.rungs}  # rung -> variant -> score
        self.judged: dict[int, list[float]] = {r: [] for r in search.rungs}  # rung -> setting scores so far
        self.decided: set[tuple[int, Any]] = set()

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> list[int]:
        """Note this epoch's rung arrivals and return the variants of the settings it prunes."""
        trained = record["trained"]
        scores = np.where(record["diverged"], np.inf, _score(self.search.metric, record[self.search.metric]))
        self.best = np.where(trained, np.minimum(self.best, scores), self.best)
        self.best[record["diverged"]] = np.inf
        epochs = record["variant_epoch"]
        ended = trained & ~record["active"]
        for rung in self.search.rungs:
            for i in np.flatnonzero(trained & ((epochs == rung) | (ended & (epochs < rung)))):
                self.noted[rung][int(i)] = float(self.best[i])
        stop = []
        for rung in self.search.rungs:
            complete = []
            for setting in dict.fromkeys(self.settings[list(self.noted[rung])].tolist()):
                members = np.flatnonzero(self.settings == setting)
                if (rung, setting) not in self.decided and all(int(i) in self.noted[rung] for i in members):
                    values = [self.noted[rung][int(i)] for i in members]
                    score = float(_AGGREGATES[self.search.aggregate](values)) if np.isfinite(values).all() else math.inf
                    complete.append((setting, members, score))
                    self.decided.add((rung, setting))
            judged = self.judged[rung]
            judged += [score for _, _, score in complete]  # settings complete in one epoch are judged together
            n_keep = max(1, int(math.floor(self.search.keep * len(judged) + 1e-9)))
            for setting, members, score in complete:
                rank = sum(s < score for s in judged) + sum(
                    other_score == score for other, _, other_score in complete if other < setting)
                if rank >= n_keep:
                    stop += [int(i) for i in members]
        return stop
