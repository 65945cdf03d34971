"""Figures of what the final evaluation measures besides the test metric, from plain
`VariantRecord`s: reliability diagrams per setting and test accuracy against input noise per
setting (matplotlib Figures, which `figures.sweep_figures` turns into PNG files)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from jaxmlp.records import VariantRecord
from jaxmlp.report.evaluation import noise_levels, pooled_reliability
from jaxmlp.report.tables import by_setting, finished, mean_std, panel_settings

DIAGRAM_CAPTIONS = {
    "reliability.png": "Reliability diagrams, one per setting: for the test split's examples in each of 15 "
                       "equal-width bins of top-label confidence (the largest softmax probability), the accuracy "
                       "against the mean confidence, pooled over the seeds (dot area: the number of examples); "
                       "on the diagonal a network that says 0.8 is right 80 % of the time. ECE: the expected "
                       "calibration error, mean over seeds. Beyond 16 settings, the 16 best (by the validation "
                       "metric that selects models) are drawn, best first.",
    "input_noise.png": "Test accuracy (%) against the standard deviation of Gaussian noise added to the test "
                       "inputs (in their normalised scale, the same noisy copies for every variant), per setting: "
                       "mean ± std over seeds; 0 is the clean test split.",
}


def draw_reliability(records: Sequence[VariantRecord]):
    """Reliability diagrams, one panel per setting (at most `PANEL_SETTINGS`, the best:
    `panel_settings`; a matplotlib Figure, not kept by pyplot): each line's points are (mean
    confidence, accuracy) of the pooled non-empty bins."""
    from matplotlib.figure import Figure

    groups, left_out = panel_settings(records)
    cols = min(len(groups), 4)
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows), layout="constrained")
    if left_out:
        fig.suptitle(left_out, fontsize=8)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)  # tick labels on the outer panels
    for ax, (setting, runs) in zip(axes.flat, groups.items()):
        confidence, accuracy, count = pooled_reliability(runs)
        ax.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        ax.plot(confidence, accuracy, "-", color="C0", linewidth=1, gid=setting)
        ax.scatter(confidence, accuracy, s=8 + 60 * np.sqrt(count / max(count.sum(), 1)), color="C0", zorder=3)
        ece = mean_std(r.metric("test_ece") for r in runs)[0]
        ax.set_title("\n".join(setting.split(", ")) + f"\nECE {100 * ece:.2f} %", fontsize=7)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for n, ax in enumerate(axes.flat):
        if n >= len(groups):
            ax.axis("off")
        elif n + cols >= len(groups):  # no panel below it: its confidence ticks are labelled
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.supxlabel("confidence", fontsize=9)
    fig.supylabel("accuracy", fontsize=9)
    return fig


def draw_input_noise(records: Sequence[VariantRecord]):
    """Test accuracy (%) against the input noise's std, one line per setting (a matplotlib Figure):
    the points are (0, clean accuracy) and (std, accuracy at that level), means over seeds."""
    from matplotlib.figure import Figure

    levels = [level for level in noise_levels(records) if float(level) != 0]
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for i, (setting, runs) in enumerate(by_setting(records).items()):
        keys = ["test_accuracy", *(f"test_accuracy_noise_{level}" for level in levels)]
        stats = [mean_std(100.0 * r.metrics[k] if k in r.metrics else None for r in finished(runs)) for k in keys]
        bars = ax.errorbar([0.0, *map(float, levels)], [m for m, _ in stats], yerr=[s for _, s in stats],
                           fmt="o", linestyle=("-", "--", ":", "-.")[i // 10 % 4], capsize=3,
                           color=f"C{i % 10}", label=setting)
        bars.lines[0].set_gid(setting)
    ax.set(xlabel="std of the Gaussian input noise", ylabel="test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig
