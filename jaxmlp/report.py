"""Tables and plots of a sweep, built from plain per-variant records.

A record is a flat dict per trained variant: `setting` (label), `seed`, `status`,
`diverged`, `best_epoch`, `stopped_epoch`, `test_accuracy` / `test_loss`,
`final_train_accuracy` / `final_train_loss`, `n_params`, `train_seconds`, ... The sweep
runner builds them from its results; `python -m jaxmlp.report` (`jaxmlp.report_cli`) builds
them from what MLflow holds and adds `config` (the resolved configuration by dotted key) and
`history` (per-epoch metrics: name -> (epochs, values)), which the learning curves and the
dead-unit panel need. Both go through the same functions, so both produce the same table.
"""
from __future__ import annotations

import ast
import csv
import io
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: The report's classification metric: 100 x (1 - test accuracy).
ERROR_PERCENT = "test_error_percent"

#: Column titles of the report's table (`report_rows`); other columns show their key.
HEADERS = {
    ERROR_PERCENT: "test error (%)", "test_loss": "test loss", "n_seeds": "seeds", "best_epoch": "best epoch",
    "stopped_epoch": "stopped epoch", "n_params": "params", "train_seconds": "train time (s)",
    "reference": "reference", "reference_diff": "Δ (ours − ref)", "reference_source": "source",
    "dead_units_percent": "dead units (%)",
}
_PERCENT_KEYS = (ERROR_PERCENT, "reference", "reference_diff")


def record_from_run(child: dict[str, Any]) -> dict[str, Any]:
    """The flat record of one tracked variant, from a child run (`Tracker.children` item)."""
    from jaxmlp.tracking import DIVERGED_TAG, SETTING_TAG, VARIANT_KEY_TAG

    tags, metrics = child["tags"], child["metrics"]
    record = {"setting": tags.get(SETTING_TAG, "base"), "seed": int(tags.get("seed", 0)),
              "variant_key": tags.get(VARIANT_KEY_TAG), "run_id": child["run_id"], "status": child["status"],
              "diverged": tags.get(DIVERGED_TAG) == "true"}
    record.update({k: v for k, v in metrics.items() if k.startswith(("test_", "final_train_", "best_"))})
    record.update({k: metrics[k] for k in ("stopped_epoch", "n_params", "train_seconds", "compile_seconds")
                   if k in metrics})
    return record


def primary_metric(records: Sequence[dict[str, Any]]) -> str:
    """test_accuracy for classification sweeps, test_loss otherwise."""
    return "test_accuracy" if any(r.get("test_accuracy") is not None for r in records) else "test_loss"


