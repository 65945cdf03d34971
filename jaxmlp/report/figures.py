"""A sweep's figures from plain `VariantRecord`s: the test metric against the swept axis,
learning curves, activation functions with dead units, the generalisation gap, and the
lineage of a population-based training (PNG bytes by file name, drawn with matplotlib's Agg
backend)."""
from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np

from jaxmlp.records import VariantRecord, format_value
from jaxmlp.report.diagrams import DIAGRAM_CAPTIONS, draw_input_noise, draw_reliability
from jaxmlp.report.evaluation import noise_levels
from jaxmlp.report.labels import short_label
from jaxmlp.report.search import hparam_schedules, lineage_steps, member_id
from jaxmlp.report.tables import (ERROR_PERCENT, PANEL_SETTINGS, by_setting, display_metric, finished, mean_std,
                                  panel_settings, record_value)

FIGURE_CAPTIONS = {
    "test_metric.png": "Test error (%) of the model selected on validation (test loss for regression) against "
                       "the swept axis (per setting where the swept keys are zipped or sampled; beyond 16 such "
                       "settings, numbered in the sweep's order): mean ± std over seeds (bars), one dot per seed.",
    "learning_curves.png": "Training loss (dashed; training mode, running average over the epoch) and "
                           "validation loss (solid) per setting, mean over the seeds still training; triangles "
                           "mark the epoch whose parameters were kept (the best validation epoch, or the last "
                           "epoch where restore_best is false), one per seed. Beyond 16 settings, the 16 best "
                           "(by the validation metric that selects models) are drawn, best first.",
    "activations.png": "The activation functions (left; noisy ReLU as at evaluation, training adds Gaussian "
                       "noise) and the fraction of dead units (zero on the whole validation split) of each hidden "
                       "layer over training, mean over seeds.",
    "generalisation_gap.png": "Generalisation gap against the dropout rate (per setting where the rate is "
                              "zipped with other keys or sampled; beyond 16 such settings, numbered in the sweep's "
                              "order): test error minus training error "
                              "(evaluation mode, selected parameters), in percentage points (test minus train "
                              "loss for regression); larger means more overfitting. Mean ± std over seeds.",
    "lineage.png": "Population-based training: each member (top panel, one row per member, labelled by its "
                   "variant index and initial setting) over the epochs it trained; an arrow from member A's row "
                   "to member B's at epoch e: after epoch e, B copied A's parameters, optimizer state and numbers, "
                   "then perturbed them. Below, each perturbed number per member and epoch; a dashed line joins "
                   "the source's value at the exploit epoch to the copy's perturbed value one epoch later.",
    "pareto.png": "The first two objectives of every setting (means over seeds); the Pareto front (the settings "
                  "no other matches or beats in every objective) joined in red; the ring marks the setting best "
                  "in the first objective, whose model is the sweep's best.",
    "importance.png": "Which swept keys mattered: fANOVA importance of each for the first objective over the "
                      "finished settings (Optuna's evaluator on a study of one trial per setting).",
    **DIAGRAM_CAPTIONS,
}
#: The most characters of one line of a label (longer ones end in "…"), and the most inches a
#: figure spans either way: a long setting name cannot make a figure huge.
LABEL_CHARS, MAX_INCHES = 80, 40.0
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
    png(fig)


def _clipped(text: str) -> str:
    """`text` with every line at most `LABEL_CHARS` (a longer one ends in "…")."""
    return "\n".join(line if len(line) <= LABEL_CHARS else line[:LABEL_CHARS - 1] + "…" for line in text.split("\n"))


