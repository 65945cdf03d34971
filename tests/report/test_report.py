"""The report of a sweep, built from a small real sweep tracked in a temporary MLflow store."""
from __future__ import annotations

import base64
import csv
import io
import math
import re
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest


from jaxmlp import report
from jaxmlp.records import VariantRecord, setting_label
from jaxmlp.report import ReportError, load_references
from jaxmlp.report.cli import main as report_main
from jaxmlp.report.page import MARK_END, MARK_START, results_markers
from jaxmlp.commands.sweep import main as sweep_main
from jaxmlp.tracking import Tracker

from tests.helpers.sweep import compile_cache, log_final_metrics, start_parent

SWEEP = """\
name: report_test
description: Two activations and two dropout rates on the digits set, for the report tests.
base:
  data: {name: digits}
  model: {hidden: [16]}
  training: {epochs: 5, batch_size: 64, early_stopping: {patience: 2}}
grid:
  model.activation: [relu, tanh]
  model.dropout: [0.0, 0.3]
seeds: 2
"""
REFERENCES = """\
references:
  - setting: model.activation=relu, model.dropout=0
    value: 30.0
    source: by label
  - setting: {model.activation: tanh, model.dropout: 0.3, model.hidden: [16]}
    metric: test_error_percent
    value: 20.5
    source: by configuration
  - setting: {model.activation: sigmoid}
    value: 1.0
    source: matches nothing
"""
FIGURES = {"test_metric.png", "learning_curves.png", "activations.png", "generalisation_gap.png",
           "reliability.png"}  # classification: reliability diagrams
README = f"# An experiment\n\nbefore\n{MARK_START}\nnot yet run\n{MARK_END}\nafter\n"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, new_store):
    """One sweep run into an empty store, reported twice: by name without logging, then by file."""
    root = tmp_path_factory.mktemp("report")
    sweep = root / "sweep.yaml"
    sweep.write_text(SWEEP)
    (root / "references.yaml").write_text(REFERENCES)
    uri = new_store(root)
    assert sweep_main([str(sweep), "--tracking-uri", uri, "--no-progress",
                       "--compile-cache", compile_cache(tmp_path_factory)]) == 0
    tracker = Tracker(uri)
    experiment_id = tracker.client.get_experiment_by_name("report_test").experiment_id
    parent = tracker.find_parent(experiment_id, "report_test").run_id
    assert report_main(["report_test", "--tracking-uri", uri, "--out", str(root / "by_name"), "--no-log"]) == 0
    unlogged = [a.path for a in tracker.client.list_artifacts(parent, "report")]
    readme = root / "README.md"
    readme.write_text(README)
    out = root / "out"
    assert report_main([str(sweep), "--tracking-uri", uri, "--out", str(out), "--readme", str(readme)]) == 0
    return SimpleNamespace(root=root, uri=uri, tracker=tracker, parent=parent, out=out, readme=readme,
                           experiment_id=experiment_id, unlogged=unlogged, children=tracker.children(parent))


def _expected(children) -> dict[str, dict]:
    """Test error (%) mean and std over seeds per setting, computed here from the children's metrics."""
    by_setting: dict[str, list[dict]] = {}
    for c in children:
        by_setting.setdefault(c["tags"]["jaxmlp.setting"], []).append(c)
    expected = {}
    for setting, runs in by_setting.items():
        errors = [100 * (1 - c["metrics"]["test_accuracy"]) for c in runs if c["status"] == "FINISHED"]
        expected[setting] = {"mean": float(np.mean(errors)), "std": float(np.std(errors, ddof=1)),
                             "n": len(errors), "n_params": runs[0]["metrics"]["n_params"],
                             "best_epoch": float(np.mean([c["metrics"]["best_epoch"] for c in runs]))}
    return expected


