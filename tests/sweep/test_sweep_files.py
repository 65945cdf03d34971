"""Every shipped sweep file (sweeps/*.yaml) loads, expands and dry-runs, as the experiments' files do."""
from __future__ import annotations

import re

import pytest

from jaxmlp.commands.sweep import main as sweep_main
from jaxmlp.sweep.optimize_run import first_batch
from jaxmlp.sweep.spec import load_sweep

from tests.helpers import ROOT

SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
EXPERIMENT_FILES = sorted(f for f in (ROOT / "experiments").glob("*/*.yaml") if f.name != "references.yaml")


def test_the_shipped_sweep_files_are_there():
    assert len(SWEEP_FILES) >= 10
    assert {"activations.yaml", "depth.yaml", "dropout.yaml", "mnist_random.yaml"} <= {f.name for f in SWEEP_FILES}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda f: f.name)
def test_sweep_file_dry_runs_and_prints_its_whole_plan(path, capsys):
    sweep = load_sweep(path)
    assert sweep_main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    variants = first_batch(sweep) if sweep.spec.optimize else sweep.variants  # (the study's first proposals)
    settings = len({v.label for v in variants})
    header = re.escape(f"sweep '{sweep.spec.name}' ({path}): {len(variants)} variant") + "s? = " + re.escape(
        f"{settings} setting") + "s? x "
    assert re.match(header + r"[\d-]+ seeds?; (\d+) group\(s\), (\d+) compiled program\(s\)", out), out[:400]
    groups = int(re.search(r"(\d+) group\(s\)", out).group(1))
    rows = [line for line in out.splitlines()[2:] if line.strip() and not line.startswith("optimize:")]
    assert len(rows) == groups >= 1
    assert sum(int(row.split()[1]) for row in rows) == len(variants)  # every variant in one group


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda f: f.name)
def test_sweep_file_describes_itself(path):
    assert len(load_sweep(path).spec.description.strip()) > 50


def test_sweep_names_are_unique_across_sweeps_and_experiments():
    """One MLflow experiment per sweep name: two files of one name would mix their runs."""
    names = [load_sweep(f).spec.name for f in SWEEP_FILES + EXPERIMENT_FILES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