def _bounded(fig) -> None:
    """Every text of `fig` (titles, legends; tick labels are made at each draw: `_clipped` where
    they are set) `_clipped`, the figure at most `MAX_INCHES` either way."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_text(_clipped(text.get_text()))
    width, height = fig.get_size_inches()
    fig.set_size_inches(min(width, MAX_INCHES), min(height, MAX_INCHES))


def png(fig) -> bytes:
    _bounded(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _log_scale(ax, which: str) -> None:
    """A log scale on the axes' "x" or "y" axis with plain tick labels ("0.01", "1e-05"): the
    figures are drawn without math text (`sweep_figures`), where the default labels would read
    "$\\mathdefault{10^{-2}}$"."""
    from matplotlib.ticker import LogFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(LogFormatter())
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _values_by_setting(records: Sequence[VariantRecord]) -> dict[str, dict[str, Any]]:
    """Swept key -> value for each setting, from the resolved configuration where the records carry it;
    every setting gets every swept key (a conditional parameter where it was not proposed: its base value)."""
    keys = list(dict.fromkeys(k for r in records for k in r.setting))
    return {setting: {k: runs[0].config.get(k, runs[0].setting.get(k)) for k in keys}
            for setting, runs in by_setting(records).items()}


def _others(values: Mapping[str, Any], key: str | None, sep: str = ", ") -> str:
    """A short label of a setting without `key` (which line of a plot against `key` it is on), with the keys'
    last parts only: 'patience=None, restore_best=False'."""
    return sep.join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in values.items() if k != key)


def _is_axis(values: Mapping[str, Mapping[str, Any]], key: str) -> bool:
    """Whether the settings are every value of `key` crossed with every combination of the other keys (a grid
    axis, with at least two values), not e.g. one of several keys zipped together."""
    xs = {format_value(v[key]) for v in values.values()}
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


def _axis_figure(records: Sequence[VariantRecord], value, ylabel: str, prefer: str | None = None,
                 title: str = "") -> bytes:
    return png(draw_axis_figure(records, value, ylabel, prefer, title))


def draw_axis_figure(records: Sequence[VariantRecord], value, ylabel: str, prefer: str | None = None,
                     title: str = ""):
    """Mean ± std over finished seeds of value(record) per setting against the swept axis (`prefer` where it
    is one, see `swept_axis`), one line or point set per combination of the other swept values (a pyplot
    Figure; `png` closes it). Without an axis (zip, random, optimize), one point per setting, each named
    below it; beyond `PANEL_SETTINGS` settings, where their names would be unreadable, each at its value of
    `prefer` where every setting has a number there, else numbered in the sweep's order (a study's trial
    order): each setting's values are on its run and in the summary."""
    plt = _pyplot()
    values, runs_by_setting = _values_by_setting(records), by_setting(records)
    key, numeric = swept_axis(values, prefer)
    many = key is None and len(values) > PANEL_SETTINGS
    scattered = many and prefer in next(iter(values.values())) and all(_is_number(v[prefer]) for v in values.values())
    numbered = many and not scattered
    if scattered:  # one point per setting at its value of `prefer`, not joined
        key = prefer
    numeric = numeric or many
    series: dict[str, list[tuple[Any, str]]] = {}
    for n, (setting, v) in enumerate(values.items()):
        x = n if numbered else v[key] if key else _others(v, None, "\n") or setting
        series.setdefault(_others(v, key) if key and not scattered else "", []).append((x, setting))
    joined = numeric and not many
    categories = list(dict.fromkeys(format_value(x) for points in series.values() for x, _ in points))
    longest = min(LABEL_CHARS, max(len(line) for c in categories for line in c.split("\n")))
    width = 6.5 if numeric else max(5.0, len(categories) * max(0.8, 0.075 * longest) + 2.0)
    fig, ax = plt.subplots(figsize=(width, 4.0))
    spread = min(0.6 / len(series), 0.15)
    for i, (label, points) in enumerate(series.items()):
        xs, means, stds, dots = [], [], [], []
        for x, setting in sorted(points, key=lambda p: p[0]) if numeric else points:
            seeds = [y for y in map(value, finished(runs_by_setting[setting])) if y is not None and math.isfinite(y)]
            pos = float(x) if numeric else categories.index(format_value(x)) + (i - (len(series) - 1) / 2) * spread
            mean, std = mean_std(seeds)
            xs.append(pos), means.append(mean), stds.append(std)
            dots += [(pos, y) for y in seeds]
        color = f"C{i % 10}"
        ax.errorbar(xs, means, yerr=stds, fmt="o-" if joined else "o", capsize=2 if numbered or scattered else 4,
                    color=color, label=label or None, zorder=3)
        if dots:
            ax.scatter(*zip(*dots), s=10, alpha=0.4, color=color, zorder=2)
    if numbered:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-1, len(values))
    elif numeric:
        xs = [float(x) for points in series.values() for x, _ in points]
        if min(xs) > 0 and max(xs) / min(xs) >= 20 and not scattered:
            _log_scale(ax, "x")
    else:
        tilt = key is not None and longest > 8
        ax.set_xticks(range(len(categories)), list(map(_clipped, categories)), rotation=30 if tilt else 0,
                      ha="right" if tilt else "center", fontsize=8 if key else 7)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(f"setting, numbered in the sweep's order (of {len(values)}; each one's values are on its run)"
                  if numbered else key or "setting", fontsize=9 if numbered else None)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        outside = len(series) > 6 or max(map(len, series)) > 30
        ax.legend(fontsize=7, **({"bbox_to_anchor": (1.02, 1), "loc": "upper left"} if outside else {}))
    return fig


