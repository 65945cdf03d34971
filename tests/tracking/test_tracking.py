"""Tracking against real MLflow stores: SQLite files in temporary folders and a real `mlflow server`."""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import jaxmlp
from jaxmlp.records import VariantRecord
from jaxmlp.tracking import (
    AsyncWriter, SweepNotFound, find_sweep, Tracker, TrackerProcess, TrackingError, resolve_tracking_uri, runs_page_url, ui_base_url,
    ui_command, unsupported_scheme,
)

from tests.helpers.sweep import start_child, start_parent


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store) -> Tracker:
    """One SQLite store for the module; tests use own experiments."""
    tracker = Tracker(new_store(tmp_path_factory.mktemp('store')))
    tracker.client  # opens the store now, outside any one test's timing
    return tracker


@pytest.fixture
def exp(store, request) -> str:
    return store.experiment(request.node.name)


def test_resolve_tracking_uri_explicit_then_env_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("sqlite:////data/runs.db") == "sqlite:////data/runs.db"
    assert resolve_tracking_uri("sqlite:///sub/runs.db") == f"sqlite:///{tmp_path}/sub/runs.db"


def test_unsupported_scheme_accepts_every_scheme_mlflow_has_a_tracking_store_for():
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    for scheme in _tracking_store_registry._registry:
        uri = f"{scheme}://host/x" if scheme else "/data/mlruns"
        assert unsupported_scheme(uri) is None, uri
    for uri in ("postgresql+psycopg2://u@db/x", "SQLITE:///x.db", "mlruns", "file:///tmp/mlruns"):
        assert unsupported_scheme(uri) is None, uri
    for uri in ("bogus://x", "sqlite3:///x.db", "s3://bucket/mlruns"):
        assert uri.split(":")[0] in unsupported_scheme(uri)
    for uri in ("sqlite://", "sqlite://?mode=memory"):
        assert "in memory" in unsupported_scheme(uri)
    for uri in ("http://[::1", "http://host:port/"):
        assert unsupported_scheme(uri).startswith("it is not a valid URI (")