def _mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (first-appearance order): mean and std over seeds of the test metric."""
    metric = primary_metric(records)
    rows = []
    for setting, runs in _by_setting(records).items():
        good = [r for r in runs if r.get("status") == "FINISHED"]
        mean, std = _mean_std(r.get(metric) for r in good)
        rows.append({
            "setting": setting, "n_seeds": len(good), metric: mean, f"{metric}_std": std,
            "best_epoch": _mean_std(r.get("best_epoch") for r in good)[0],
            "stopped_epoch": _mean_std(r.get("stopped_epoch") for r in good)[0],
            "diverged": sum(bool(r.get("diverged")) for r in runs),
            "failed": sum(r.get("status") == "FAILED" and not r.get("diverged") for r in runs),
            "n_params": next((r["n_params"] for r in runs if r.get("n_params") is not None), None),
            "train_seconds": _mean_std(r.get("train_seconds") for r in good)[0],
        })
        dead = _dead_units_percent(good)
        if dead is not None:
            rows[-1]["dead_units_percent"] = dead
    return rows


def _dead_units_percent(runs: Sequence[dict[str, Any]]) -> str | None:
    """Per hidden layer, the percentage of dead units (zero on the whole validation split) at
    the last epoch trained, mean over seeds, as "layer 1 / layer 2 / ..."; None without
    histories (records built by the report carry them, the sweep's own do not)."""
    per_layer: dict[int, list[float]] = {}
    for r in runs:
        for key, (_, values) in (r.get("history") or {}).items():
            if key.startswith("dead_fraction_") and values:
                per_layer.setdefault(int(key.rsplit("_", 1)[1]), []).append(100.0 * values[-1])
    if not per_layer:
        return None
    return " / ".join(f"{np.mean(per_layer[layer]):.1f}" for layer in sorted(per_layer))


def _by_setting(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_setting.setdefault(r["setting"], []).append(r)
    return by_setting


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The setting with the best mean test metric (highest accuracy or lowest loss)."""
    metric = "test_accuracy" if rows and "test_accuracy" in rows[0] else "test_loss"
    scored = [r for r in rows if math.isfinite(r[metric])]
    if not scored:
        return None
    return (max if metric == "test_accuracy" else min)(scored, key=lambda r: r[metric])


# -- the report's table --------------------------------------------------------------------

def display_metric(records: Sequence[dict[str, Any]]) -> str:
    """What the report shows: test error in percent for classification, test loss otherwise."""
    return ERROR_PERCENT if primary_metric(records) == "test_accuracy" else "test_loss"


def _record_value(record: dict[str, Any], metric: str) -> float | None:
    if metric == ERROR_PERCENT:
        acc = record.get("test_accuracy")
        return None if acc is None else 100.0 * (1.0 - acc)
    return record.get(metric)


def report_rows(rows: Sequence[dict[str, Any]],
                references: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The report's table from `summarize` rows: test error (%) (classification) or test loss as mean ± std over
    seeds, seeds, best and stopped epoch, parameters, training time; with `references` (setting -> entry, see
    `match_references`; none matched: no such columns) also the reference value, its source and the difference
    ours − reference."""
    show_failures = any(r["diverged"] or r["failed"] for r in rows)
    out = []
    for r in rows:
        if "test_accuracy" in r:
            metric, mean, std = ERROR_PERCENT, 100.0 * (1.0 - r["test_accuracy"]), 100.0 * r["test_accuracy_std"]
        else:
            metric, mean, std = "test_loss", r["test_loss"], r["test_loss_std"]
        row = {"setting": r["setting"], metric: mean, f"{metric}_std": std, "n_seeds": r["n_seeds"],
               "best_epoch": r["best_epoch"], "stopped_epoch": r["stopped_epoch"],
               "n_params": int(r["n_params"]) if r.get("n_params") is not None else None,
               "train_seconds": r.get("train_seconds", math.nan)}
        if "dead_units_percent" in r:
            row["dead_units_percent"] = r["dead_units_percent"]
        if show_failures:
            row.update(diverged=r["diverged"], failed=r["failed"])
        if references:
            ref = references.get(r["setting"])
            value = float(ref["value"]) if ref else math.nan
            row.update(reference=value, reference_diff=mean - value, reference_source=ref["source"] if ref else "")
        out.append(row)
    return out


def setting_values(label: str) -> dict[str, Any]:
    """The swept values of a setting label such as 'model.dropout=0.2, model.hidden=128x128' (values as typed
    Python values where they parse, e.g. 0.2, None, True; '128x128' stays a string)."""
    return {m.group(1): parse_value(m.group(2))
            for m in re.finditer(r"([A-Za-z0-9_.]+)=(.*?)(?=, [A-Za-z0-9_.]+=|$)", label)}


def parse_value(text: str) -> Any:
    """A logged parameter or label value back as a Python value ('0.5' -> 0.5, '[8, 8]' -> [8, 8])."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def match_references(records: Sequence[dict[str, Any]], entries: Sequence[Mapping[str, Any]],
                     metric: str) -> dict[str, Mapping[str, Any]]:
    """Setting -> the first entry (of this metric) whose `setting` is the setting's label, or a mapping of
    configuration keys to values that all equal the setting's resolved configuration."""
    found = {}
    for setting, runs in _by_setting(records).items():
        config = runs[0].get("config") or setting_values(setting)
        for entry in entries:
            want = entry["setting"]
            if entry.get("metric", ERROR_PERCENT) == metric and (
                    want == setting if isinstance(want, str)
                    else all(k in config and _same(config[k], v) for k, v in want.items())):
                found[setting] = entry
                break
    return found


# -- text tables ---------------------------------------------------------------------------

def _cell(value: Any, key: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if key in _PERCENT_KEYS:
            return f"{value:+.2f}" if key == "reference_diff" else f"{value:.2f}"
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _table_metric(rows: Sequence[dict[str, Any]]) -> str | None:
    """The column shown as mean ± std: the first one with a `<name>_std` partner."""
    return next((c for c in _columns(rows) if f"{c}_std" in rows[0]), None)


def table_cells(rows: Sequence[dict[str, Any]],
                headers: Mapping[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Column titles and formatted cells; the metric shows as mean ± std (percent with 2 decimals)."""
    metric = _table_metric(rows)
    columns = [c for c in _columns(rows) if c != f"{metric}_std"]
    digits = 2 if metric in _PERCENT_KEYS else 4
    cells = [[f"{r[c]:.{digits}f} ± {r[f'{c}_std']:.{digits}f}" if c == metric and math.isfinite(r[c])
              else _cell(r.get(c), c) for c in columns] for r in rows]
    return [(headers or {}).get(c, c) for c in columns], cells


def to_markdown(rows: Sequence[dict[str, Any]], headers: Mapping[str, str] | None = None) -> str:
    """A Markdown table; the test metric shows as mean ± std."""
    if not rows:
        return "(no runs)\n"
    titles, cells = table_cells(rows, headers)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows), restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_text(rows: Sequence[dict[str, Any]], headers: Mapping[str, str] | None = None) -> str:
    """An aligned plain-text table for the terminal."""
    if not rows:
        return "(no runs)"
    titles, cells = table_cells(rows, headers)
    table = [titles] + cells
    widths = [max(len(row[j]) for row in table) for j in range(len(titles))]
    return "\n".join("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w)
                               in enumerate(zip(row, widths))) for row in table)


# -- figures -------------------------------------------------------------------------------

FIGURE_CAPTIONS = {
    "test_metric.png": "Test error (%) of the model selected on validation (test loss for regression) against "
                       "the swept axis (per setting where the swept keys are zipped): mean ± std over seeds "
                       "(bars), one dot per seed.",
    "learning_curves.png": "Training loss (dashed; training mode, running average over the epoch) and "
                           "validation loss (solid) per setting, mean over the seeds still training; triangles "
                           "mark the epoch whose parameters were kept (the best validation epoch, or the last "
                           "epoch where restore_best is false), one per seed.",
    "activations.png": "The activation functions (left; noisy ReLU as at evaluation, training adds Gaussian "
                       "noise) and the fraction of dead units (zero on the whole validation split) of each hidden "
                       "layer over training, mean over seeds.",
    "generalisation_gap.png": "Generalisation gap against the dropout rate (per setting where the rate is "
                              "zipped with other keys): test error minus training error "
                              "(evaluation mode, selected parameters), in percentage points (test minus train "
                              "loss for regression); larger means more overfitting. Mean ± std over seeds.",
}
_LINESTYLES = ("-", "--", ":", "-.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def prepare_figures() -> None:
    """Import matplotlib and draw one small figure (fonts, renderer): about 0.6 s the first
    time in a process, worth spending before the figures are needed (the sweep does it in a
    thread while it trains)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1], label="x")
    ax.set_title("x")
    ax.legend()
    _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _finished(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("status") == "FINISHED"]


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _values_by_setting(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Swept key -> value for each setting, from the resolved configuration where the records carry it."""
    out = {}
    for setting, runs in _by_setting(records).items():
        config = runs[0].get("config") or {}
        out[setting] = {k: config.get(k, v) for k, v in setting_values(setting).items()}
    return out


def _others(values: Mapping[str, Any], key: str | None, sep: str = ", ") -> str:
    """A short label of a setting without `key` (which line of a plot against `key` it is on), with the keys'
    last parts only: 'patience=None, restore_best=False'."""
    return sep.join(f"{k.rsplit('.', 1)[-1]}={_show(v)}" for k, v in values.items() if k != key)


def _is_axis(values: Mapping[str, Mapping[str, Any]], key: str) -> bool:
    """Whether the settings are every value of `key` crossed with every combination of the other keys (a grid
    axis, with at least two values), not e.g. one of several keys zipped together."""
    xs = {_show(v[key]) for v in values.values()}
    series = {_others(v, key) for v in values.values()}
    return len(xs) > 1 and len(xs) * len(series) == len(values)


def swept_axis(values: Mapping[str, Mapping[str, Any]], prefer: str | None = None) -> tuple[str | None, bool]:
    """The swept key to put on the x axis and whether it is numeric: `prefer` if it is a grid axis, else the
    last numeric grid axis, else the first categorical one; None where there is none (e.g. a zip: plot one
    point per setting)."""
    keys = list(next(iter(values.values()), {}))
    numeric = [k for k in keys if all(_is_number(v[k]) for v in values.values())]
    candidates = [*reversed(numeric), *(k for k in keys if k not in numeric)]
    for key in [prefer, *candidates] if prefer in keys else candidates:
        if _is_axis(values, key):
            return key, key in numeric
    return None, False


def _axis_figure(records: Sequence[dict[str, Any]], value, ylabel: str, prefer: str | None = None,
                 title: str = "") -> bytes:
    """Mean ± std over finished seeds of value(record) per setting against the swept axis (`prefer` where it
    is one, see `swept_axis`), one line or point set per combination of the other swept values."""
    plt = _pyplot()
    values, by_setting = _values_by_setting(records), _by_setting(records)
    key, numeric = swept_axis(values, prefer)
    series: dict[str, list[tuple[Any, str]]] = {}
    for setting, v in values.items():
        x = v[key] if key else _others(v, None, "\n") or setting
        series.setdefault(_others(v, key) if key else "", []).append((x, setting))
    categories = list(dict.fromkeys(_show(x) for points in series.values() for x, _ in points))
    longest = max(len(line) for c in categories for line in c.split("\n"))
    width = 6.5 if numeric else max(5.0, len(categories) * max(0.8, 0.075 * longest) + 2.0)
    fig, ax = plt.subplots(figsize=(width, 4.0))
    spread = min(0.6 / len(series), 0.15)
    for i, (label, points) in enumerate(series.items()):
        xs, means, stds, dots = [], [], [], []
        for x, setting in sorted(points, key=lambda p: p[0]) if numeric else points:
            seeds = [y for y in map(value, _finished(by_setting[setting])) if y is not None and math.isfinite(y)]
            pos = float(x) if numeric else categories.index(_show(x)) + (i - (len(series) - 1) / 2) * spread
            mean, std = _mean_std(seeds)
            xs.append(pos), means.append(mean), stds.append(std)
            dots += [(pos, y) for y in seeds]
        color = f"C{i % 10}"
        ax.errorbar(xs, means, yerr=stds, fmt="o-" if numeric else "o", capsize=4, color=color,
                    label=label or None, zorder=3)
        if dots:
            ax.scatter(*zip(*dots), s=10, alpha=0.4, color=color, zorder=2)
    if numeric:
        xs = [float(x) for points in series.values() for x, _ in points]
        if min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
    else:
        tilt = key is not None and longest > 8
        ax.set_xticks(range(len(categories)), categories, rotation=30 if tilt else 0,
                      ha="right" if tilt else "center", fontsize=8 if key else 7)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(key or "setting")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        outside = len(series) > 6 or max(map(len, series)) > 30
        ax.legend(fontsize=7, **({"bbox_to_anchor": (1.02, 1), "loc": "upper left"} if outside else {}))
    return _png(fig)


def figure_test_metric(records: Sequence[dict[str, Any]]) -> bytes:
    """Test error (%) or test loss against the swept axis, mean ± std over seeds, one dot per seed."""
    metric = display_metric(records)
    label = "test error (%)" if metric == ERROR_PERCENT else "test loss"
    return _axis_figure(records, lambda r: _record_value(r, metric), label)


def _curve(runs: Sequence[dict[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and the mean over runs of one per-epoch metric (runs that stopped early leave the mean)."""
    histories = [r["history"][name] for r in runs if name in r.get("history", {})]
    epochs = np.unique(np.concatenate([np.asarray(s, int) for s, _ in histories])) if histories else np.zeros(0, int)
    total, count = np.zeros(len(epochs)), np.zeros(len(epochs))
    for steps, vals in histories:
        vals = np.asarray(vals, float)
        ok = np.isfinite(vals)
        idx = np.searchsorted(epochs, np.asarray(steps, int)[ok])
        np.add.at(total, idx, vals[ok])
        np.add.at(count, idx, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return epochs, total / count


def _kept_epoch(record: dict[str, Any]) -> int | None:
    """The epoch whose parameters the run kept: the best one, or the last where restore_best is false."""
    restore = (record.get("config") or {}).get("training.early_stopping.restore_best", True)
    epoch = record.get("best_epoch") if restore else record.get("stopped_epoch")
    return None if epoch is None else int(epoch)


def figure_learning_curves(records: Sequence[dict[str, Any]]) -> bytes:
    """Per setting: mean training and validation loss over epochs, and each seed's kept epoch."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    groups = {s: _finished(runs) for s, runs in _by_setting(records).items()}
    cols = min(len(groups), 4)
    n_rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.6 * cols, 2.9 * n_rows), squeeze=False)
    for ax, (setting, runs) in zip(axes.flat, groups.items()):
        for name, style in (("train_loss", "--"), ("val_loss", "-")):
            ax.plot(*_curve(runs, name), style, color="C0" if name == "val_loss" else "C1")
        for r in runs:
            epoch, (steps, vals) = _kept_epoch(r), r.get("history", {}).get("val_loss", ((), ()))
            if epoch in list(steps):
                ax.plot(epoch, vals[list(steps).index(epoch)], "v", color="black", markersize=5, alpha=0.7)
        ax.set_title("\n".join(setting.split(", ")), fontsize=7)
        shown = np.concatenate([line.get_ydata() for line in ax.get_lines()]) if ax.get_lines() else np.ones(1)
        shown = shown[np.isfinite(shown) & (shown > 0)]
        if shown.size and shown.max() > 5 * shown.min():
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not runs:
            ax.text(0.5, 0.5, "no finished runs", ha="center", transform=ax.transAxes)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    handles = [Line2D([], [], color="C1", linestyle="--", label="train loss (training mode)"),
               Line2D([], [], color="C0", label="validation loss"),
               Line2D([], [], color="black", marker="v", linestyle="", label="kept epoch (per seed)")]
    fig.supxlabel("epoch", fontsize=9)
    fig.supylabel("loss (mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    return _png(fig)


def figure_activations(records: Sequence[dict[str, Any]]) -> bytes:
    """The swept activation functions, and per hidden layer the dead-unit fraction over training."""
    import jax.numpy as jnp
    from matplotlib.lines import Line2D

    from jaxmlp.activations import ActivationParams, get_activation

    plt = _pyplot()
    values, by_setting = _values_by_setting(records), _by_setting(records)
    first = {}
    for setting, v in values.items():
        first.setdefault(v["model.activation"], by_setting[setting][0].get("config") or {})
    color = {name: f"C{i % 10}" for i, name in enumerate(first)}
    layers = sorted({k for r in records for k in r.get("history", {}) if k.startswith("dead_fraction_")},
                    key=lambda k: int(k.rsplit("_", 1)[1]))
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(4.3 * (1 + len(layers)), 3.8), squeeze=False)
    x = np.linspace(-4.0, 4.0, 401)
    ax = axes[0, 0]
    for name, config in first.items():
        params = ActivationParams(**{f: float(config.get(f"model.{f}", d))
                                     for f, d in ActivationParams()._asdict().items()})
        ax.plot(x, np.asarray(get_activation(name)(jnp.asarray(x, jnp.float32), params)),
                color=color[name], label=name)
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.axvline(0, color="gray", linewidth=0.5)
    ax.set(ylim=(-2.0, 4.0), xlabel="x", title="activation functions")
    ax.legend(fontsize=7)
    others = list(dict.fromkeys(_others(v, "model.activation") for v in values.values()))
    for i, (ax, layer) in enumerate(zip(axes[0, 1:], layers)):
        for setting, v in values.items():
            ax.plot(*_curve(_finished(by_setting[setting]), layer), color=color[v["model.activation"]],
                    linestyle=_LINESTYLES[others.index(_others(v, "model.activation")) % len(_LINESTYLES)])
        ax.set(ylim=(-0.03, 1.03), xlabel="epoch", ylabel="fraction of dead units",
               title=f"dead units, hidden layer {i + 1}")
        ax.grid(alpha=0.3)
    if layers and len(others) > 1:
        axes[0, -1].legend(handles=[Line2D([], [], color="gray", linestyle=_LINESTYLES[j % len(_LINESTYLES)],
                                           label=label) for j, label in enumerate(others)], fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _gap(record: dict[str, Any], metric: str) -> float | None:
    """Test minus final training error in percentage points (loss for regression): larger = more overfitting."""
    if metric == ERROR_PERCENT:
        train, test = record.get("final_train_accuracy"), record.get("test_accuracy")
        return None if train is None or test is None else 100.0 * (train - test)
    train, test = record.get("final_train_loss"), record.get("test_loss")
    return None if train is None or test is None else test - train


def figure_generalisation_gap(records: Sequence[dict[str, Any]]) -> bytes:
    """Test error minus training error (or test minus training loss) against the dropout rate."""
    metric = display_metric(records)
    ylabel = "test error − train error (pp)" if metric == ERROR_PERCENT else "test loss − train loss"
    return _axis_figure(records, lambda r: _gap(r, metric), ylabel, "model.dropout",
                        "generalisation gap (larger = more overfitting)")


def sweep_summary(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]],
                  n_failed: int) -> tuple[dict[str, bytes], dict[str, float], dict[str, str]]:
    """What a sweep's parent run gets besides its plots: the summary table files (CSV,
    Markdown), metrics (counts, the best setting's test metric) and tags (the best setting)."""
    files = {"summary.csv": to_csv(rows).encode(), "summary.md": to_markdown(rows).encode()}
    metrics = {"n_variants": len(records), "n_failed": n_failed,
               "n_diverged": sum(bool(r.get("diverged")) for r in records)}
    tags = {}
    best = best_row(rows)
    if best is not None:
        metric = primary_metric(records)
        metrics[f"best_setting_{metric}"] = best[metric]
        tags["jaxmlp.best_setting_by_test_mean"] = best["setting"]
    return files, metrics, tags


def sweep_figures(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """The figures of a sweep, by file name: the test metric against the swept axis; learning curves (records
    with `history`); activation functions and dead units (model.activation swept); the generalisation gap
    (model.dropout swept)."""
    if not rows:
        return {}
    keys = setting_values(records[0]["setting"])
    figures = {"test_metric.png": figure_test_metric(records)}
    if any(r.get("history") for r in records):
        figures["learning_curves.png"] = figure_learning_curves(records)
    if "model.activation" in keys:
        figures["activations.png"] = figure_activations(records)
    if "model.dropout" in keys and any(_gap(r, display_metric(records)) is not None for r in records):
        figures["generalisation_gap.png"] = figure_generalisation_gap(records)
    return figures


if __name__ == "__main__":
    from jaxmlp.report_cli import main

    raise SystemExit(main())
