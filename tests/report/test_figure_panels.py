"""Figures of one panel per setting (learning curves, reliability diagrams) draw at most 16
settings: beyond that, the best ones as the sweep selects models (the mean over seeds of the
early-stopping monitor's best value), best first, and the figure says what it left out. Figures
of a value against the swept axis number the settings of a sweep without one beyond 16 (or put
each at its dropout rate for the generalisation gap), and label log axes in plain text."""
from __future__ import annotations

import numpy as np
import pytest

from jaxmlp.records import VariantRecord
from jaxmlp.report.diagrams import draw_reliability
from jaxmlp.report.figures import _pyplot, draw_learning_curves
from jaxmlp.report.tables import PANEL_SETTINGS, panel_settings


def records(n_settings: int, monitor: str = "val_loss") -> list[VariantRecord]:
    """Two seeds per setting; setting i's mean best validation score is a known permutation of i
    (seed 1 a little worse than seed 0, so only the mean over seeds ranks them right)."""
    rng = np.random.default_rng(0)
    scores = rng.permutation(n_settings) / n_settings
    out = []
    for i, score in enumerate(scores):
        for seed in (0, 1):
            value = float(score + 0.01 * seed)
            metrics = {f"best_{monitor}": value, "test_accuracy": 0.9, "test_ece": 0.05}
            out.append(VariantRecord(
                setting={"optimizer.learning_rate": 1e-4 * (i + 1)}, seed=seed, status="FINISHED", metrics=metrics,
                config={"training.early_stopping.monitor": monitor}, best_epoch=2,
                history={"val_loss": ([1, 2, 3], [1.0, value, 1.0]), "train_loss": ([1, 2, 3], [1.0, 0.5, 0.4])},
                reliability={"confidence": [0.5, 0.9], "accuracy": [0.4, 0.95], "count": [10.0, 90.0]}))
    out.append(VariantRecord(setting={"optimizer.learning_rate": 1.0}, seed=0, status="FAILED", diverged=True,
                             config={"training.early_stopping.monitor": monitor}))
    return out


def expected_best(recs: list[VariantRecord], monitor: str) -> list[str]:
    finished = [r for r in recs if r.finished]
    labels = list(dict.fromkeys(r.label for r in finished))
    means = {label: np.mean([r.metrics[f"best_{monitor}"] for r in finished if r.label == label]) for label in labels}
    return sorted(labels, key=lambda label: means[label] if "loss" in monitor else -means[label])


def panel_gids(fig) -> list[str]:
    """The setting each panel draws, panel by panel (the lines' gids)."""
    return [next(line.get_gid() for line in ax.get_lines() if line.get_gid()) for ax in fig.axes if ax.get_lines()]


def texts(fig) -> str:
    from matplotlib.text import Text

    return " ".join(t.get_text() for t in fig.findobj(Text))


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_beyond_sixteen_settings_the_best_are_drawn_best_first_and_the_figure_says_so(monitor):
    recs = records(40, monitor)
    best = expected_best(recs, monitor)[:PANEL_SETTINGS]
    groups, note = panel_settings(recs)
    assert list(groups) == best
    assert "16 best of 41 settings" in note and f"best_{monitor}" in note
    assert ("lowest" if monitor == "val_loss" else "highest") in note
    curves = draw_learning_curves(recs)
    assert panel_gids(curves) == best
    assert "16 best of 41 settings" in texts(curves)
    _pyplot().close(curves)
    reliability = draw_reliability(recs)
    assert panel_gids(reliability) == best
    assert "16 best of 41 settings" in texts(reliability)


def test_up_to_sixteen_settings_all_are_drawn_in_the_sweeps_order_without_a_note():
    recs = records(15)  # and the failed one: 16 settings
    labels = list(dict.fromkeys(r.label for r in recs))
    groups, note = panel_settings(recs)
    assert list(groups) == labels and note == ""
    curves = draw_learning_curves(recs)
    assert panel_gids(curves) == labels  # the failed setting's panel too (its curves empty)
    assert "best of" not in texts(curves)
    _pyplot().close(curves)