def test_ui_command_and_runs_page():
    assert ui_command("sqlite:////w/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////w/mlflow.db"
    assert ui_command("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert (runs_page_url(ui_base_url("sqlite:////w/mlflow.db"), "3")
            == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning")
    assert (runs_page_url(ui_base_url("http://10.0.0.1:8080/"), "7")
            == "http://10.0.0.1:8080/#/experiments/7/runs?workflowType=machine_learning")
    children = "&searchFilter=tags.mlflow.parentRunId%20%3D%20%27abc%27"
    assert runs_page_url("http://h:5000", "7", "abc") == (
        f"http://h:5000/#/experiments/7/runs?workflowType=machine_learning{children}"
        "&orderByKey=metrics.%60best_val_loss%60&orderByAsc=true")
    assert runs_page_url("http://h:5000", "7", "abc", monitor="val_accuracy") == (
        f"http://h:5000/#/experiments/7/runs?workflowType=machine_learning{children}"
        "&orderByKey=metrics.%60best_val_accuracy%60&orderByAsc=false")
    assert runs_page_url("http://h:5000", "7", "abc", monitor=None) == (
        f"http://h:5000/#/experiments/7/runs?workflowType=machine_learning{children}")


def test_importing_tracking_does_not_import_mlflow():
    code = "import sys, jaxmlp.tracking; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_copied_store_is_migrated_to_mlflow_s_latest_schema_and_empty(store_uri, migrated_store):
    """The store the tests copy (`store_uri`) needs no migration when opened, and holds nothing."""
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist, _get_latest_schema_revision, _get_schema_version

    engine = sqlalchemy.create_engine(store_uri)
    try:
        assert _all_tables_exist(engine) and _get_schema_version(engine) == _get_latest_schema_revision()
    finally:
        engine.dispose()
    assert Path(store_uri.removeprefix("sqlite:///")) != migrated_store  # a copy: the template stays empty
    client = Tracker(store_uri).client
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert client.search_runs(["0"]) == []


def test_experiment_created_with_kind_and_tags_then_reused(store, tmp_path):
    first = store.experiment("reused", note="a")
    assert store.experiment("reused", note="b") == first
    found = store.client.get_experiment(first)
    assert found.tags["mlflow.experimentKind"] == "custom_model_development"
    assert found.tags["mlflow.note.content"] == "b"
    db_folder = Path(store.tracking_uri.removeprefix("sqlite:///")).parent
    assert found.artifact_location == (db_folder / "mlruns" / "reused").as_uri()


def test_deleted_experiment_error_says_how_to_restore(store):
    experiment_id = store.experiment("deleted one")
    store.client.delete_experiment(experiment_id)
    with pytest.raises(ValueError, match=rf"is deleted; restore it with .*--experiment-id {experiment_id}"):
        store.experiment("deleted one")


def test_parent_and_nested_children_with_params_and_tags(store, exp):
    parent = start_parent(store, exp, "sweep", sweep_name="s", params={"grid": ["lr"]})
    kids = [start_child(store, exp, parent, f"v{i}", f"key-{i}", params={"lr": 0.1 * i, "hidden": (8, 8)},
                        group="g0") for i in range(3)]
    runs = {r.info.run_id: r for r in store.client.search_runs([exp])}
    assert set(runs) == {parent, *kids}
    assert runs[parent].data.tags["jaxmlp.role"] == "parent"
    assert runs[parent].data.params == {"grid": "['lr']"}
    for i, kid in enumerate(kids):
        run = runs[kid]
        assert run.info.run_name == f"v{i}" and run.info.status == "RUNNING"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["jaxmlp.variant_key"] == f"key-{i}"
        assert run.data.tags["jaxmlp.group"] == "g0"
        assert run.data.params == {"lr": str(0.1 * i), "hidden": "(8, 8)", "variant_key": f"key-{i}", "group": "g0"}
    children = store.children(parent)
    assert sorted(c["run_id"] for c in children) == sorted(kids)
    assert {c["tags"]["jaxmlp.variant_key"] for c in children} == {"key-0", "key-1", "key-2"}
    assert {c["status"] for c in children} == {"RUNNING"}


def test_children_reads_every_page(store, exp):
    parent = start_parent(store, exp, "sweep")
    kids = {start_child(store, exp, parent, f"v{i}", str(i)) for i in range(5)}
    start_parent(store, exp, "other")
    assert {c["run_id"] for c in store.children(parent, page_size=2)} == kids


def test_more_than_100_params_and_tags_are_chunked_and_long_values_truncated(store, exp):
    params = {f"p{i:03d}": i for i in range(250)} | {"long": "x" * 7000}
    run = start_parent(store, exp, "c", params=params)
    store.finish(run, "FINISHED", tags={f"t{i:03d}": i for i in range(150)} | {"long_tag": "y" * 9000})
    data = store.client.get_run(run).data
    assert len(data.params) == 251 and data.params["p249"] == "249"
    assert len(data.params["long"]) == 6000 and data.params["long"].endswith("...")
    assert data.tags["t149"] == "149" and len(data.tags["long_tag"]) == 8000


def test_log_history_over_1000_points_reads_back_whole_histories(store, exp):
    run = start_parent(store, exp, "history")
    history = [{"epoch": e, "loss": 1.0 / (e + 1), "acc": e / 400, "lr": 1e-3} for e in range(400)]
    history[7]["loss"] = math.nan
    store.log_history(run, history)  # 1200 points: two log_batch calls
    for key in ("loss", "acc", "lr"):
        points = sorted(store.client.get_metric_history(run, key), key=lambda m: m.step)
        assert [m.step for m in points] == list(range(400))
        expected = [h[key] for h in history]
        assert [m.value for m in points if not math.isnan(m.value)] == [v for v in expected if not math.isnan(v)]
    assert math.isnan(store.client.get_metric_history(run, "loss")[7].value)
    by_step = {}
    for key in ("loss", "acc", "lr"):
        for m in store.client.get_metric_history(run, key):
            by_step.setdefault(m.step, set()).add(m.timestamp)
    assert all(len(stamps) == 1 for stamps in by_step.values())


def test_final_metrics_at_a_step(store, exp):
    run = start_parent(store, exp, "final")
    store.finish(run, "FINISHED", metrics={"test_accuracy": 0.9, "test_loss": np.float32(0.25)}, step=12)
    assert store.client.get_run(run).data.metrics == {"test_accuracy": 0.9, "test_loss": 0.25}
    assert [m.step for m in store.client.get_metric_history(run, "test_loss")] == [12]


def test_finish_statuses_and_failure_reason(store, exp):
    parent = start_parent(store, exp, "p")
    ok, failed, killed = (start_child(store, exp, parent, n, n) for n in ("ok", "failed", "killed"))
    store.finish(ok, "FINISHED")
    store.finish(failed, "FAILED", reason="diverged: loss is nan at epoch 3")
    store.finish(killed, "KILLED")
    runs = {c["run_id"]: c for c in store.children(parent)}
    assert [runs[r]["status"] for r in (ok, failed, killed)] == ["FINISHED", "FAILED", "KILLED"]
    assert runs[failed]["tags"]["jaxmlp.failure_reason"] == "diverged: loss is nan at epoch 3"
    assert "jaxmlp.failure_reason" not in runs[ok]["tags"]
    assert store.client.get_run(ok).info.end_time is not None
    with pytest.raises(Exception, match="Valid run status strings"):
        store.finish(ok, "DONE")


def test_mark_killed_ends_runs_left_running(store, exp):
    parent = start_parent(store, exp, "p")
    left = [start_child(store, exp, parent, f"c{i}", str(i)) for i in range(2)]
    store.mark_killed(left)
    for child in store.children(parent):
        assert child["status"] == "KILLED"
        assert "interrupted" in child["tags"]["jaxmlp.failure_reason"]


def _after_start_of(store, run_id: str) -> None:
    """Return once the clock has passed the run's recorded start (milliseconds), so the next
    run starts strictly later."""
    start = store.client.get_run(run_id).info.start_time
    while time.time_ns() // 1_000_000 <= start:
        time.sleep(0.001)


def test_find_parent_returns_newest_parent_of_that_sweep(store, exp):
    assert store.find_parent(exp, "mnist") is None
    old = start_parent(store, exp, "old", sweep_name="mnist", sweep_hash="h1")
    _after_start_of(store, old)
    newest = start_parent(store, exp, "new", sweep_name="mnist", sweep_hash="h2")
    _after_start_of(store, newest)
    other = start_parent(store, exp, "other", sweep_name="digits")
    starts = [store.client.get_run(r).info.start_time for r in (old, newest, other)]
    assert starts == sorted(set(starts))  # the order the test is about, as the store records it
    store.client.set_tag(start_child(store, exp, newest, "child", "k"), "jaxmlp.sweep_name", "mnist")
    found = store.find_parent(exp, "mnist")
    assert found.run_id == newest and found.sweep_hash == "h2"
    assert store.find_parent(exp, "it's") is None


def test_variant_records_read_back_what_start_and_finish_child_logged(store, exp):
    setting = {"model.dropout": 0.2, "model.hidden": [128, 128], "optimizer.max_norm": None}
    config = {**setting, "model.activation": "relu", "training.seed": 3, "training.early_stopping.restore_best": True}
    parent = start_parent(store, exp, "round trip")
    child = store.start_child(exp, parent, "v", variant_key="key", index=4, setting=setting, seed=3, group="g1",
                              params=config)
    record = VariantRecord(setting=setting, seed=3, status="FAILED", variant_key="key", index=4, diverged=True,
                           best_epoch=2, stopped_epoch=3, n_params=1234, train_seconds=1.5, compile_seconds=0.25,
                           metrics={"test_accuracy": 0.75, "test_loss": 0.5, "final_train_loss": 0.25,
                                    "best_val_loss": 0.125}, config=config,
                           reliability={"confidence": [0.0, 0.625], "accuracy": [0.0, 0.75], "count": [0.0, 8.0]})
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.0 / e, "epoch_seconds": 0.1} for e in (1, 2, 3)]
    store.finish_child(child, record, history=history, files={"params.msgpack": b"x"}, reason="diverged in 3")

    (back,) = store.variant_records(parent, histories=("val_*",))
    assert back == dataclasses.replace(record, run_id=child, history={"val_loss": ([1, 2, 3], [1.0, 0.5, 1 / 3])})
    dropout, hidden, max_norm = (back.setting[k] for k in setting)
    assert (type(dropout), dropout, hidden, max_norm) == (float, 0.2, [128, 128], None)
    run = store.client.get_run(child)
    assert run.info.status == "FAILED" and run.data.tags["jaxmlp.failure_reason"] == "diverged in 3"
    assert run.data.tags["jaxmlp.setting"] == "model.dropout=0.2, model.hidden=128x128, optimizer.max_norm=None"
    assert run.data.tags["jaxmlp.diverged"] == "true" and "epoch_seconds" not in run.data.metrics
    assert store.metric_history(child, "test_accuracy") == ([2], [0.75])  # final metrics at the best epoch
    assert [a.path for a in store.client.list_artifacts(child, "checkpoint")] == ["checkpoint/params.msgpack"]


