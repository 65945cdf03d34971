"""The MLflow UI in a real browser: a small finished sweep logged to a real `mlflow server` on
loopback, its printed runs address opened in headless Chromium (Debian's `chromium`, driven
by Playwright for Python), and what the rendered pages show: the sweep's children listed with
their datasets, the parent row and its children once expanded, a child's page with its
dataset and its val_loss chart, the registered model with its alias.

Each step leaves a screenshot in the test's folder; a failing step names that folder.
Skipped where Playwright or a Chromium executable is missing (`.ci/run` installs both).
"""
from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.sweep import compile_cache, run_ui_sweep

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
#: The UI renders a page in seconds; a busy machine may take several times that.
TIMEOUT_MS = 60_000


class Screenshots:
    """Screenshots of the steps of one test in `folder`, numbered in the order they were taken."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.count = page, folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=path)
        return path

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One step: its screenshot after it, or, where it fails, then, with the folder in the error."""
        try:
            yield
        except Exception as err:
            shot = self.take(f"{name}-FAILED")
            raise AssertionError(f"browser step {name!r} failed ({err}); screenshots in {self.folder}, "
                                 f"this one {shot.name}") from err
        self.take(name)


@pytest.fixture
def browser_page(tmp_path):
    """A headless Chromium page (Debian's chromium, as root without its sandbox)."""
    if CHROMIUM is None:
        pytest.skip("no chromium executable (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _printed(out: str, label: str) -> str:
    """The address or URI the sweep printed after `label` ('runs page:')."""
    match = re.search(rf"^\s+{re.escape(label)}\s+(\S+)", out, re.MULTILINE)
    assert match, f"the sweep printed no {label!r} line:\n{out}"
    return match.group(1)


def test_the_ui_shows_the_sweep_runs_datasets_curves_and_registered_model(
        mlflow_server, browser_page, tmp_path, tmp_path_factory, monkeypatch):
    sweep = run_ui_sweep(tmp_path, mlflow_server, compile_cache(tmp_path_factory), monkeypatch, "ui-browser")
    page, shots = browser_page, Screenshots(browser_page, tmp_path / "screenshots")
    expect = sync_api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    children = [f"{activation} · seed {seed}" for activation in ("relu", "tanh") for seed in (0, 1)]

    with shots.step("children-listed"):  # the address the sweep printed
        page.goto(_printed(sweep.out, "runs page:"))
        for name in children:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        expect(page.get_by_text(re.compile(r"^digits \([0-9a-f]{16}\)$")).first).to_be_visible()
        expect(page.get_by_text("4 matching runs")).to_be_visible()

    with shots.step("parent-collapsed"):  # the whole experiment: the UI would restore the last filter and order
        page.goto(f"{mlflow_server}/#/experiments/{sweep.experiment_id}/runs?workflowType=machine_learning"
                  "&searchFilter=&orderByKey=attributes.start_time&orderByAsc=false")
        parent_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=sweep.parent_name))
        expect(parent_row).to_be_visible()
        expect(page.get_by_role("link", name=children[0], exact=True)).to_have_count(0)

    with shots.step("parent-expanded"):
        parent_row.locator("button[data-component-id*=runnamecellrenderer]").click()
        for name in children:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()

    with shots.step("child-overview"):
        page.get_by_role("link", name=children[0], exact=True).click()
        expect(page.get_by_role("heading", name=children[0])).to_be_visible()
        expect(page.get_by_role("link", name=sweep.parent_name)).to_be_visible()  # its "Parent run" link
        expect(page.get_by_text(re.compile(r"^digits \([0-9a-f]{16}\)$")).first).to_be_visible()
        expect(page.get_by_text(re.compile("^training$", re.IGNORECASE)).first).to_be_visible()  # its context

    with shots.step("child-val-loss-chart"):
        page.get_by_role("tab", name="Model metrics").or_(page.get_by_text("Model metrics", exact=True)).first.click()
        page.get_by_placeholder(re.compile("Search metric charts")).fill("val_loss")
        expect(page.get_by_text(f"{children[0]} (val_loss)", exact=True)).to_be_visible()

    with shots.step("registered-model"):
        page.goto(f"{mlflow_server}/#/models/{sweep.model_name}")
        expect(page.get_by_text("Version 1").first).to_be_visible()
        expect(page.get_by_text("@ champion").first).to_be_visible()