def figure_test_metric(records: Sequence[VariantRecord]) -> bytes:
    """Test error (%) or test loss against the swept axis, mean ± std over seeds, one dot per seed."""
    metric = display_metric(records)
    label = "test error (%)" if metric == ERROR_PERCENT else "test loss"
    return _axis_figure(records, lambda r: record_value(r, metric), label)


def _curve(runs: Sequence[VariantRecord], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and the mean over runs of one per-epoch metric (runs that stopped early leave the mean)."""
    histories = [r.history[name] for r in runs if name in r.history]
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


def _kept_epoch(record: VariantRecord) -> int | None:
    """The epoch whose parameters the run kept: the best one, or the last where restore_best is false."""
    restore = record.config.get("training.early_stopping.restore_best", True)
    epoch = record.best_epoch if restore else record.stopped_epoch
    return None if epoch is None else int(epoch)


def figure_learning_curves(records: Sequence[VariantRecord]) -> bytes:
    return png(draw_learning_curves(records))


def draw_learning_curves(records: Sequence[VariantRecord]):
    """Per setting (at most `PANEL_SETTINGS`, the best: `panel_settings`): mean training and
    validation loss over epochs, and each seed's kept epoch (a pyplot Figure; `png` closes it)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    groups, left_out = panel_settings(records)
    cols = min(len(groups), 4)
    n_rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.6 * cols, 2.9 * n_rows), squeeze=False)
    for ax, (setting, runs) in zip(axes.flat, groups.items()):
        for name, style in (("train_loss", "--"), ("val_loss", "-")):
            ax.plot(*_curve(runs, name), style, color="C0" if name == "val_loss" else "C1", gid=setting)
        for r in runs:
            epoch, (steps, vals) = _kept_epoch(r), r.history.get("val_loss", ((), ()))
            if epoch in list(steps):
                ax.plot(epoch, vals[list(steps).index(epoch)], "v", color="black", markersize=5, alpha=0.7)
        ax.set_title("\n".join(setting.split(", ")), fontsize=7)
        shown = np.concatenate([line.get_ydata() for line in ax.get_lines()]) if ax.get_lines() else np.ones(1)
        shown = shown[np.isfinite(shown) & (shown > 0)]
        if shown.size and shown.max() > 5 * shown.min():
            _log_scale(ax, "y")
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
    _panel_spacing(fig, max((len(s.split(", ")) for s in groups), default=1))
    legend = fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    if left_out:
        legend.set_title(left_out, prop={"size": 8})
    return fig


def _panel_spacing(fig, title_lines: int) -> None:
    """Room in a grid of small panels for their titles (`title_lines` lines of 7 pt) and tick
    labels, set from the font sizes for the figure's size as `png` bounds it: `tight_layout`
    would measure every panel's texts instead, about a third of the time the figure takes."""
    width, height = (min(x, MAX_INCHES) for x in fig.get_size_inches())
    rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    title = (title_lines * 10 + 4) / 72
    gap_y, gap_x = title + 0.3, 0.75  # inches: a title over the tick labels of the panel above; tick labels
    left, right, bottom, top = 0.85 / width, 1 - 0.1 / width, 0.8 / height, 1 - title / height
    axes_h = ((top - bottom) * height - (rows - 1) * gap_y) / rows
    axes_w = ((right - left) * width - (cols - 1) * gap_x) / cols
    fig.subplots_adjust(left=left, right=right, bottom=bottom, top=top, hspace=gap_y / axes_h, wspace=gap_x / axes_w)