def test_a_run_logged_before_the_configuration_tag_reads_its_config_from_its_params(store, exp):
    config = {"model.hidden": [64, 64], "optimizer.max_norm": None, "model.activation": "relu", "data.val_size": 0.1}
    parent = start_parent(store, exp, "older")
    new, old = (start_child(store, exp, parent, name, name, params=config) for name in ("new", "old"))
    assert json.loads(store.client.get_run(new).data.tags["jaxmlp.config_json"]) == config
    store.client.delete_tag(old, "jaxmlp.config_json")  # as a run of an older version holds it
    assert store.client.get_run(old).data.params["optimizer.max_norm"] == "None"
    assert [r.config for r in store.variant_records(parent)] == [config, config]


def test_variant_records_come_in_the_order_of_the_sweep(store, exp):
    parent = start_parent(store, exp, "order")
    for name, index in (("a", 2), ("b", 0), ("c", 1)):  # by name, the runs would come in another order
        start_child(store, exp, parent, name, f"key{index}", index=index, setting={"model.dropout": 0.1 * index})
    records = store.variant_records(parent)
    assert [(r.index, r.variant_key) for r in records] == [(0, "key0"), (1, "key1"), (2, "key2")]
    assert [r.status for r in records] == ["RUNNING"] * 3


def test_find_sweep_by_name_or_parent_run_and_its_errors(store, exp):
    parent = start_parent(store, exp, "found", sweep_name="test_find_sweep_by_name_or_parent_run_and_its_errors")
    child = start_child(store, exp, parent, "c", "k", setting={"model.dropout": 0.5})
    by_name = find_sweep(store, "test_find_sweep_by_name_or_parent_run_and_its_errors")
    assert (by_name.experiment_id, by_name.parent_run_id, [r.run_id for r in by_name.records]) == (exp, parent, [child])
    assert find_sweep(store, exp, run_id=parent).records == by_name.records
    with pytest.raises(SweepNotFound, match=rf"--run {child}: not a sweep's parent run .*pass the parent run's id"):
        find_sweep(store, exp, run_id=child)
    with pytest.raises(SweepNotFound, match=rf"no MLflow experiment named 'nothing' in {store.tracking_uri}"):
        find_sweep(store, "nothing")


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return ({alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
            | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module})


