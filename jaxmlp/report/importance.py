"""Which swept numbers mattered: Optuna's fANOVA importance of each swept key for a sweep's first
objective, over its finished settings (a study built from the records, one trial per setting),
as a table and a bar chart. Meant for random and optimised sweeps, whose settings spread over
the space; a key that some settings leave out (a conditional parameter) is left out of it.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

from jaxmlp.records import SETTING_NAME, VariantRecord
from jaxmlp.report.objectives import Objective, setting_values
from jaxmlp.report.tables import by_setting

#: Fewer finished settings than this tell nothing about importance: no table, no chart.
MIN_SETTINGS = 8


@contextlib.contextmanager
def optuna_quietly() -> Iterator[None]:
    """Optuna without its INFO lines (a study created, a trial finished) for the block's duration."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _distribution(values: Sequence[Any]):
    """Optuna's distribution of one key's values: a float range for numbers, else categories (as text)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return FloatDistribution(float(min(values)), float(max(values)))
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _value(distribution, value: Any) -> Any:
    return str(value) if hasattr(distribution, "choices") else float(value)


def param_importances(records: Sequence[VariantRecord], objective: Objective, seed: int = 0) -> dict[str, float]:
    """Swept key -> fANOVA importance (summing to 1, largest first) for `objective`, from each
    setting's mean over seeds; {} with fewer than `MIN_SETTINGS` finished settings or no key
    that varies over all of them."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import create_trial

    values = setting_values(records, [objective])
    settings = {label: {k: v for k, v in runs[0].setting.items() if k != SETTING_NAME}
                for label, runs in by_setting(records).items() if math.isfinite(values[label][0])}
    if len(settings) < MIN_SETTINGS:
        return {}
    keys = [k for k in dict.fromkeys(k for s in settings.values() for k in s)
            if all(k in s for s in settings.values()) and len({str(s[k]) for s in settings.values()}) > 1]
    if not keys:
        return {}
    distributions = {k: _distribution([s[k] for s in settings.values()]) for k in keys}
    with optuna_quietly():
        study = optuna.create_study(direction=objective.direction)
        study.add_trials([create_trial(params={k: _value(distributions[k], s[k]) for k in keys},
                                       distributions=distributions, value=values[label][0])
                          for label, s in settings.items()])
        found = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {key: float(value) for key, value in found.items()}


def importance_rows(importances: dict[str, float]) -> list[dict[str, Any]]:
    """The importance table: one row per key, largest first."""
    return [{"parameter": key, "importance": value} for key, value in importances.items()]


def draw_importance(importances: dict[str, float], objective: Objective):
    """A matplotlib Figure (not kept by pyplot): one horizontal bar per key, largest on top."""
    from matplotlib.figure import Figure

    keys = list(importances)
    fig = Figure(figsize=(6.0, 1.0 + 0.35 * len(keys)), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(keys)), [importances[k] for k in keys], color="C0", gid="importance")
    ax.set_yticks(range(len(keys)), keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"fANOVA importance for {objective}")
    ax.grid(alpha=0.3, axis="x")
    return fig