def sampled(n_settings: int) -> list[VariantRecord]:
    """Settings of a random or optimised sweep: every one its own learning rate and dropout rate
    (no grid axis); two seeds each, test accuracy 0.9 - setting / 100 - seed / 1000."""
    rng = np.random.default_rng(1)
    rates, dropouts = 10 ** rng.uniform(-4, -1, n_settings), rng.uniform(0, 0.6, n_settings)
    return [VariantRecord(setting={"optimizer.learning_rate": float(lr), "model.dropout": float(d)}, seed=seed,
                          status="FINISHED", metrics={"test_accuracy": 0.9 - i / 100 - seed / 1000})
            for i, (lr, d) in enumerate(zip(rates, dropouts)) for seed in (0, 1)]


def error(record: VariantRecord) -> float:
    return 100 * (1 - record.metrics["test_accuracy"])


def drawn_points(ax) -> tuple[np.ndarray, np.ndarray]:
    """The (x, mean) points of an axis figure's first series (its errorbar's data line)."""
    line = ax.get_lines()[0]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def test_beyond_sixteen_sampled_settings_are_numbered_in_the_sweeps_order():
    from jaxmlp.report.figures import draw_axis_figure

    recs = sampled(PANEL_SETTINGS + 4)
    fig = draw_axis_figure(recs, error, "test error (%)")
    ax = fig.axes[0]
    xs, means = drawn_points(ax)
    assert xs.tolist() == list(range(PANEL_SETTINGS + 4))
    np.testing.assert_allclose(means, [100 * (0.1 + i / 100 + 0.0005) for i in range(PANEL_SETTINGS + 4)])
    assert ax.get_xlabel().startswith(f"setting, numbered in the sweep's order (of {PANEL_SETTINGS + 4}")
    fig.canvas.draw()
    assert all(t.get_text().lstrip("−-").isdigit() for t in ax.get_xticklabels() if t.get_text())
    _pyplot().close(fig)


def test_beyond_sixteen_sampled_settings_the_gap_is_drawn_at_each_dropout_rate():
    from jaxmlp.report.figures import draw_axis_figure

    recs = sampled(PANEL_SETTINGS + 4)
    fig = draw_axis_figure(recs, error, "gap", "model.dropout")
    ax = fig.axes[0]
    xs, means = drawn_points(ax)
    by_dropout = {r.setting["model.dropout"]: 100 * (0.1 + i // 2 / 100 + 0.0005) for i, r in enumerate(recs)}
    np.testing.assert_allclose(xs, sorted(by_dropout))
    np.testing.assert_allclose(means, [by_dropout[x] for x in sorted(by_dropout)])
    assert ax.get_xlabel() == "model.dropout" and ax.get_xscale() == "linear"
    assert ax.get_lines()[0].get_linestyle() == "None"  # points, not a line through unrelated settings
    _pyplot().close(fig)


def test_up_to_sixteen_sampled_settings_are_named_below_their_points():
    from jaxmlp.report.figures import draw_axis_figure

    recs = sampled(4)
    fig = draw_axis_figure(recs, error, "test error (%)")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) == 4 and all("learning_rate=" in label and "dropout=" in label for label in labels)
    _pyplot().close(fig)


def test_log_axes_are_labelled_in_plain_text_where_math_text_is_off():
    """The figures are drawn with math text off (a `$` in a name starts none): a log axis's
    default labels would then read '$\\mathdefault{10^{-2}}$'."""
    import matplotlib
    from jaxmlp.report.figures import draw_axis_figure

    recs = [VariantRecord(setting={"optimizer.learning_rate": lr}, seed=0, status="FINISHED",
                          metrics={"test_accuracy": 0.9}) for lr in (1e-4, 1e-3, 1e-2, 1e-1)]
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = draw_axis_figure(recs, error, "test error (%)")
        ax = fig.axes[0]
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
    assert ax.get_xscale() == "log" and labels
    assert not any("$" in label or "mathdefault" in label for label in labels), labels
    values = {float(label.replace("\u2212", "-")) for label in labels}  # (matplotlib's minus sign)
    assert {1e-4, 1e-3, 1e-2, 1e-1} <= values, labels
    _pyplot().close(fig)
