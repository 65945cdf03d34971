"""The Pareto front of a sweep's settings over two or more objectives (`objectives`): the
settings that no other setting matches or beats in every objective while beating them in one.
Its rows for the terminal and the parent run, and a scatter of the first two objectives with
the front joined and the chosen setting (the best in the first objective) marked.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from jaxmlp.records import VariantRecord
from jaxmlp.report.objectives import Objective, setting_values

#: The column that marks a setting on the front.
PARETO = "pareto"


def pareto_mask(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Which rows of `points` (one per setting, one column per objective) are on the front: no
    other row is at least as good in every column and better in one. Equal rows do not dominate
    each other (all stay); a row with a value that is not finite is never on the front and
    dominates nothing."""
    points = np.asarray(points, float).reshape(len(points), len(maximize))
    minimised = np.where(np.asarray(maximize, bool), -points, points)
    finite = np.isfinite(minimised).all(axis=1)
    no_worse = (minimised[:, None, :] <= minimised[None, :, :]).all(axis=-1)  # [i, j]: i no worse than j anywhere
    better = (minimised[:, None, :] < minimised[None, :, :]).any(axis=-1)
    dominated = (no_worse & better & finite[:, None]).any(axis=0)
    return finite & ~dominated


def chosen_setting(values: dict[str, tuple[float, ...]], first: Objective) -> str | None:
    """The setting best in the first objective (the one whose model the sweep logs as its best)."""
    scored = {label: v[0] for label, v in values.items() if math.isfinite(v[0])}
    if not scored:
        return None
    return (max if first.maximize else min)(scored, key=scored.get)


def pareto_rows(records: Sequence[VariantRecord], objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """One row per setting: its label, its mean of each objective, and whether it is on the front."""
    values = setting_values(records, objectives)
    on_front = pareto_mask(np.asarray(list(values.values()), float), [o.maximize for o in objectives])
    return [{"setting": label, **{o.metric: v for o, v in zip(objectives, means)}, PARETO: bool(front)}
            for (label, means), front in zip(values.items(), on_front)]


def front_table(records: Sequence[VariantRecord], objectives: Sequence[Objective]) -> dict[str, list[Any]]:
    """The settings on the front by column (for the parent run's table), best in the first objective first."""
    rows = [r for r in pareto_rows(records, objectives) if r[PARETO]]
    rows.sort(key=lambda r: -r[objectives[0].metric] if objectives[0].maximize else r[objectives[0].metric])
    return {column: [r[column] for r in rows] for column in ["setting", *(o.metric for o in objectives)]}


def with_pareto(rows: Sequence[dict[str, Any]], records: Sequence[VariantRecord],
                objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """Table rows (`summarize`, `best_first`) with each objective's mean where the row lacks it and
    a Pareto column ('yes' on the front), for two or more objectives; the rows as they are otherwise."""
    if len(objectives) < 2:
        return list(rows)
    by_label = {r["setting"]: r for r in pareto_rows(records, objectives)}
    out = []
    for row in rows:
        extra = by_label.get(row["setting"], {})
        out.append({**row, **{o.metric: extra.get(o.metric, math.nan) for o in objectives if o.metric not in row},
                    PARETO: "yes" if extra.get(PARETO) else ""})
    return out


def draw_pareto(records: Sequence[VariantRecord], objectives: Sequence[Objective]):
    """A matplotlib Figure (not kept by pyplot): every setting's first two objectives (gid
    'settings'), the front joined in order of the first (gid 'front') and the chosen setting
    ringed (gid 'chosen')."""
    from matplotlib.figure import Figure

    rows = pareto_rows(records, objectives)
    first, second = objectives[0], objectives[1]
    points = np.asarray([[r[first.metric], r[second.metric]] for r in rows], float).reshape(len(rows), 2)
    shown = np.isfinite(points).all(axis=1)
    front = points[[r[PARETO] for r in rows]]
    front = front[np.argsort(front[:, 0], kind="stable")]
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(points[shown, 0], points[shown, 1], s=18, color="C0", alpha=0.6, label="settings", gid="settings")
    ax.plot(front[:, 0], front[:, 1], "-o", color="C3", markersize=5,
            label="Pareto front", gid="front")
    chosen = chosen_setting(setting_values(records, objectives), first)
    if chosen is not None:
        x, y = next([r[first.metric], r[second.metric]] for r in rows if r["setting"] == chosen)
        ax.scatter([x], [y], s=140, facecolors="none", edgecolors="black", linewidths=1.5,
                   label=f"chosen (best {first.metric})", gid="chosen", zorder=3)
    ax.set_xlabel(str(first))
    ax.set_ylabel(str(second))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