def _csv_rows(path) -> dict[str, dict]:
    return {row["setting"]: row for row in csv.DictReader(io.StringIO(path.read_text()))}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_table_numbers_equal_what_mlflow_holds(tracked):
    expected = _expected(tracked.children)
    rows = _csv_rows(tracked.out / "report.csv")
    assert list(rows) == ["model.activation=relu, model.dropout=0", "model.activation=relu, model.dropout=0.3",
                          "model.activation=tanh, model.dropout=0", "model.activation=tanh, model.dropout=0.3"]
    markdown = (tracked.out / "report.md").read_text()
    for setting, want in expected.items():
        row = rows[setting]
        assert float(row["test_error_percent"]) == pytest.approx(want["mean"], abs=1e-9)
        assert float(row["test_error_percent_std"]) == pytest.approx(want["std"], abs=1e-9)
        assert int(row["n_seeds"]) == want["n"] == 2
        assert int(row["n_params"]) == want["n_params"]
        assert float(row["best_epoch"]) == pytest.approx(want["best_epoch"])
        assert f"| {setting} | {want['mean']:.2f} ± {want['std']:.2f} | 2 |" in markdown
        # dead units of the one hidden layer at the last epoch, from the histories in the store
        last = [100 * tracked.tracker.metric_history(c["run_id"], "dead_fraction_0")[1][-1]
                for c in tracked.children if c["tags"]["jaxmlp.setting"] == setting and c["status"] == "FINISHED"]
        assert row["dead_units_percent"] == f"{np.mean(last):.1f}"
    assert "Dead units (%)" in markdown


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_figures_are_valid_pngs(tracked):
    for name in FIGURES:
        data = (tracked.out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) > 5000, name
        image = matplotlib.image.imread(tracked.out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_html_is_self_contained_with_table_and_figures(tracked):
    page = (tracked.out / "report.html").read_text()
    assert "<table>" in page and "test error (%)" in page
    for setting, want in _expected(tracked.children).items():
        assert f"<td>{setting}</td><td>{want['mean']:.2f} ± {want['std']:.2f}</td>" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(base64.b64decode(image)[:4] == b"\x89PNG" for image in images)
    assert not re.search(r'src="(?!data:)', page), "every image is inlined"


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_artifacts_are_logged_on_the_parent_run_unless_no_log(tracked):
    assert tracked.unlogged == []
    logged = {a.path for a in tracked.tracker.client.list_artifacts(tracked.parent, "report")}
    assert logged == {f"report/{name}" for name in {"report.md", "report.csv", "report.html", *FIGURES}}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_report_by_sweep_name_equals_report_by_file(tracked):
    by_name = _csv_rows(tracked.root / "by_name" / "report.csv")
    assert by_name == _csv_rows(tracked.out / "report.csv")


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_references_appear_with_their_difference(tracked):
    rows = _csv_rows(tracked.out / "report.csv")
    expected = _expected(tracked.children)
    relu, tanh = "model.activation=relu, model.dropout=0", "model.activation=tanh, model.dropout=0.3"
    for setting, value, source in ((relu, 30.0, "by label"), (tanh, 20.5, "by configuration")):
        assert float(rows[setting]["reference"]) == value
        assert float(rows[setting]["reference_diff"]) == pytest.approx(expected[setting]["mean"] - value)
        assert rows[setting]["reference_source"] == source
    others = set(rows) - {relu, tanh}
    assert all(rows[s]["reference"] == "nan" and rows[s]["reference_source"] == "" for s in others)
    markdown = (tracked.out / "report.md").read_text()
    assert f"| 30.00 | {expected[relu]['mean'] - 30.0:+.2f} | by label |" in markdown
    assert "matches nothing" not in markdown


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_readme_changes_only_between_the_markers(tracked):
    text = tracked.readme.read_text()
    before, _, rest = text.partition(MARK_START)
    inside, _, after = rest.partition(MARK_END)
    assert before == README.partition(MARK_START)[0] and after == README.partition(MARK_END)[2]
    assert "not yet run" not in inside
    assert "| setting | test error (%) |" in inside and tracked.parent in inside


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_readme_with_a_block_per_sweep_changes_only_this_sweeps_block(tracked, tmp_path):
    other_start, other_end = results_markers("report_test_cpu")
    start, end = results_markers("report_test")
    text = f"# two settings\n{other_start}\nkeep me\n{other_end}\n{start}\nnot yet run\n{end}\n"
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert report_main(["report_test", "--tracking-uri", tracked.uri, "--out", str(tmp_path / "r"), "--no-log",
                        "--readme", str(readme)]) == 0
    new = readme.read_text()
    assert new.startswith(f"# two settings\n{other_start}\nkeep me\n{other_end}\n{start}\n")
    inside = new.partition(start)[2].partition(end)[0]
    assert "not yet run" not in inside and tracked.parent in inside and new.endswith(f"{end}\n")


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_readme_without_markers_is_an_error(tracked, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    code = report_main(["report_test", "--tracking-uri", tracked.uri, "--out", str(tmp_path / "r"), "--no-log",
                        "--readme", str(readme)])
    assert code == 2 and MARK_START in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_unknown_sweep_names_the_store_and_the_fix(tracked, capsys):
    assert report_main(["no_such_sweep", "--tracking-uri", tracked.uri, "--no-log"]) == 2
    err = capsys.readouterr().err
    assert "no MLflow experiment named 'no_such_sweep'" in err and "python -m jaxmlp.sweep" in err


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_report_by_experiment_id_and_parent_run(tracked, tmp_path):
    assert report_main([tracked.experiment_id, "--tracking-uri", tracked.uri, "--run", tracked.parent,
                        "--out", str(tmp_path), "--no-log"]) == 0
    assert _csv_rows(tmp_path / "report.csv").keys() == _csv_rows(tracked.out / "report.csv").keys()


def test_references_file_errors_name_the_entry_and_key(tmp_path):
    path = tmp_path / "references.yaml"
    path.write_text("references:\n  - {setting: {model.hiden: [800]}, value: 1.6, source: paper}\n")
    with pytest.raises(ReportError, match=r"references\[0\]\.setting\.model\.hiden: unknown configuration key "
                                          r"\(did you mean 'model\.hidden'\?\)"):
        load_references(path)
    path.write_text("references:\n  - {setting: base, metric: accuracy, value: 1.6, source: paper}\n")
    with pytest.raises(ReportError, match=r"references\.0\.metric: 'accuracy' is not allowed"):
        load_references(path)


# -- pure functions, no MLflow --

def test_report_rows_for_regression_show_test_loss():
    records = [VariantRecord(setting={"model.hidden": 8}, seed=s, status="FINISHED", metrics={"test_loss": loss},
                             best_epoch=3, stopped_epoch=5, n_params=100.0) for s, loss in enumerate((1.0, 3.0))]
    (row,) = report.report_rows(report.summarize(records))
    assert (row["test_loss"], row["test_loss_std"], row["n_params"]) == (2.0, pytest.approx(math.sqrt(2)), 100)
    assert "2.0000 ± 1.4142" in report.to_markdown([row], report.HEADERS)
    assert report.display_metric(records) == "test_loss"


def test_swept_axis_prefers_the_last_numeric_key_and_falls_back_to_settings():
    grid = {f"a={a}, lr={lr}": {"model.activation": a, "optimizer.learning_rate": lr}
            for a in ("relu", "tanh") for lr in (0.01, 0.1)}
    assert report.swept_axis(grid) == ("optimizer.learning_rate", True)
    zipped = {f"h={h}": {"model.hidden": h, "optimizer.learning_rate": lr}
              for h, lr in (([8], 0.1), ([8, 8], 0.01))}
    assert report.swept_axis(zipped) == (None, False)
    paired = {f"{h} {a}": {"model.hidden": h, "model.activation": a, "model.dropout": d}
              for h, a, d in (([8], "sigmoid", 0.0), ([8, 8], "sigmoid", 0.5), ([8, 8], "relu", 0.5))}
    assert report.swept_axis(paired) == (None, False), "a zip is no axis, even where two settings differ in one key"
    assert report.swept_axis(grid, prefer="model.activation") == ("model.activation", False)
    depth = {f"{h} {p}": {"model.hidden": h, "training.early_stopping.patience": p}
             for h in ([8], [8, 8]) for p in (None, 5)}
    assert report.swept_axis(depth) == ("model.hidden", False)


def test_setting_labels_are_made_from_the_values():
    assert setting_label({"model.dropout": 0.2, "model.hidden": [128, 128], "optimizer.max_norm": None}) == (
        "model.dropout=0.2, model.hidden=128x128, optimizer.max_norm=None")
    assert setting_label({}) == "base"


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_variant_trained_again_after_a_kill_counts_once(tracked, tmp_path):
    from jaxmlp.tracking import find_sweep

    t = tracked.tracker
    experiment_id = t.experiment("resumed_by_hand")
    parent = start_parent(t, experiment_id, "resumed", sweep_name="resumed_by_hand")
    for status, accuracy in (("KILLED", None), ("FINISHED", 0.9)):
        child = t.start_child(experiment_id, parent, "relu | seed=0", variant_key="key0", index=0,
                              setting={"model.activation": "relu"}, seed=0, group="g0",
                              params={"model.activation": "relu"})
        if accuracy is not None:
            t.log_history(child, [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.5 / e} for e in (1, 2)])
            log_final_metrics(t, child, {"test_accuracy": accuracy, "best_epoch": 2, "stopped_epoch": 2}, step=2)
        t.finish(child, status)
    (record,) = find_sweep(t, "resumed_by_hand").records
    assert record.status == "FINISHED" and record.metric("test_accuracy") == pytest.approx(0.9)
    assert record.history["val_loss"] == ([1, 2], [1.5, 0.75])
    assert record.config == {"model.activation": "relu"}


def test_reference_columns_only_where_an_entry_matched():
    rows = report.summarize([VariantRecord(setting={"model.dropout": 0.5}, seed=0, status="FINISHED",
                                           metrics={"test_accuracy": 0.9}, best_epoch=4, stopped_epoch=6)])
    assert "reference" not in report.report_rows(rows, {})[0]
    (row,) = report.report_rows(rows, {"model.dropout=0.5": {"value": 4.0, "source": "paper"}})
    assert (row["test_error_percent"], row["reference_diff"]) == (pytest.approx(10.0), pytest.approx(6.0))


def test_a_setting_whose_group_failed_still_gets_a_row_in_every_format():
    records = [VariantRecord(setting={"model.dropout": 0}, seed=0, status="FINISHED", metrics={"test_accuracy": 0.9},
                             best_epoch=3, stopped_epoch=5, n_params=100, train_seconds=1.5),
               VariantRecord(setting={"model.dropout": 0.5}, seed=0, status="FAILED")]
    rows = report.summarize(records)
    assert [r["n_params"] for r in rows] == [100, None] and list(rows[0]) == list(rows[1])
    failed = list(csv.DictReader(io.StringIO(report.to_csv(rows))))[1]
    assert (failed["setting"], failed["n_seeds"], failed["failed"]) == ("model.dropout=0.5", "0", "1")
    assert "| model.dropout=0.5 | 0 |" in report.to_markdown(rows)
    assert "model.dropout=0.5" in report.to_text(report.report_rows(rows), report.HEADERS)


def test_a_setting_of_one_seed_shows_no_spread():
    """A spread of one seed is undefined, not ± 0: the value alone; two seeds show mean ± std."""
    records = [VariantRecord(setting={"model.dropout": d}, seed=s, status="FINISHED",
                             metrics={"test_accuracy": a}, best_epoch=3, stopped_epoch=5)
               for d, s, a in [(0.0, 0, 0.9), (0.5, 0, 0.8), (0.5, 1, 0.9)]]
    rows = report.report_rows(report.summarize(records))
    text = report.to_text(rows, report.HEADERS).splitlines()
    one, two = (next(line for line in text if line.startswith(f"model.dropout={d}")) for d in ("0 ", "0.5"))
    assert re.search(r"\s10\.00\s", one) and "±" not in one
    assert "15.00 ± 7.07" in two


def test_a_columns_numbers_get_one_number_of_decimals_from_its_largest_value():
    from jaxmlp.report.tables import table_cells

    rows = [{"setting": "a", "best_val_loss": 0.54831, "best_epoch": 2.0, "train_seconds": 0.07749, "lr": 1234.5},
            {"setting": "b", "best_val_loss": 1.11549, "best_epoch": 23.0, "train_seconds": 0.0026871, "lr": 0.25},
            {"setting": "c", "best_val_loss": 2.01912, "best_epoch": 7.0, "train_seconds": float("nan"), "lr": None}]
    titles, cells = table_cells(rows)
    column = {t: [row[j] for row in cells] for j, t in enumerate(titles)}
    assert column["best_val_loss"] == ["0.548", "1.115", "2.019"]  # 4 digits of 2.019, the others aligned
    assert column["best_epoch"] == ["2", "23", "7"]  # whole numbers (seeds agreeing) show whole
    assert column["train_seconds"] == ["0.07749", "0.00269", ""]
    assert column["lr"] == ["1,234", "0", ""]


#: A setting's name that carries HTML, a table cell boundary, a newline, a link and a terminal escape.
HOSTILE = "<img src=x onerror=alert(1)>|x\n[a](javascript:b) `c` \x1b[31mred"


def hostile_rows() -> list[dict]:
    records = [VariantRecord(setting={"name": name}, seed=0, status="FINISHED", metrics={"test_accuracy": 0.9},
                             best_epoch=3, stopped_epoch=5) for name in (HOSTILE, "plain")]
    return report.report_rows(report.summarize(records))


def test_a_setting_name_is_literal_text_in_the_markdown_table():
    """Rendered by a CommonMark parser, the name is the cell's text: no HTML, link or code from
    it, the table keeps its rows and columns."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").enable("table").render(report.to_markdown(hostile_rows(), report.HEADERS))
    assert "<img" not in rendered and "<a " not in rendered and "<code>" not in rendered
    assert rendered.count("<tr>") == 3
    cells = re.findall(r"<td>(.*?)</td>", rendered)
    assert len(cells) == 2 * len(re.findall(r"<th>", rendered))
    assert cells[0] == ("&lt;img src=x onerror=alert(1)&gt;|x\\n[a](javascript:b) `c` \\x1b[31mred")


def test_references_in_the_readme_block_are_literal_text():
    from markdown_it import MarkdownIt

    from jaxmlp.report.page import references_list, results_markdown

    cited = references_list({HOSTILE: {"value": 1.0, "source": "<script>x</script>"}})
    rendered = MarkdownIt("commonmark").render(results_markdown("meta", "", "notes", cited))
    assert "<img" not in rendered and "<script>" not in rendered and "&lt;script&gt;" in rendered


def test_a_setting_name_cannot_break_the_terminal_table():
    lines = report.to_text(hostile_rows(), report.HEADERS).splitlines()
    assert len(lines) == 3 and "\x1b" not in "".join(lines)
    assert lines[1].startswith("<img src=x onerror=alert(1)>|x\\n[a](javascript:b) `c` \\x1b[31mred")
    assert len({len(line) for line in lines}) == 1  # aligned: every row as wide as the titles


def test_figures_draw_names_as_plain_text_within_a_bounded_size():
    """Math text in a name (`$\\foo{$`) is drawn as it reads, not parsed (matplotlib would fail);
    a 7,000-character name makes no huge figure."""
    names = ["$\\foo{$ unbalanced", "long " + "x" * 7000, "plain"]
    records = [VariantRecord(setting={"name": name, "model.dropout": d}, seed=s, status="FINISHED",
                             metrics={"test_accuracy": 0.9 - d / 10 + s / 100, "final_train_accuracy": 0.95},
                             best_epoch=2, stopped_epoch=3,
                             history={"train_loss": ([1, 2, 3], [1.0, 0.8, 0.7]), "val_loss": ([1, 2, 3], [1.1, 0.9, 0.8])})
               for name, d in zip(names, (0.0, 0.2, 0.5)) for s in (0, 1)]
    figures = report.sweep_figures(records, report.summarize(records))
    assert {"test_metric.png", "learning_curves.png", "generalisation_gap.png"} <= set(figures)
    for name, png in figures.items():
        height, width = matplotlib.image.imread(io.BytesIO(png)).shape[:2]
        assert max(height, width) < 2500, (name, height, width)


def test_setting_metrics_of_long_names_fit_mlflow_keys_and_stay_distinct():
    """A 230-character setting name made `test_accuracy_mean/<name>` exceed MLflow's 250
    characters (the summary was spooled, and its replay always failed)."""
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, _validate_metric_name

    names = ["n" * 229 + "a", "n" * 229 + "b", "short"]
    records = [VariantRecord(setting={"name": name, "optimizer.learning_rate": 0.1, "model.activation": "leaky_relu"},
                             seed=0, status="FINISHED", metrics={"test_accuracy": 0.9}) for name in names]
    metrics = report.setting_metrics(records, report.summarize(records))
    assert len(metrics) == 6
    for key in metrics:
        assert len(key) <= MAX_ENTITY_KEY_LENGTH, key
        _validate_metric_name(key)
    assert "test_accuracy_mean/short lr 0.1 leaky_relu" in metrics
    assert all(key.startswith("test_accuracy_") for key in metrics)


@pytest.mark.parametrize("metric, values, best", [
    ("test_accuracy", [0.7, 0.95, float("nan"), 0.8], "b"),  # highest accuracy; a NaN setting never wins
    ("test_loss", [0.7, 0.95, float("nan"), 0.2], "d"),  # lowest loss
])
def test_best_row_is_the_setting_with_the_best_mean_test_metric(metric, values, best):
    records = [VariantRecord(setting={"name": name}, seed=0, status="FINISHED", metrics={metric: value})
               for name, value in zip("abcd", values)]
    rows = report.summarize(records)
    assert report.best_row(rows)["setting"] == best
    assert report.sweep_summary(records, rows, 0).best_setting == best