def figure_activations(records: Sequence[VariantRecord]) -> bytes:
    """The swept activation functions, and per hidden layer the dead-unit fraction over training."""
    import jax.numpy as jnp
    from matplotlib.lines import Line2D

    from jaxmlp.activations import ActivationParams, get_activation

    plt = _pyplot()
    values, runs_by_setting = _values_by_setting(records), by_setting(records)
    first = {}
    for setting, v in values.items():
        first.setdefault(v["model.activation"], runs_by_setting[setting][0].config)
    color = {name: f"C{i % 10}" for i, name in enumerate(first)}
    layers = sorted({k for r in records for k in r.history if k.startswith("dead_fraction_")},
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
            ax.plot(*_curve(finished(runs_by_setting[setting]), layer), color=color[v["model.activation"]],
                    linestyle=_LINESTYLES[others.index(_others(v, "model.activation")) % len(_LINESTYLES)])
        ax.set(ylim=(-0.03, 1.03), xlabel="epoch", ylabel="fraction of dead units",
               title=f"dead units, hidden layer {i + 1}")
        ax.grid(alpha=0.3)
    if layers and len(others) > 1:
        axes[0, -1].legend(handles=[Line2D([], [], color="gray", linestyle=_LINESTYLES[j % len(_LINESTYLES)],
                                           label=label) for j, label in enumerate(others)], fontsize=7)
    fig.tight_layout()
    return png(fig)


def _gap(record: VariantRecord, metric: str) -> float | None:
    """Test minus final training error in percentage points (loss for regression): larger = more overfitting."""
    if metric == ERROR_PERCENT:
        train, test = record.metric("final_train_accuracy"), record.metric("test_accuracy")
        return None if train is None or test is None else 100.0 * (train - test)
    train, test = record.metric("final_train_loss"), record.metric("test_loss")
    return None if train is None or test is None else test - train


def figure_generalisation_gap(records: Sequence[VariantRecord]) -> bytes:
    """Test error minus training error (or test minus training loss) against the dropout rate."""
    metric = display_metric(records)
    ylabel = "test error − train error (pp)" if metric == ERROR_PERCENT else "test loss − train loss"
    return _axis_figure(records, lambda r: _gap(r, metric), ylabel, "model.dropout",
                        "generalisation gap (larger = more overfitting)")


def _last_epoch(record: VariantRecord) -> int:
    """The last epoch a variant trained (its first epochs: a stopped variant never trains again)."""
    epochs = [max(steps) for steps, _ in record.history.values() if len(steps)]
    return int(record.epochs_trained or record.stopped_epoch or max(epochs, default=1))


def _schedule_panel(ax, key: str, schedules: Mapping[int, tuple[list[int], list[float]]],
                    steps: Sequence[Mapping[str, int]], color: Mapping[int, str]) -> None:
    """One perturbed number per member over epochs (a line broken at each of its exploit steps),
    a dashed line from the source's value at the exploit epoch to the copy's value one epoch later."""
    cuts: dict[int, list[int]] = {}
    for step in steps:
        cuts.setdefault(step["member"], []).append(step["epoch"])
    for member, (epochs, values) in schedules.items():
        epochs, values = np.asarray(epochs, int), np.asarray(values, float)
        for start, end in zip([0, *sorted(cuts.get(member, []))], [*sorted(cuts.get(member, [])), math.inf]):
            piece = (epochs > start) & (epochs <= end)
            if piece.any():
                ax.plot(epochs[piece], values[piece], "-", color=color[member], linewidth=1.2,
                        gid=f"member {member}")
    for step in steps:
        before, after = schedules.get(step["source"]), schedules.get(step["member"])
        if before and after and step["epoch"] in before[0] and step["epoch"] + 1 in after[0]:
            ax.plot([step["epoch"], step["epoch"] + 1],
                    [before[1][before[0].index(step["epoch"])], after[1][after[0].index(step["epoch"] + 1)]],
                    "--", color=color[step["member"]], linewidth=0.9, gid="exploit")
    shown = np.concatenate([vals for _, vals in schedules.values()]) if schedules else np.ones(1)
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size and shown.max() > 5 * shown.min():
        _log_scale(ax, "y")
    ax.set_ylabel(key.rsplit(".", 1)[-1], fontsize=8)
    ax.grid(alpha=0.3, which="both")


def draw_lineage(records: Sequence[VariantRecord]):
    """The lineage of a population-based training as a matplotlib Figure (not shown, not kept by
    pyplot): one row per member over the epochs it trained with an arrow from the source's row to the
    copy's at each exploit step; below, one panel per perturbed number with each member's schedule."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    members = sorted((member_id(r, i), r) for i, r in enumerate(records))
    row = {m: k for k, (m, _) in enumerate(members)}
    color = {m: f"C{k % 10}" for k, (m, _) in enumerate(members)}
    steps = [s for s in lineage_steps(records) if s["source"] in row]
    schedules = hparam_schedules(records)
    fig = Figure(figsize=(8.0, 1.2 + 0.28 * len(members) + 2.4 * len(schedules)), layout="constrained")
    axes = fig.subplots(1 + len(schedules), 1, sharex=True, squeeze=False,
                        height_ratios=[max(1.5, 0.28 * len(members)), *[2.4] * len(schedules)])[:, 0]
    ax = axes[0]
    for m, r in members:
        ax.plot([1, _last_epoch(r)], [row[m], row[m]], "-", color=color[m], linewidth=2.5, alpha=0.6,
                solid_capstyle="butt", gid=f"member {m}")
    for step in steps:
        ax.annotate("", xy=(step["epoch"], row[step["member"]]), xytext=(step["epoch"], row[step["source"]]),
                    arrowprops={"arrowstyle": "-|>", "color": color[step["member"]], "linewidth": 1.0,
                                "connectionstyle": "arc3,rad=0.25", "shrinkA": 2, "shrinkB": 2}, gid="exploit")
    ax.set_yticks(range(len(members)), [_clipped(f"#{m} {short_label(r.setting)}") for m, r in members], fontsize=7)
    ax.set_ylim(len(members) - 0.5, -0.5)
    ax.set_title("members and their exploit steps (arrow: source → copy)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    for key, panel in zip(schedules, axes[1:]):
        _schedule_panel(panel, key, schedules[key], steps, color)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def sweep_figures(records: Sequence[VariantRecord], rows: Sequence[dict[str, Any]]) -> dict[str, bytes]:
    """The figures of a sweep, by file name: the test metric against the swept axis; learning curves (records
    with `history`); activation functions and dead units (model.activation swept); the generalisation gap
    (model.dropout swept); the lineage of a population-based training (a member copied another);
    reliability diagrams (classification) and accuracy against input noise (`evaluation.input_noise`).
    Names are drawn as plain text: a `$` in one starts no math text."""
    if not rows:
        return {}
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        return _figures(records)


def _figures(records: Sequence[VariantRecord]) -> dict[str, bytes]:
    keys = {k for r in records for k in r.setting}  # (a conditional parameter is in some settings only)
    figures = {"test_metric.png": figure_test_metric(records)}
    if any(r.history for r in records):
        figures["learning_curves.png"] = figure_learning_curves(records)
    if "model.activation" in keys:
        figures["activations.png"] = figure_activations(records)
    if "model.dropout" in keys and any(_gap(r, display_metric(records)) is not None for r in records):
        figures["generalisation_gap.png"] = figure_generalisation_gap(records)
    if any(r.lineage for r in records):
        figures["lineage.png"] = png(draw_lineage(records))
    if any(r.reliability for r in records):
        figures["reliability.png"] = png(draw_reliability(records))
    if noise_levels(records):
        figures["input_noise.png"] = png(draw_input_noise(records))
    return figures