def test_no_module_outside_tracking_imports_mlflow_or_names_its_tags():
    from jaxmlp.tracking import schema

    tags = {value for name, value in vars(schema).items() if name.endswith("_TAG") and "." in value}
    package = Path(jaxmlp.__file__).parent
    outside = [p for p in package.rglob("*.py") if not p.is_relative_to(package / "tracking")]
    assert outside and {"jaxmlp.role", "jaxmlp.setting", "mlflow.parentRunId"} <= tags
    for path in outside:
        mlflow = {m for m in _imported_modules(path) if m == "mlflow" or m.startswith("mlflow.")}
        assert not mlflow, f"{path} imports {mlflow}"
        named = _string_constants(path) & tags
        assert not named, f"{path} names MLflow tags {named}"


def test_artifacts_text_bytes_and_files_land_next_to_the_store(store, exp, tmp_path):
    run = start_parent(store, exp, "artifacts")
    store.client.log_text(run, '{"a": 1}', "summary/config.json")
    store.log_folder(run, {"loss.png": b"\x89PNG.."}, "plots")
    (tmp_path / "top.bin").write_bytes(b"top")
    store.log_file(run, tmp_path / "top.bin")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    store.log_file(run, tmp_path / "table.csv", "tables")
    root = Path(store.client.get_run(run).info.artifact_uri.removeprefix("file://"))
    assert root.is_relative_to(Path(store.tracking_uri.removeprefix("sqlite:///")).parent)
    assert (root / "summary/config.json").read_text() == '{"a": 1}'
    assert (root / "plots/loss.png").read_bytes() == b"\x89PNG.."
    assert (root / "top.bin").read_bytes() == b"top"
    assert (root / "tables/table.csv").read_text() == "a,b\n1,2\n"


