"""Every experiment folder: its sweep files dry-run, its references parse, its README has the markers."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jaxmlp import report
from jaxmlp.records import VariantRecord
from jaxmlp.report import load_references
from jaxmlp.report.page import results_markers
from jaxmlp.commands.sweep import main as sweep_main
from jaxmlp.sweep.spec import load_sweep

from tests.helpers import ROOT

EXPERIMENTS = ROOT / "experiments"
FOLDERS = sorted(p for p in EXPERIMENTS.iterdir() if p.is_dir())
SWEEP_FILES = sorted(f for folder in FOLDERS for f in folder.glob("*.yaml") if f.name != "references.yaml")


def test_the_six_experiments_are_there_and_listed():
    names = [f.name for f in FOLDERS]
    assert names == ["activations", "depth", "dropout_srivastava2014", "early_stopping", "intro_claims", "loss_lecun"]
    index = (EXPERIMENTS / "README.md").read_text()
    assert all(f"`{name}/`" in index for name in names)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_each_folder_has_quick_and_cpu_settings(folder):
    assert (folder / "quick.yaml").is_file() and (folder / "cpu.yaml").is_file()


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_sweep_file_dry_runs(path, capsys):
    assert sweep_main([str(path), "--dry-run"]) == 0
    assert f"sweep '{path.parent.name}_{path.stem}'" in capsys.readouterr().out


def test_sweep_names_are_unique():
    names = [yaml.safe_load(f.read_text())["name"] for f in SWEEP_FILES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda f: f"{f.parent.name}/{f.name}")
def test_sweep_describes_itself_and_uses_mnist(path):
    sweep = load_sweep(path)
    assert len(sweep.spec.description) > 100
    assert {v.config.data.name for v in sweep.variants} == {"mnist"}
    if path.stem == "full":
        assert "GPU" in sweep.spec.description


def _matched_sources(path: Path, entries: list[dict]) -> set[str]:
    records = [VariantRecord(setting=dict(v.setting), seed=v.seed, status="FINISHED", config=v.config.flat())
               for v in load_sweep(path).variants]
    return {e["source"] for e in report.match_references(records, entries, report.ERROR_PERCENT).values()}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_references_parse_and_each_matches_a_cpu_and_full_setting_but_none_of_quick(folder):
    entries = load_references(folder / "references.yaml")
    assert all(e["source"] and e["value"] > 0 and isinstance(e["setting"], dict) for e in entries)
    for path in (folder / "cpu.yaml", folder / "full.yaml"):
        if path.is_file():
            assert _matched_sources(path, entries) == {e["source"] for e in entries}, path.name
    assert _matched_sources(folder / "quick.yaml", entries) == set()


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_readme_has_the_commands_and_the_results_markers(folder):
    text = (folder / "README.md").read_text()
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "references.yaml":
            continue
        start, end = results_markers(load_sweep(path).spec.name)
        assert text.count(start) == 1 and text.count(end) == 1, path.name
        assert text.index(start) < text.index(end), path.name
    assert f"python -m jaxmlp.sweep experiments/{folder.name}/cpu.yaml" in text
    assert f"python -m jaxmlp.report experiments/{folder.name}/cpu.yaml" in text
