"""Named zipped settings (`zip.name`) end to end: the names are what the terminal, the MLflow runs
and `jaxmlp.report` show, a references file may match them, and `--resume` finds the variants
of a named sweep. A tiny sweep tracked in a temporary MLflow store."""
from __future__ import annotations

import pytest

import csv


from jaxmlp.report.cli import main as report_main

from tests.helpers.sweep import TINY_BASE, run_sweep_cli, store_client, sweep_runs, write_sweep

SPEC = {"name": "named", "base": {**TINY_BASE, "training": {"epochs": 2, "batch_size": 64}},
        "zip": {"name": ["narrow", "wide + dropout"], "model.hidden": [[8], [32]], "model.dropout": [0.0, 0.5],
                "seeds": [1, 2]}}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_named_settings_are_shown_logged_reported_and_matched_by_name(tmp_path, store_uri, cache):
    uri = store_uri
    path = write_sweep(tmp_path, SPEC)
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 0, result.err
    printed = [line.split("  ")[0] for line in result.out.splitlines() if line.startswith(("narrow ", "wide + dropout "))]
    assert sorted(printed) == ["narrow", "wide + dropout"]

    (parent,), children = sweep_runs(store_client(uri), "named")
    assert sorted(c.info.run_name for c in children) == ["narrow · seed 0", "wide + dropout · seed 0",
                                                         "wide + dropout · seed 1"]
    by_name = {c.data.tags["jaxmlp.setting"]: c for c in children}
    assert by_name["wide + dropout"].data.params["model.dropout"] == "0.5"  # the values stay in the configuration

    (tmp_path / "references.yaml").write_text(
        "references:\n  - {setting: wide + dropout, value: 12.5, source: by its name}\n")
    out = tmp_path / "report"
    assert report_main([str(path), "--tracking-uri", uri, "--out", str(out), "--no-log",
                        "--references", str(tmp_path / "references.yaml")]) == 0
    rows = {r["setting"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert set(rows) == {"narrow", "wide + dropout"}
    assert rows["wide + dropout"]["n_seeds"] == "2" and rows["wide + dropout"]["reference_source"] == "by its name"
    assert rows["narrow"]["reference_source"] == ""

    again = run_sweep_cli(path, "--resume", "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert again.code == 0, again.err
    assert f"MLflow: parent run {parent.info.run_id} " in again.out  # the same parent run, nothing trained again
    resumed = [line.split("  ")[0] for line in again.out.splitlines() if line.startswith(("narrow ", "wide + dropout "))]
    assert sorted(resumed) == ["narrow", "wide + dropout"]
    (_,), after = sweep_runs(store_client(uri), "named")
    assert sorted(c.info.run_id for c in after) == sorted(c.info.run_id for c in children)
