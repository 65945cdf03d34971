"""Errors of `python -m jaxmlp.report`: a --run that names no run, another sweep's parent run or
a child run, and a SQLite store that does not exist; each one line on stderr, exit code 2,
nothing written, logged or created. Two tiny sweeps tracked in one temporary MLflow store."""
from __future__ import annotations

from types import SimpleNamespace

import pytest


from jaxmlp.report.cli import main as report_main
from jaxmlp.tracking import Tracker

from tests.helpers.sweep import TINY_BASE, compile_cache, run_sweep_cli, write_sweep

#: Two one-variant sweeps of one epoch, into the same store.
SWEEPS = {name: {"name": name, "base": {**TINY_BASE, "training": {"epochs": 1, "batch_size": 64}},
                 "grid": {key: [value]}, "seeds": 1}
          for name, key, value in (("activations", "model.activation", "tanh"), ("dropout", "model.dropout", 0.3))}


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store):
    """Both sweeps tracked into one store: their files, parent runs and a child run."""
    root = tmp_path_factory.mktemp("report_errors")
    uri = new_store(root)
    files, parents = {}, {}
    tracker = Tracker(uri)
    for name, spec in SWEEPS.items():
        files[name] = write_sweep(root, spec)
        result = run_sweep_cli(files[name], "--tracking-uri", uri, "--no-progress", "--compile-cache",
                               compile_cache(tmp_path_factory))
        assert result.code == 0, result.err
        experiment_id, _ = tracker.find_experiment(name)
        parents[name] = tracker.find_parent(experiment_id, name).run_id
    (child,) = tracker.children(parents["activations"])
    return SimpleNamespace(root=root, uri=uri, tracker=tracker, files=files, parents=parents, child=child["run_id"])


def _refused(capsys, argv: list[str]) -> str:
    """Run the report; check it is refused with one `error:` line and no traceback; return that line."""
    assert report_main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, captured.err
    assert captured.out == ""
    return err


def _reported(store, name: str) -> list[str]:
    return [a.path for a in store.tracker.client.list_artifacts(store.parents[name], "report")]


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_an_unknown_run_id_names_the_run_the_store_and_how_to_find_the_parent(store, tmp_path, capsys):
    out = tmp_path / "out"
    err = _refused(capsys, [str(store.files["activations"]), "--tracking-uri", store.uri, "--run", "deadbeef",
                            "--out", str(out)])
    assert "--run deadbeef: no run with this id in " + store.uri in err
    assert "parent run of 'activations'" in err and "mlflow ui --backend-store-uri" in err and "omit --run" in err
    assert not out.exists()


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_another_sweeps_parent_run_is_refused_and_nothing_is_written_or_logged(store, tmp_path, capsys):
    out = tmp_path / "out"
    run = store.parents["dropout"]
    err = _refused(capsys, [str(store.files["activations"]), "--tracking-uri", store.uri, "--run", run,
                            "--out", str(out)])
    assert f"--run {run}: a parent run of sweep 'dropout' in {store.uri}, not of 'activations'" in err
    assert not out.exists()
    assert _reported(store, "dropout") == [] and _reported(store, "activations") == []


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_child_run_id_is_refused_as_not_a_parent_run(store, tmp_path, capsys):
    out = tmp_path / "out"
    err = _refused(capsys, ["activations", "--tracking-uri", store.uri, "--run", store.child, "--out", str(out)])
    assert f"--run {store.child}: this run in {store.uri} is not a sweep's parent run" in err
    assert "child run" in err and "parent run of 'activations'" in err
    assert not out.exists()


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_the_sweeps_own_parent_run_is_reported_by_file_and_by_experiment_id(store, tmp_path):
    run = store.parents["activations"]
    experiment_id, _ = store.tracker.find_experiment("activations")
    for target in (str(store.files["activations"]), experiment_id):
        out = tmp_path / target.replace("/", "_")
        assert report_main([target, "--tracking-uri", store.uri, "--run", run, "--out", str(out), "--no-log"]) == 0
        assert (out / "report.csv").is_file()


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_an_explicit_sqlite_store_that_does_not_exist_is_not_created(store, tmp_path, capsys):
    for database in (tmp_path / "other.db", tmp_path / "no_such_folder" / "mlflow.db"):
        uri = f"sqlite:///{database}"
        err = _refused(capsys, [str(store.files["activations"]), "--tracking-uri", uri, "--out",
                                str(tmp_path / "out")])
        assert f"error: {uri}: no MLflow store there ({database} does not exist)" in err
        assert not database.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_the_default_store_that_does_not_exist_is_not_created(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    err = _refused(capsys, [str(store.files["activations"])])
    assert f"error: sqlite:///{tmp_path}/mlflow.db (the default:" in err and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_uri_of_no_tracking_store_scheme_is_refused_by_its_scheme(store, tmp_path, capsys):
    err = _refused(capsys, [str(store.files["activations"]), "--tracking-uri", "bogus://x", "--out",
                            str(tmp_path / "out")])
    assert "error: --tracking-uri bogus://x: its scheme 'bogus://' is not a tracking store" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
@pytest.mark.parametrize("uri, reason", [("sqlite://", "SQLite would keep everything in memory"),
                                         ("http://[::1", "it is not a valid URI (Invalid IPv6 URL)")])
def test_an_in_memory_or_unparsable_uri_is_refused_with_the_reason(store, tmp_path, capsys, uri, reason):
    err = _refused(capsys, [str(store.files["activations"]), "--tracking-uri", uri, "--out", str(tmp_path / "out")])
    assert err.startswith(f"error: --tracking-uri {uri}: ") and reason in err
    assert not (tmp_path / "out").exists()


def test_a_deeply_nested_sweep_file_is_refused_in_one_line(tmp_path, capsys):
    """A 5,000-deep list was a RecursionError traceback; the report now reads sweep files bounded."""
    (tmp_path / "deep.yaml").write_text("name: deep\nbase: " + "[" * 5000 + "]" * 5000 + "\n")
    err = _refused(capsys, [str(tmp_path / "deep.yaml"), "--out", str(tmp_path / "out")])
    assert "deep.yaml: its lists and mappings nest deeper than 64 levels" in err


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_an_out_folder_under_a_regular_file_is_refused_before_anything_is_written(store, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    err = _refused(capsys, [str(store.files["activations"]), "--tracking-uri", store.uri, "--out",
                            str(tmp_path / "file" / "out"), "--no-log"])
    assert err.startswith(f"error: --out {tmp_path / 'file' / 'out'}: cannot create the folder (")


def test_a_sweep_file_over_the_size_bound_is_refused_unparsed(tmp_path, capsys):
    """The report read sweep files unbounded (a 50 MB file: 57 s)."""
    (tmp_path / "big.yaml").write_text("name: big\ndescription: '" + "x" * (2 << 20) + "'\n")
    err = _refused(capsys, [str(tmp_path / "big.yaml"), "--out", str(tmp_path / "out")])
    assert "big.yaml: 2,097,178 bytes; sweep files are limited to 1,048,576 bytes" in err
