"""The MLflow UI's parallel-coordinates chart over a sweep's numeric keys, in a real browser.

A tiny sweep over `optimizer.learning_rate` and `model.dropout` is logged to a real `mlflow
server`; in headless Chromium its printed runs address is opened, the chart view chosen and a
"Parallel coordinates" chart added through the UI with both swept keys and `test_accuracy`.
Each swept key is a param on its child, a string such as '0.05'; the UI treats an axis whose
values all parse as numbers as numeric. The chart draws its axes in SVG and its lines on a
canvas, so a script installed before the UI loads records the canvas's polylines: the test
reads every line back through the axes' ticks and finds each child run's values on one line.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from tests.helpers.sweep import (
    TINY_BASE,
    compile_cache,
    run_sweep_cli,
    store_client,
    sweep_runs,
    write_sweep,
)
from tests.tracking.test_browser import TIMEOUT_MS, Screenshots, _printed, browser_page, sync_api  # noqa: F401, F811 - the page fixture

pytestmark = pytest.mark.slow

LEARNING_RATES = [0.02, 0.05, 0.2]
DROPOUTS = [0.0, 0.2]
AXES = ["optimizer.learning_rate", "model.dropout", "test_accuracy"]

#: Keeps the polylines stroked on each canvas since it was last cleared (`window.canvasLines(canvas)`).
RECORD_CANVAS_LINES = """(() => {
  const lines = new WeakMap();
  window.canvasLines = (canvas) => lines.get(canvas) || [];
  const context = CanvasRenderingContext2D.prototype;
  const before = (name, record) => {
    const original = context[name];
    context[name] = function (...args) { record.call(this, ...args); return original.apply(this, args); };
  };
  before('beginPath', function () { this.pathPoints = []; });
  before('moveTo', function (x, y) { (this.pathPoints ||= []).push([x, y]); });
  before('lineTo', function (x, y) { (this.pathPoints ||= []).push([x, y]); });
  before('stroke', function () {
    if ((this.pathPoints || []).length > 1) {
      if (!lines.has(this.canvas)) lines.set(this.canvas, []);
      lines.get(this.canvas).push(this.pathPoints);
    }
    this.pathPoints = [];
  });
  before('clearRect', function (x, y) { if (x === 0 && y === 0) lines.set(this.canvas, []); });
})();"""

#: What one parallel-coordinates chart shows: its axes (full label, position, ticks) and its lines.
READ_CHART = """(chart) => ({
  axes: [...chart.querySelectorAll('.dimension')].map((axis) => ({
    label: axis.querySelector('.axis-label-tooltip text')?.textContent ?? axis.querySelector('.label').textContent,
    x: parseFloat(axis.getAttribute('transform').match(/translate\\(([-\\d.e]+)/)[1]),
    ticks: [...axis.querySelectorAll('.tick')].map((tick) => [
      parseFloat(tick.getAttribute('transform').match(/translate\\([-\\d.e]+,\\s*([-\\d.e]+)/)[1]),
      tick.textContent]),
  })),
  lines: window.canvasLines(chart.querySelector('canvas.foreground')),
})"""


def _numeric_axis(ticks: list[list]) -> tuple[float, float]:
    """(slope, intercept) of value = slope * y + intercept through an axis's ticks; fails where
    the ticks are not numbers evenly placed on a linear scale (as on a categorical axis)."""
    assert len(ticks) >= 2, f"an axis with ticks {ticks}"
    ys, values = np.array([y for y, _ in ticks]), np.array([float(text) for _, text in ticks])
    slope, intercept = np.polyfit(ys, values, 1)
    assert np.allclose(slope * ys + intercept, values, atol=abs(slope)), f"ticks {ticks} are not on a linear scale"
    return slope, intercept


def _lines_as_values(chart: dict) -> tuple[list[list[float]], list[float]]:
    """Each drawn line as its values on the axes (read through the ticks), and each axis's
    tolerance: one and a half pixels in its units (d3 draws ticks half a pixel off)."""
    scales = [_numeric_axis(axis["ticks"]) for axis in chart["axes"]]
    xs = np.array([axis["x"] for axis in chart["axes"]])
    values = []
    for line in chart["lines"]:
        assert len(line) == len(xs), f"a line with {len(line)} points over {len(xs)} axes: {line}"
        on_axis = {int(np.argmin(abs(xs - x))): y for x, y in line}
        values.append([slope * on_axis[i] + intercept for i, (slope, intercept) in enumerate(scales)])
    return values, [1.5 * abs(slope) for slope, _ in scales]


def _nearest(value: float, choices: list[float], tolerance: float) -> float:
    best = min(choices, key=lambda c: abs(c - value))
    assert abs(best - value) <= tolerance, f"a line at {value:.4g}, none of {choices}"
    return best


def _drawn_chart(page, lines: int) -> dict:
    """The one parallel-coordinates chart on the page (its card found by its metric) once it
    has drawn `lines` lines."""
    page.get_by_placeholder(re.compile("Search metric charts")).fill("test_accuracy")
    sync_api.expect(page.get_by_text("Parallel Coordinates", exact=True)).to_be_visible()
    chart = page.locator(".parcoords")
    sync_api.expect(chart).to_have_count(1)
    page.wait_for_function("(count) => { const canvas = document.querySelector('.parcoords canvas.foreground');"
                           " return canvas && window.canvasLines(canvas).length === count; }", arg=lines)
    return chart.evaluate(READ_CHART)


def test_the_parallel_coordinates_chart_draws_one_line_per_child_on_numeric_swept_axes(
        mlflow_server, browser_page, tmp_path, tmp_path_factory):  # noqa: F811
    spec = {"name": "ui-parallel", "base": TINY_BASE, "seeds": 1,
            "grid": {"optimizer.learning_rate": LEARNING_RATES, "model.dropout": DROPOUTS}}
    result = run_sweep_cli(write_sweep(tmp_path, spec), "--tracking-uri", mlflow_server, "--no-progress",
                           "--compile-cache", compile_cache(tmp_path_factory))
    assert result.code == 0, result.out + result.err
    _, children = sweep_runs(store_client(mlflow_server), "ui-parallel")
    assert len(children) == len(LEARNING_RATES) * len(DROPOUTS)
    accuracy = {(float(c.data.params["optimizer.learning_rate"]), float(c.data.params["model.dropout"])):
                c.data.metrics["test_accuracy"] for c in children}

    page, shots = browser_page, Screenshots(browser_page, tmp_path / "screenshots")
    expect = sync_api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    page.add_init_script(RECORD_CANVAS_LINES)

    with shots.step("chart-view"):  # the address the sweep printed: its children, listed flat
        page.goto(_printed(result.out, "runs page:"))
        expect(page.get_by_text(f"{len(children)} matching runs")).to_be_visible()
        assistant = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
        if assistant.is_visible():  # the UI opens its assistant panel on a first visit; the charts get its room
            assistant.click()
        page.locator("label", has=page.locator("input[name=runs-view-mode][value=CHART]")).click()
        expect(page.get_by_role("button", name="Add chart").first).to_be_visible()

    with shots.step("chart-configured"):
        page.get_by_role("button", name="Add chart").first.click()
        page.get_by_role("menuitem", name="Parallel coordinates").click()
        dialog = page.get_by_role("dialog")
        boxes = dialog.get_by_role("combobox")  # the chart type, then the params and the metrics to show
        expect(boxes.first).to_have_text("Parallel coordinates")
        for box, keys in ((boxes.nth(1), AXES[:2]), (boxes.nth(2), AXES[2:])):
            for key in keys:
                box.click()
                box.fill(key)
                page.locator(".du-bois-light-select-item-option", has_text=re.compile(f"^{re.escape(key)}$")).click()
            page.keyboard.press("Escape")
        expect(dialog.locator(".parcoords .dimension")).to_have_count(len(AXES))  # its preview
        dialog.get_by_role("button", name="Add chart").click()
        expect(dialog).to_have_count(0)

    with shots.step("chart-card"):  # the new card, found among the section's metric charts by its metric
        shown = _drawn_chart(page, len(children))

    with shots.step("chart-kept"):  # the UI keeps its charts per experiment in the browser's local storage
        page.reload()
        assert _drawn_chart(page, len(children)) == shown
        kept = json.loads(page.evaluate("(id) => localStorage.getItem("
                                        "`MLflowLocalStorage-1.1-ExperimentPage-[\"${id}\"]-ReactComponentState`)",
                                        children[0].info.experiment_id))
        (config,) = [c for c in kept["compareRunCharts"] if c["type"] == "PARALLEL"]
        assert (config["selectedParams"], config["selectedMetrics"]) == (AXES[:2], AXES[2:])

    assert [axis["label"] for axis in shown["axes"]] == AXES
    lines, tolerance = _lines_as_values(shown)
    assert len(lines) == len(children)
    on_axes = [(_nearest(lr, LEARNING_RATES, tolerance[0]), _nearest(drop, DROPOUTS, tolerance[1]), acc)
               for lr, drop, acc in lines]
    assert sorted(setting for *setting, _ in on_axes) == sorted(map(list, accuracy))  # one line per child
    for lr, drop, acc in on_axes:
        assert acc == pytest.approx(accuracy[lr, drop], abs=tolerance[2]), f"the line of lr {lr}, dropout {drop}"
    for axis, swept in zip(shown["axes"], (LEARNING_RATES, DROPOUTS)):  # each axis spans its swept values
        ticks = [float(text) for _, text in axis["ticks"]]
        assert min(swept) <= min(ticks) and max(ticks) == pytest.approx(max(swept)), (axis["label"], ticks)
