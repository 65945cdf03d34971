"""An adaptive search in the report: pruned variants and variant-epochs per rung interval
(successive halving), the lineage and schedules of a population-based training; from tiny
real sweeps tracked in a temporary MLflow store, and from records built here."""
from __future__ import annotations

import collections
import contextlib
import csv
import io
import json
import re
from types import SimpleNamespace

import pytest
from tests.helpers.sweep import (
    compile_cache,
    run_sweep_cli,
    store_client,
    sweep_runs,
    write_sweep,
)

from jaxmlp import report
from jaxmlp.records import VariantRecord
from jaxmlp.report.cli import main as report_main
from jaxmlp.tracking import Tracker
from tests.sweep.test_sweep_search import PBT  # the PBT sweep those tests run

HALVING = {
    "base": {"data": {"name": "digits"}, "model": {"hidden": [16]}, "optimizer": {"name": "sgd", "momentum": 0.0},
             "training": {"epochs": 8, "batch_size": 64, "early_stopping": {"patience": None}}},
    "grid": {"optimizer.learning_rate": [0.001, 0.3, 0.01, 0.1]},
    "seeds": 2,
    "search": {"scheduler": "successive_halving", "rungs": [2, 4], "keep": 0.5},
}
LR = "hp/optimizer.learning_rate"