class _FlushSeen(AsyncWriter):
    """An AsyncWriter that sets `flushing` when flush (or close) is entered."""

    def __init__(self) -> None:
        super().__init__()
        self.flushing = threading.Event()

    def flush(self, raise_errors: bool = True):
        self.flushing.set()
        return super().flush(raise_errors)


def test_async_writer_runs_jobs_in_order_and_flush_waits():
    """The first job cannot end before flush is called: a writer that ran jobs side by side
    would finish the others first, and a flush that did not wait would return before it."""
    done: list[tuple[int, str]] = []
    writer = _FlushSeen()
    try:
        def job(i: int) -> None:
            if i == 0:
                assert writer.flushing.wait(60), "flush was never called"
            done.append((i, threading.current_thread().name))

        for i in range(5):
            writer.submit(job, i)
        assert done == []  # the first job is waiting, and no other has overtaken it
        writer.flush()
        assert [i for i, _ in done] == [0, 1, 2, 3, 4]
        assert all(name.startswith("jaxmlp-tracking") for _, name in done)
    finally:
        writer.close()


def test_async_writer_keeps_errors_and_runs_later_jobs():
    done: list[str] = []
    writer = AsyncWriter()
    failed = writer.submit(lambda: 1 / 0)
    writer.submit(done.append, "after")
    with pytest.raises(TrackingError, match=r"(?s)1 tracking job.*ZeroDivisionError") as raised:
        writer.flush()
    assert done == ["after"]
    assert isinstance(raised.value.errors[0], ZeroDivisionError)
    assert isinstance(failed.exception(), ZeroDivisionError)
    writer.flush()  # reported once
    writer.submit(int, "not a number")
    assert [type(e) for e in writer.close(raise_errors=False)] == [ValueError]


def test_async_writer_close_raises_pending_errors():
    writer = _FlushSeen()
    writer.submit(writer.flushing.wait, 60)  # the failing job is still pending when close is called
    writer.submit(dict.__getitem__, {}, "missing")
    with pytest.raises(TrackingError, match="KeyError"):
        writer.close()


