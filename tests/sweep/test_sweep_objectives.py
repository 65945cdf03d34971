"""A random sweep with two objectives, run end to end into a real SQLite MLflow store: the
terminal's Pareto column, each run's `jaxmlp.pareto` tag, the parent's front table, scatter,
importance chart and tables, and the report command drawing them from the store."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jaxmlp.report.pareto import pareto_mask

from tests.helpers.sweep import TINY_BASE, compile_cache, run_sweep_cli, store_client, sweep_runs, write_sweep

RANDOM = {"samples": 8, "seed": 1, "params": {"model.hidden": {"choice": [[4], [16]]},
                                              "optimizer.learning_rate": {"loguniform": [0.01, 0.3]}}}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> SimpleNamespace:
    """Eight random settings of two widths, one seed, three epochs, objectives loss and size."""
    folder = tmp_path_factory.mktemp("objectives")
    uri = f"sqlite:///{folder}/mlflow.db"
    base = {**TINY_BASE, "training": {**TINY_BASE["training"], "epochs": 3}}
    path = write_sweep(folder, {"name": "two-objectives", "base": base, "random": RANDOM, "seeds": [0],
                                "objectives": ["best_val_loss", "n_params"]})
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache",
                           compile_cache(tmp_path_factory))
    client = store_client(uri)
    parents, children = sweep_runs(client, "two-objectives")
    return SimpleNamespace(folder=folder, path=path, uri=uri, result=result, client=client, parent=parents[0],
                           children=children)


def _expected_front(children) -> set[str]:
    points = np.asarray([[c.data.metrics["best_val_loss"], c.data.metrics["n_params"]] for c in children])
    return {c.info.run_id for c, on in zip(children, pareto_mask(points, [False, False])) if on}


@pytest.mark.slow  # trains a sweep of eight settings in two compiled programs (about 20 s on two cores)
def test_runs_are_tagged_and_the_parent_holds_the_front_and_the_importance(swept, tmp_path):
    assert swept.result.code == 0, swept.result.err
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
    lines = swept.result.out.splitlines()
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