def _tracked(root, uri: str, name: str, spec: dict, cache: str) -> SimpleNamespace:
    """A sweep run into the empty store `uri` and reported (not logged) into root/out, with what the report printed."""
    path = write_sweep(root, {"name": name, **spec})
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--json", "--compile-cache", cache)
    assert result.code == 0, result.err
    out = root / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert report_main([name, "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    client = store_client(uri)
    (parent,), children = sweep_runs(client, name)
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    return SimpleNamespace(uri=uri, out=out, client=client, parent=parent, children=children, plots=plots,
                           outcome=json.loads(result.out), printed=printed.getvalue())


@pytest.fixture(scope="module")
def halving(tmp_path_factory, new_store) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("halving")
    return _tracked(root, new_store(root), "halving_report", HALVING, compile_cache(tmp_path_factory))


@pytest.fixture(scope="module")
def pbt(tmp_path_factory, new_store) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("pbt")
    return _tracked(root, new_store(root), "pbt_report", PBT, compile_cache(tmp_path_factory))


def _markdown_table(text: str, title: str) -> list[list[str]]:
    """The cells of the Markdown table under heading `title`."""
    section = text.split(f"### {title}\n", 1)[1]
    lines = [line for line in section.split("\n\n", 2)[1].splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


# -- successive halving, from a real sweep ----------------------------------------------------

@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_report_counts_pruned_settings_as_the_runs_record_them(halving):
    pruned = {c.data.tags["jaxmlp.setting"]: int(c.data.metrics["pruned_at_epoch"])
              for c in halving.children if c.data.tags.get("jaxmlp.outcome") == "pruned"}
    assert len(pruned) == 3  # 4 settings, rungs keeping half of 4, then half of 2
    rows = {r["setting"]: r for r in csv.DictReader(io.StringIO((halving.out / "report.csv").read_text()))}
    assert {s: int(r["pruned_at"]) for s, r in rows.items() if r["pruned_at"]} == pruned
    for setting, row in rows.items():
        trained = [c.data.metrics["epochs_trained"] for c in halving.children if c.data.tags["jaxmlp.setting"] == setting]
        assert int(row["variant_epochs"]) == sum(trained)
    markdown = (halving.out / "report.md").read_text()
    assert "pruned at epoch" in markdown and "variant-epochs" in markdown
    n_pruned = sum(c.data.tags.get("jaxmlp.outcome") == "pruned" for c in halving.children)
    assert f"{n_pruned} of 8 variants pruned by successive halving" in markdown
    assert halving.outcome["n_pruned"] == n_pruned == 6
    assert f"Where compute went: {n_pruned} of 8 variants pruned" in halving.printed
    assert "plots/lineage.png" not in halving.plots


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_compute_per_rung_interval_equals_the_epochs_the_runs_logged(halving):
    trained = [len(halving.client.get_metric_history(c.info.run_id, "val_loss")) for c in halving.children]
    expected = [[f"{a + 1}–{b}", str(sum(t > a for t in trained)), str(pruned),
                 str(sum(min(max(t, a), b) - a for t in trained))]
                for (a, b), pruned in (((0, 2), 4), ((2, 4), 2), ((4, 8), 0))]
    cells = _markdown_table((halving.out / "report.md").read_text(), "Where compute went")
    assert [row[:4] for row in cells] == expected
    assert sum(float(row[4]) for row in cells) == pytest.approx(100.0, abs=0.2)
    total = sum(trained)
    assert f"{total} variant-epochs of a budget of 64 ({100 * total / 64:.0f}%)" in (halving.out / "report.md").read_text()
    html = (halving.out / "report.html").read_text()
    assert "<h2>Where compute went</h2>" in html and f"<td>{expected[1][0]}</td><td>{expected[1][1]}</td>" in html


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_the_sweeps_parent_run_gets_the_counts_and_the_compute_table(halving):
    metrics = halving.parent.data.metrics
    assert metrics["n_pruned"] == 6
    assert metrics["variant_epochs"] == sum(c.data.metrics["epochs_trained"] for c in halving.children)
    summary = halving.client.download_artifacts(halving.parent.info.run_id, "summary/summary.md")
    with open(summary) as f:
        assert "### Where compute went" in f.read()


def test_a_sweep_without_search_has_no_search_columns_or_sections():
    records = [VariantRecord(setting={"model.dropout": d}, seed=0, status="FINISHED", metrics={"test_accuracy": 0.9},
                             epochs_trained=5, config={"training.epochs": 5}) for d in (0.0, 0.5)]
    rows = report.summarize(records)
    assert not {"pruned_at", "variant_epochs"} & set(rows[0])
    assert report.search_text(records) == report.search_markdown(records) == ""
    summary = report.sweep_summary(records, rows, 0)
    assert "n_pruned" not in summary.metrics and b"###" not in summary.files["summary.md"]
    assert "lineage.png" not in report.sweep_figures(records, rows)


# -- successive halving, pure ------------------------------------------------------------------

def _halving_records() -> list[VariantRecord]:
    """Rungs 2 and 4 of an 8-epoch budget: three variants pruned at 2, one early-stopped after
    epoch 1, two pruned at 4, one early-stopped after epoch 3, one trained to the end."""
    trained = [(2, 2), (2, 2), (2, 2), (1, None), (4, 4), (4, 4), (3, None), (8, None)]
    return [VariantRecord(setting={"optimizer.learning_rate": 0.1 * (i // 2 + 1)}, seed=i % 2, status="FINISHED",
                          index=i, epochs_trained=epochs, pruned_at=rung, config={"training.epochs": 8},
                          metrics={"test_accuracy": 0.5})
            for i, (epochs, rung) in enumerate(trained)]


def test_compute_by_rung_counts_variants_and_epochs_in_each_interval():
    rows = report.compute_by_rung(_halving_records())
    assert [(r["epochs"], r["variants"], r["pruned"], r["variant_epochs"]) for r in rows] == [
        ("1–2", 8, 3, 15), ("3–4", 4, 2, 7), ("5–8", 1, 0, 4)]
    assert [round(r["share_percent"], 2) for r in rows] == [round(100 * n / 26, 2) for n in (15, 7, 4)]
    text = report.search_text(_halving_records())
    assert text.startswith("Where compute went: 5 of 8 variants pruned by successive halving; 26 variant-epochs "
                           "of a budget of 64 (41%).")


def test_summary_shows_the_rung_of_each_setting_and_its_variant_epochs():
    records = _halving_records()
    rows = {r["setting"]: r for r in report.summarize(records)}
    assert [(r["pruned_at"], r["variant_epochs"]) for r in rows.values()] == [
        (2, 4), ("2 (1 of 2 seeds)", 3), (4, 8), (None, 11)]
    (last,) = [r for r in report.report_rows(list(rows.values())) if r["pruned_at"] is None]
    assert last["variant_epochs"] == 11
    summary = report.sweep_summary(records, list(rows.values()), 0)
    assert (summary.metrics["n_pruned"], summary.metrics["variant_epochs"]) == (5, 26)


def test_compute_needs_no_budget_and_no_rung():
    records = [VariantRecord(setting={}, seed=s, status="FINISHED", epochs_trained=e, lineage=[{"epoch": 2, "source": 1}])
               for s, e in ((0, 6), (1, 6))]
    assert [(r["epochs"], r["variant_epochs"]) for r in report.compute_by_rung(records)] == [("1–6", 12)]
    assert report.search_text(records).startswith("Lineage: 2 exploit steps of population-based training (after "
                                                  "epochs 2); 12 variant-epochs. Each member")


# -- population-based training, pure -----------------------------------------------------------

def _pbt_records() -> list[VariantRecord]:
    """Four members over 4 epochs; after epoch 2, member 3 copies member 0 (lr x 1.25) and
    member 2 copies member 1 (lr x 0.8)."""
    lrs = {0: [0.1] * 4, 1: [0.05] * 4, 2: [0.01, 0.01, 0.04, 0.04], 3: [0.2, 0.2, 0.125, 0.125]}
    lineage = {2: [{"epoch": 2, "source": 1}], 3: [{"epoch": 2, "source": 0}]}
    return [VariantRecord(setting={"optimizer.learning_rate": lrs[i][0]}, seed=0, status="FINISHED", index=i,
                          epochs_trained=4, lineage=lineage.get(i, []), metrics={"test_accuracy": 0.5},
                          history={LR: ([1, 2, 3, 4], lrs[i]), "val_loss": ([1, 2, 3, 4], [1.0] * 4)})
            for i in range(4)]


def _lineage_read_back(fig) -> tuple[dict[int, tuple[float, float]], set[tuple[int, int, int]]]:
    """From the figure's top panel: each member's row extent in epochs, and each arrow as
    (epoch, member, source), members named by their y tick labels."""
    ax = fig.axes[0]
    member_at = {round(tick): int(re.match(r"#(\d+) ", label.get_text()).group(1))
                 for tick, label in zip(ax.get_yticks(), ax.get_yticklabels())}
    rows = {member_at[round(line.get_ydata()[0])]: tuple(line.get_xdata()) for line in ax.get_lines()}
    arrows = {(round(a.xy[0]), member_at[round(a.xy[1])], member_at[round(a.xyann[1])]) for a in ax.texts}
    assert all(a.xy[0] == a.xyann[0] for a in ax.texts), "an arrow stays at its exploit epoch"
    return rows, arrows


def _schedules_read_back(ax) -> tuple[dict[int, dict[int, float]], list[tuple[tuple, tuple]]]:
    """From a schedule panel: member -> epoch -> value (its line pieces), and the dashed exploit connectors."""
    values: dict[int, dict[int, float]] = {}
    connectors = []
    for line in ax.get_lines():
        points = list(zip(line.get_xdata(), line.get_ydata()))
        if line.get_gid() == "exploit":
            connectors.append(tuple(points))
        else:
            member = int(line.get_gid().split()[1])
            assert not set(values.get(member, {})) & {int(x) for x, _ in points}, "pieces do not overlap"
            values.setdefault(member, {}).update({int(x): float(y) for x, y in points})
    return values, connectors


def test_lineage_figure_draws_each_copy_and_schedule_of_the_records():
    records = _pbt_records()
    fig = report.draw_lineage(records)
    rows, arrows = _lineage_read_back(fig)
    assert rows == {i: (1, 4) for i in range(4)}
    assert arrows == {(2, 3, 0), (2, 2, 1)}
    values, connectors = _schedules_read_back(fig.axes[1])
    assert values == {r.index: dict(zip(*r.history[LR])) for r in records}
    pieces = collections.Counter(line.get_gid() for line in fig.axes[1].get_lines())
    assert pieces == {"member 0": 1, "member 1": 1, "member 2": 2, "member 3": 2, "exploit": 2}  # broken at copies
    assert sorted(connectors) == sorted([((2, 0.05), (3, 0.04)), ((2, 0.1), (3, 0.125))])
    assert fig.axes[1].get_yscale() == "log" and fig.axes[1].get_ylabel() == "learning_rate"
    assert report.lineage_steps(records) == [{"epoch": 2, "member": 2, "source": 1},
                                             {"epoch": 2, "member": 3, "source": 0}]


def test_lineage_without_schedules_is_one_panel_and_a_lineage_table():
    records = [VariantRecord(**{**vars(r), "history": {}}) for r in _pbt_records()]
    fig = report.draw_lineage(records)
    assert len(fig.axes) == 1 and _lineage_read_back(fig)[1] == {(2, 3, 0), (2, 2, 1)}
    (lineage,) = report.search_sections(records)  # no compute per rung: nothing was pruned
    assert [(r["member"], r["copied_from"]) for r in lineage.rows] == [("#2", "2: #1"), ("#3", "2: #0")]
    figures = report.sweep_figures(records, report.summarize(records))
    assert figures["lineage.png"][:8] == b"\x89PNG\r\n\x1a\n"


# -- population-based training, from a real sweep ----------------------------------------------

def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_lineage_figure_of_a_real_population_matches_its_runs(pbt):
    records = Tracker(pbt.uri).variant_records(pbt.parent.info.run_id, ("hp/*",))
    fig = report.draw_lineage(records)
    rows, arrows = _lineage_read_back(fig)
    by_index = {int(c.data.tags["jaxmlp.variant_index"]): c for c in pbt.children}
    expected = {(step["epoch"], i, step["source"]) for i, c in by_index.items()
                for step in json.loads(c.data.tags.get("jaxmlp.lineage", "[]"))}
    assert len(expected) == 4 and arrows == expected
    assert rows == {i: (1, c.data.metrics["epochs_trained"]) for i, c in by_index.items()}
    values, connectors = _schedules_read_back(fig.axes[1])
    lr = {i: _history(pbt.client, c.info.run_id, LR) for i, c in by_index.items()}
    assert values == lr
    assert sorted(connectors) == sorted(((e, lr[s][e]), (e + 1, lr[m][e + 1])) for e, m, s in expected)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_report_of_a_real_population_lists_the_copies_and_draws_the_lineage(pbt):
    assert (pbt.out / "lineage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (pbt.out / "report.md").read_text()
    assert "![lineage.png](lineage.png)" in markdown
    expected = {f"#{c.data.tags['jaxmlp.variant_index']}": ", ".join(f"{s['epoch']}: #{s['source']}" for s in steps)
                for c in pbt.children if (steps := json.loads(c.data.tags.get("jaxmlp.lineage", "[]")))}
    cells = _markdown_table(markdown, "Lineage")
    assert {row[0]: row[2] for row in cells} == expected
    assert "4 exploit steps of population-based training (after epochs 3, 6)" in markdown
    assert "Lineage: 4 exploit steps" in pbt.printed
    assert "plots/lineage.png" in pbt.plots  # drawn by the sweep itself from its own records
    assert "pruned_at" not in (pbt.out / "report.csv").read_text().splitlines()[0]
