"""Tables and plots of a sweep, built from plain per-variant records.

A record is a flat dict per trained variant: `setting` (label), `seed`, `status`,
`diverged`, `best_epoch`, `stopped_epoch`, `test_accuracy` / `test_loss`, ... The sweep
runner builds them from its results; `python -m jaxmlp.report` builds them from what
MLflow holds, so both produce the same table.
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable, Sequence

import numpy as np


def primary_metric(records: Sequence[dict[str, Any]]) -> str:
    """test_accuracy for classification sweeps, test_loss otherwise."""
    return "test_accuracy" if any(r.get("test_accuracy") is not None for r in records) else "test_loss"


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (first-appearance order): mean and std over seeds of the test metric."""
    metric = primary_metric(records)
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_setting.setdefault(r["setting"], []).append(r)
    rows = []
    for setting, runs in by_setting.items():
        good = [r for r in runs if r.get("status") == "FINISHED"]
        mean, std = _mean_std(r.get(metric) for r in good)
        rows.append({
            "setting": setting, "n_seeds": len(good), metric: mean, f"{metric}_std": std,
            "best_epoch": _mean_std(r.get("best_epoch") for r in good)[0],
            "stopped_epoch": _mean_std(r.get("stopped_epoch") for r in good)[0],
            "diverged": sum(bool(r.get("diverged")) for r in runs),
            "failed": sum(r.get("status") == "FAILED" and not r.get("diverged") for r in runs),
            **({"n_params": runs[0]["n_params"]} if "n_params" in runs[0] else {}),
            **({"train_seconds": _mean_std(r.get("train_seconds") for r in good)[0]}
               if "train_seconds" in runs[0] else {}),
        })
    return rows


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The setting with the best mean test metric (highest accuracy or lowest loss)."""
    metric = "test_accuracy" if rows and "test_accuracy" in rows[0] else "test_loss"
    scored = [r for r in rows if math.isfinite(r[metric])]
    if not scored:
        return None
    return (max if metric == "test_accuracy" else min)(scored, key=lambda r: r[metric])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(rows[0]) if rows else []


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table; the test metric shows as mean ± std."""
    if not rows:
        return "(no runs)\n"
    metric = "test_accuracy" if "test_accuracy" in rows[0] else "test_loss"
    columns = [c for c in _columns(rows) if c != f"{metric}_std"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [f"{r[metric]:.4f} ± {r[f'{metric}_std']:.4f}" if c == metric and math.isfinite(r[metric])
                 else _cell(r[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_text(rows: Sequence[dict[str, Any]]) -> str:
    """An aligned plain-text table for the terminal."""
    if not rows:
        return "(no runs)"
    metric = "test_accuracy" if "test_accuracy" in rows[0] else "test_loss"
    columns = [c for c in _columns(rows) if c != f"{metric}_std"]
    table = [columns] + [[f"{r[metric]:.4f} ± {r[f'{metric}_std']:.4f}" if c == metric else _cell(r[c])
                          for c in columns] for r in rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w)
                               in enumerate(zip(row, widths))) for row in table)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def figure_metric_by_setting(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> bytes:
    """Test metric per setting: mean ± std over seeds, each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = primary_metric(records)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.6))
    x = np.arange(len(rows))
    ax.errorbar(x, [r[metric] for r in rows], yerr=[r[f"{metric}_std"] for r in rows], fmt="o", capsize=4,
                color="black", zorder=3, label="mean ± std")
    for i, row in enumerate(rows):
        seeds = [r[metric] for r in records if r["setting"] == row["setting"] and r.get(metric) is not None
                 and r.get("status") == "FINISHED"]
        ax.scatter(np.full(len(seeds), i) + 0.12, seeds, s=12, alpha=0.5, color="tab:blue", zorder=2)
    ax.set_xticks(x, [r["setting"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def sweep_figures(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """The figures logged on a sweep's parent run, by file name."""
    return {"test_metric_by_setting.png": figure_metric_by_setting(records, rows)} if rows else {}