def test_tracker_through_writer_opens_store_in_writer_thread(store, exp):
    tracker = Tracker(store.tracking_uri)
    writer = AsyncWriter()
    parent = writer.submit(start_parent, tracker, exp, "async", params={"n": 2}).result()
    runs = [writer.submit(start_child, tracker, exp, parent, f"c{i}", str(i)).result() for i in range(2)]
    for run in runs:
        writer.submit(tracker.log_history, run, [{"epoch": e, "loss": float(e)} for e in range(3)])
        writer.submit(tracker.finish, run, "FINISHED")
    writer.close()
    assert [c["status"] for c in tracker.children(parent)] == ["FINISHED", "FINISHED"]
    assert len(tracker.client.get_metric_history(runs[1], "loss")) == 3


def _tiny_checkpoint(folder: Path):
    import jax
    import jax.numpy as jnp

    from jaxmlp.checkpoint import load_checkpoint, save_checkpoint
    from jaxmlp.config import load_config
    from jaxmlp.models import MLP

    params = MLP((8,), 3).init(jax.random.key(0), jnp.zeros((1, 4)))
    save_checkpoint(folder, load_config({"model": {"hidden": [8]}}), params,
                    {"task": "classification", "n_outputs": 3, "input_shape": [4]})
    return load_checkpoint(folder)


@pytest.mark.slow
def test_log_model_loads_as_pyfunc_and_registers(store, exp, tmp_path, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd

    from jaxmlp.checkpoint import predict

    checkpoint = _tiny_checkpoint(tmp_path / "ckpt")
    run = start_parent(store, exp, "model", params={"lr": 0.1})
    uri = store.log_model(run, tmp_path / "ckpt")
    model = store.client.get_logged_model(uri.removeprefix("models:/"))
    assert (str(model.status), model.experiment_id, model.source_run_id) == ("READY", exp, run)
    assert store.client.get_run(run).outputs.model_outputs[0].model_id == model.model_id

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)  # loading reads the global URI
    loaded = mlflow.pyfunc.load_model(uri)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)  # the signature takes float32
    expected = predict(checkpoint, x)
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(pd.DataFrame(x)), expected, rtol=1e-6)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)

    assert int(store.register_model(uri, "jaxmlp-tiny").version) == 1
    second = store.register_model(store.log_model(run, tmp_path / "ckpt", "model2"), "jaxmlp-tiny")
    assert (int(second.version), second.run_id) == (2, run)
    np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/jaxmlp-tiny/1").predict(x), expected, rtol=1e-6)


@pytest.mark.slow
def test_processes_opening_one_new_sqlite_store_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/shared.db"
    code = ("import sys; from jaxmlp.tracking import Tracker; t = Tracker(sys.argv[1]); "
            "e = t.experiment('shared'); p = t.start_parent(e, 'p', sweep_name='s', sweep_hash='h', "
            "sweep_file='s.yaml', note='', git_commit=None, environment={}, params={}); t.finish(p, 'FINISHED')")
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    tracker = Tracker(uri)
    assert len(tracker.client.search_runs([tracker.experiment("shared")])) == 3


