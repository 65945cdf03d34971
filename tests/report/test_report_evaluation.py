"""The report's calibration and input-noise columns and figures, from records read back from a
real MLflow store: the plotted points are read back from the figure objects."""
from __future__ import annotations

import numpy as np
import pytest

from jaxmlp import report
from jaxmlp.records import VariantRecord
from jaxmlp.report.diagrams import draw_input_noise, draw_reliability
from jaxmlp.report.evaluation import evaluation_columns, pooled_reliability
from jaxmlp.tracking import Tracker

from tests.helpers.sweep import start_child, start_parent

BINS = 15


def curve(bins: dict[int, tuple[float, float, int]]) -> dict[str, list[float]]:
    """A reliability curve with the given (confidence, accuracy, count) per bin, the other bins empty."""
    rows = np.zeros((3, BINS))
    for b, values in bins.items():
        rows[:, b] = values
    return dict(zip(("confidence", "accuracy", "count"), rows.tolist()))


def record(dropout: float, seed: int, accuracy: float, noisy: tuple[float, float], ece: float,
           reliability: dict[str, list[float]]) -> VariantRecord:
    metrics = {"test_accuracy": accuracy, "test_loss": 0.3, "test_ece": ece, "test_brier": 0.5 * ece,
               "final_train_accuracy": 1.0 - 0.01 * seed, "test_accuracy_noise_0.1": noisy[0],
               "test_accuracy_noise_0.3": noisy[1]}
    return VariantRecord(setting={"model.dropout": dropout}, seed=seed, status="FINISHED", metrics=metrics,
                         config={"model.dropout": dropout}, reliability=reliability)


RECORDS = [
    record(0.0, 0, 0.98, (0.96, 0.80), 0.02, curve({13: (0.9, 0.8, 10), 14: (0.99, 0.98, 90)})),
    record(0.0, 1, 0.96, (0.94, 0.70), 0.04, curve({13: (0.88, 0.6, 30), 14: (0.97, 0.96, 70)})),
    record(0.5, 0, 0.97, (0.97, 0.90), 0.01, curve({12: (0.85, 0.8, 20), 14: (0.98, 0.99, 80)})),
]


@pytest.fixture(scope="module")
def read_back(tmp_path_factory, new_store) -> list[VariantRecord]:
    """RECORDS logged as a sweep's children in a real SQLite store and read back."""
    tracker = Tracker(new_store(tmp_path_factory.mktemp('store')))
    exp = tracker.experiment("evaluation figures")
    parent = start_parent(tracker, exp)
    for i, r in enumerate(RECORDS):
        child = start_child(tracker, exp, parent, f"v{i}", f"k{i}", index=i, setting=r.setting, seed=r.seed,
                            params=r.config)
        tracker.finish_child(child, r, history=[], files={}, reason=None)
    return tracker.variant_records(parent)


def test_reliability_diagram_points_are_the_seeds_pooled_bins(read_back):
    assert [r.reliability for r in read_back] == [r.reliability for r in RECORDS]
    fig = draw_reliability(read_back)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    assert set(lines) == {"model.dropout=0", "model.dropout=0.5"}
    x, y = lines["model.dropout=0"].get_data()
    assert x == pytest.approx([(0.9 * 10 + 0.88 * 30) / 40, (0.99 * 90 + 0.97 * 70) / 160])
    assert y == pytest.approx([(0.8 * 10 + 0.6 * 30) / 40, (0.98 * 90 + 0.96 * 70) / 160])
    assert lines["model.dropout=0.5"].get_data()[0] == pytest.approx([0.85, 0.98])
    titles = [ax.get_title() for ax in fig.axes if ax.get_lines()]
    assert titles[0].endswith("ECE 3.00 %") and titles[1].endswith("ECE 1.00 %")


def test_input_noise_figure_points_are_the_mean_accuracy_per_level(read_back):
    fig = draw_input_noise(read_back)
    (ax,) = fig.axes
    lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
    x, y = lines["model.dropout=0"].get_data()
    assert list(x) == [0.0, 0.1, 0.3]
    assert y == pytest.approx([97.0, 95.0, 75.0])
    assert lines["model.dropout=0.5"].get_data()[1] == pytest.approx([97.0, 97.0, 90.0])


def test_table_columns_of_the_final_evaluation(read_back):
    rows = report.report_rows(report.summarize(read_back))
    first = rows[0]
    assert first["train_error_percent"] == pytest.approx(0.5)
    assert first["ece_percent"] == pytest.approx(3.0) and first["brier"] == pytest.approx(0.015)
    assert first["error (%) at noise 0.1"] == pytest.approx(5.0)
    assert first["error (%) at noise 0.3"] == pytest.approx(25.0)
    assert "temperature" not in first  # not fitted: no column
    markdown = report.to_markdown(rows, report.HEADERS)
    assert "| train error (%) | ECE (%) | Brier | error (%) at noise 0.1 | error (%) at noise 0.3 |" in markdown
    assert report.sweep_figures(read_back, rows).keys() >= {"reliability.png", "input_noise.png"}


def test_records_without_calibration_get_no_such_columns_or_figures():
    plain = [VariantRecord(setting={"model.dropout": 0.1}, seed=0, status="FINISHED",
                           metrics={"test_accuracy": 0.9, "test_loss": 0.3})]
    assert evaluation_columns(plain, []) == {}
    assert pooled_reliability(plain)[0].size == 0
    assert not {"reliability.png", "input_noise.png"} & report.sweep_figures(plain, report.summarize(plain)).keys()
