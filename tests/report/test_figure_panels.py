"""Figures of one panel per setting (learning curves, reliability diagrams) draw at most 16
settings: beyond that, the best ones as the sweep selects models (the mean over seeds of the
early-stopping monitor's best value), best first, and the figure says what it left out."""
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