def _rest(url: str, path: str, body: dict | None = None, **query) -> dict:
    request = urllib.request.Request(
        f"{url}{path}?{urllib.parse.urlencode(query)}", data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_sweep_through_a_real_mlflow_server(mlflow_server, tmp_path, monkeypatch):
    tracker = Tracker(mlflow_server)
    exp = tracker.experiment("served")
    parent = start_parent(tracker, exp, "sweep", sweep_name="s", params={"variants": 2})
    kids = []
    for i in range(2):
        kid = start_child(tracker, exp, parent, f"v{i}", f"k{i}", params={"lr": 0.1 * (i + 1)})
        history = [{"epoch": e, "loss": 1.0 / (e + 1), "val_loss": 2.0} for e in range(30)]
        history[-1]["val_loss"] = math.nan  # a diverged variant
        tracker.log_history(kid, history)
        tracker.client.log_text(kid, "a,b\n", "history.csv")
        tracker.finish(kid, "FINISHED")
        kids.append(kid)
    tracker.finish(parent, "FINISHED")

    runs = _rest(mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp], "max_results": 100})["runs"]
    by_id = {r["info"]["run_id"]: r for r in runs}
    assert set(by_id) == {parent, *kids}
    for kid in kids:
        tags = {t["key"]: t["value"] for t in by_id[kid]["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent and by_id[kid]["info"]["status"] == "FINISHED"
        history = _rest(mlflow_server, "/api/2.0/mlflow/metrics/get-history", run_id=kid, metric_key="loss")
        assert sorted(int(m["step"]) for m in history["metrics"]) == list(range(30))
        val = _rest(mlflow_server, "/api/2.0/mlflow/metrics/get-history", run_id=kid, metric_key="val_loss")
        assert math.isnan(float(max(val["metrics"], key=lambda m: int(m["step"]))["value"]))
        files = _rest(mlflow_server, "/api/2.0/mlflow/artifacts/list", run_id=kid)["files"]
        assert [f["path"] for f in files] == ["history.csv"]
    experiment = _rest(mlflow_server, "/api/2.0/mlflow/experiments/get", experiment_id=exp)["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]

    import mlflow.pyfunc

    from jaxmlp.checkpoint import predict

    checkpoint = _tiny_checkpoint(tmp_path / "ckpt")
    version = tracker.register_model(tracker.log_model(kids[0], tmp_path / "ckpt"), "served-model")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    x = np.ones((2, 4), np.float32)
    loaded = mlflow.pyfunc.load_model(f"models:/served-model/{version.version}")
    np.testing.assert_allclose(loaded.predict(x), predict(checkpoint, x), rtol=1e-6)


def test_tracker_process_runs_calls_in_another_process_into_the_same_store(store, exp):
    remote = TrackerProcess(store.tracking_uri)
    try:
        process = remote._process
        assert process.poll() is None and process.pid != os.getpid() and remote.tracking_uri == store.tracking_uri
        parent = start_parent(remote, exp, "remote", params={"n": 1})
        child = start_child(remote, exp, parent, "c0", "key0", params={"lr": 0.1})
        remote.finish(child, "FAILED", "diverged", history=[{"epoch": e, "loss": 1.0 / e} for e in (1, 2, 3)],
                      metrics={"test_accuracy": 0.5}, step=2, tags={"extra": "yes"},
                      files={"a.txt": b"hello"}, artifact_path="checkpoint")
        with pytest.raises(Exception, match="no-such-run|not found|No Run"):
            remote.finish("no-such-run", "FINISHED")
        assert remote.children(parent)[0]["run_id"] == child  # still serving after an error
    finally:
        remote.close()
    assert process.poll() is not None
    run = store.client.get_run(child)
    assert run.info.status == "FAILED" and run.data.params == {"lr": "0.1", "variant_key": "key0", "group": "g0"}
    assert run.data.tags["jaxmlp.failure_reason"] == "diverged" and run.data.tags["extra"] == "yes"
    assert store.metric_history(child, "loss") == ([1, 2, 3], [1.0, 0.5, 1.0 / 3])
    assert store.metric_history(child, "test_accuracy") == ([2], [0.5])
    assert [a.path for a in store.client.list_artifacts(child, "checkpoint")] == ["checkpoint/a.txt"]


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_tracker_process_ends_when_the_process_that_started_it_is_killed(store_uri):
    code = ("import os, signal, sys; from jaxmlp.tracking import TrackerProcess\n"
            f"t = TrackerProcess('{store_uri}'); print(t._process.pid, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as stat:  # a zombie (exited, not yet reaped) has state Z
                if stat.read().split()[2] == "Z":
                    return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.2)
    pytest.fail(f"tracking process {pid} outlived the process that started it")


@pytest.mark.slow
def test_tracker_process_started_from_a_script_without_a_main_guard(tmp_path, store_uri):
    script = tmp_path / "plain.py"
    script.write_text("from jaxmlp.tracking import TrackerProcess\n"
                      f"t = TrackerProcess('{store_uri}')\n"
                      "print(t.experiment('from_a_script'), flush=True)\n"
                      "t.close()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [Tracker(store_uri).experiment("from_a_script")]
