"""A sweep's objectives: the per-variant metrics its settings are compared on, each with the
direction it is optimised in, and each setting's value of them (the mean over its seeds).

    objectives: [best_val_loss, n_params]                      # directions known per metric
    objectives: [{metric: best_val_accuracy, direction: maximize}, train_seconds]

The first objective is the validation metric that selects models (early stopping's monitor,
`best_<monitor>`); with two or more, the settings no other beats in all of them form the
Pareto front (`pareto`). Test metrics are refused: a model chosen on them has seen the test split.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from jaxmlp.records import VariantRecord
from jaxmlp.report.tables import by_setting

#: The metrics a sweep may be optimised on, and the direction each is optimised in.
DIRECTIONS = {"best_val_loss": "minimize", "best_val_accuracy": "maximize", "n_params": "minimize",
              "train_seconds": "minimize", "epochs_trained": "minimize"}
#: The directions an objective may name.
DIRECTION_NAMES = ("minimize", "maximize")


class Objective(NamedTuple):
    """A metric and its direction, 'minimize' or 'maximize'."""

    metric: str
    direction: str

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def __str__(self) -> str:
        return f"{self.metric} ({'max' if self.maximize else 'min'})"


class ObjectiveError(ValueError):
    """An `objectives:` entry that names no known metric or direction (the message says which)."""


def _objective(entry: Any, where: str) -> Objective:
    """One `objectives:` entry, a metric name or {metric, direction}, checked."""
    metric, direction = (entry, None) if isinstance(entry, str) else (
        (entry.get("metric"), entry.get("direction")) if isinstance(entry, Mapping) else (None, None))
    if isinstance(metric, str) and metric.startswith("test_"):
        raise ObjectiveError(f"{where}: {metric!r}: a test metric cannot select settings (the test split would "
                             "then choose the model it judges); use a validation metric such as best_val_loss")
    if metric not in DIRECTIONS:
        raise ObjectiveError(f"{where}: {entry!r}; give one of {', '.join(DIRECTIONS)}, or "
                             "{metric: NAME, direction: minimize|maximize}")
    if isinstance(entry, Mapping) and set(entry) - {"metric", "direction"}:
        raise ObjectiveError(f"{where}: {entry!r}; an objective has only the keys metric and direction")
    if direction not in (None, *DIRECTION_NAMES):
        raise ObjectiveError(f"{where}.direction: {direction!r}; give minimize or maximize")
    return Objective(metric, direction or DIRECTIONS[metric])


def objectives_of(entries: Sequence[Any], monitor: str, where: str = "objectives") -> list[Objective]:
    """The checked objectives of a sweep (`monitor`: early stopping's, e.g. val_loss); none given:
    the monitor's best value alone. The first must be `best_<monitor>`: it selects the models."""
    objectives = [_objective(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
    selecting = f"best_{monitor}"
    if not objectives:
        return [Objective(selecting, DIRECTIONS[selecting])]
    if objectives[0].metric != selecting:
        raise ObjectiveError(f"{where}[0]: {objectives[0].metric!r}; the first objective selects the models, as "
                             f"early stopping does on {monitor}: put {selecting} first (or set "
                             "training.early_stopping.monitor in base)")
    metrics = [o.metric for o in objectives]
    repeated = next((m for i, m in enumerate(metrics) if m in metrics[:i]), None)
    if repeated:
        raise ObjectiveError(f"{where}: {repeated!r} is given twice; give each metric once")
    return objectives


def objective_value(record: VariantRecord, metric: str) -> float:
    """A record's value of an objective's metric (NaN where it has none)."""
    value = record.metric(metric) if metric.startswith("best_") else getattr(record, metric)
    return math.nan if value is None else float(value)


def mean_values(records: Iterable[VariantRecord], objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The mean over finished seeds of each objective (NaN where none finished with a value)."""
    good = [r for r in records if r.finished and not r.diverged]
    values = np.asarray([[objective_value(r, o.metric) for o in objectives] for r in good], float)
    values = values.reshape(len(good), len(objectives))
    with np.errstate(invalid="ignore"):
        return tuple(float(np.nanmean(column)) if np.isfinite(column).any() else math.nan for column in values.T)


def setting_values(records: Sequence[VariantRecord], objectives: Sequence[Objective]) -> dict[str, tuple[float, ...]]:
    """Each setting's mean over finished seeds of each objective, by label (sweep order)."""
    return {label: mean_values(runs, objectives) for label, runs in by_setting(records).items()}
