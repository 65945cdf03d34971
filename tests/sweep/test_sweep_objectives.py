"""A random sweep with two objectives, run end to end by the library into a real SQLite MLflow
store: each run's `jaxmlp.pareto` tag, the parent's front table, scatter, importance chart and
tables, the report command drawing them from the store, and the sweep command's Pareto column."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jaxmlp.report.pareto import pareto_mask

from tests.helpers.sweep import TINY_BASE, compile_cache, print_resumed, run_tracked, write_sweep

RANDOM = {"samples": 8, "seed": 1, "params": {"model.hidden": {"choice": [[4], [16]]},
                                              "optimizer.learning_rate": {"loguniform": [0.01, 0.3]}}}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> SimpleNamespace:
    """Eight random settings of two widths, one seed, three epochs, objectives loss and size;
    then the command resumes the finished sweep (it trains nothing) for its printed table."""
    folder = tmp_path_factory.mktemp("objectives")
    base = {**TINY_BASE, "training": {**TINY_BASE["training"], "epochs": 3}}
    path = write_sweep(folder, {"name": "two-objectives", "base": base, "random": RANDOM, "seeds": [0],
                                "objectives": ["best_val_loss", "n_params"]})
    run = run_tracked(path, compile_cache(tmp_path_factory))
    return SimpleNamespace(folder=folder, path=path, uri=run.uri, result=run.result, client=run.client,
                           parent=run.parents[0], children=run.children, printed=print_resumed(run))


def _expected_front(children) -> set[str]:
    points = np.asarray([[c.data.metrics["best_val_loss"], c.data.metrics["n_params"]] for c in children])
    return {c.info.run_id for c, on in zip(children, pareto_mask(points, [False, False])) if on}


@pytest.mark.slow  # trains a sweep of eight settings in two compiled programs (about 20 s on two cores)
def test_runs_are_tagged_and_the_parent_holds_the_front_and_the_importance(swept, tmp_path):
    assert swept.result.ok, swept.result.failures
    tagged = {c.info.run_id for c in swept.children if c.data.tags["jaxmlp.pareto"] == "true"}
    assert tagged == _expected_front(swept.children) and 0 < len(tagged) < 8
    assert all(c.data.tags["jaxmlp.pareto"] in ("true", "false") for c in swept.children)
    run_id = swept.parent.info.run_id
    front = json.loads(Path(swept.client.download_artifacts(run_id, "pareto_front.json", str(tmp_path))).read_text())
    assert set(front["columns"]) == {"setting", "best_val_loss", "n_params"} and len(front["data"]) == len(tagged)
    plots = {f.path for f in swept.client.list_artifacts(run_id, "plots")}
    assert {"plots/pareto.png", "plots/importance.png"} <= plots
    objectives_md = Path(swept.client.download_artifacts(run_id, "summary/objectives.md", str(tmp_path))).read_text()
    assert "### Pareto front" in objectives_md and "### Which numbers mattered" in objectives_md
    assert "model.hidden" in objectives_md and "optimizer.learning_rate" in objectives_md


@pytest.mark.slow  # shares the sweep of the test above
def test_the_terminal_marks_the_front_and_says_which_objective_selects(swept):
    assert swept.printed.code == 0, swept.printed.err
    lines = swept.printed.out.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["setting"])
    assert header.split()[-1] == "pareto"
    rows = [line for line in lines[lines.index(header) + 1:] if line.startswith("model.hidden")]
    assert len(rows) == 8 and sum(row.rstrip().endswith("yes") for row in rows) == sum(
        c.data.tags["jaxmlp.pareto"] == "true" for c in swept.children)
    assert ("pareto: yes where no other setting matches or beats it in every objective (best_val_loss (min), "
            "n_params (min)); the best model is the setting best in best_val_loss, the first objective") in lines


@pytest.mark.slow  # shares the sweep of the tests above
def test_the_report_command_draws_the_front_and_the_importance_from_the_store(swept, tmp_path, capsys):
    from jaxmlp.report.cli import main

    out = tmp_path / "report"
    assert main([str(swept.path), "--tracking-uri", swept.uri, "--out", str(out), "--no-log"]) == 0
    assert {"pareto.png", "importance.png"} <= {p.name for p in out.iterdir()}
    markdown = (out / "report.md").read_text()
    assert "### Pareto front" in markdown and "### Which numbers mattered" in markdown
    assert "![pareto.png](pareto.png)" in markdown
    header = (out / "report.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "pareto" and "best_val_loss" in header
    on_front = [row.rsplit(",", 1)[1] for row in (out / "report.csv").read_text().splitlines()[1:]]
    assert on_front.count("yes") == sum(c.data.tags["jaxmlp.pareto"] == "true" for c in swept.children)
