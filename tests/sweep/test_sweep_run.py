"""Running sweeps end to end into a real SQLite MLflow store, and checking what MLflow holds:
the sweeps run through the library (`jaxmlp.run_sweep`); the command where its exit code,
printing and stderr are tested."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
from types import SimpleNamespace

import numpy as np
import pytest

import jaxmlp
from jaxmlp.sweep.spec import load_sweep

from tests.helpers.sweep import (TINY_BASE, check_models_of_the_best, kill_leftovers, print_resumed, run_sweep_cli,
                           run_tracked, start_sweep, store_client, sweep_runs, wait_until, write_sweep)

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "dead_fraction_0")
FINAL_METRICS = ("test_accuracy", "test_loss", "best_epoch", "stopped_epoch", "best_val_loss", "best_val_accuracy",
                 "final_train_loss", "n_params")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cache) -> SimpleNamespace:
    """One small sweep (2 activations x 2 seeds) run by the library in this process, registering
    its best model (as --register tiny-best does); then the command resumes the finished sweep
    with --json (it trains nothing) for its exit code and printed outcome."""
    folder = tmp_path_factory.mktemp("tiny")
    path = write_sweep(folder, {"name": "tiny-run", "description": "two activations",
                                "base": TINY_BASE, "grid": {"model.activation": ["relu", "tanh"]}, "seeds": 2})
    run = run_tracked(path, cache, register="tiny-best@champion")
    return SimpleNamespace(path=path, uri=run.uri, result=run.result, client=run.client, parents=run.parents,
                           children=run.children, sweep=load_sweep(path), printed=print_resumed(run, "--json"))


def _children_by_key(tiny) -> dict:
    return {c.data.tags["jaxmlp.variant_key"]: c for c in tiny.children}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_sweep_exits_0_and_prints_one_json_object(tiny):
    assert tiny.result.ok, tiny.result.failures
    assert tiny.printed.code == 0, tiny.printed.err
    outcome = json.loads(tiny.printed.out)
    assert (outcome["sweep"], outcome["n_variants"], outcome["n_finished"]) == ("tiny-run", 4, 4)
    assert outcome["failures"] == [] and outcome["tracking_errors"] == []
    assert outcome["tracking_uri"] == tiny.uri
    assert outcome["parent_run_id"] == tiny.parents[0].info.run_id
    assert outcome["experiment_id"] == tiny.client.get_experiment_by_name("tiny-run").experiment_id
    assert [r["setting"] for r in outcome["rows"]] == ["model.activation=relu", "model.activation=tanh"]
    assert [r["n_seeds"] for r in outcome["rows"]] == [2, 2]
    assert 0.5 < outcome["mean_test_accuracy"] <= 1.0


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_one_experiment_named_after_the_sweep_with_one_finished_parent(tiny):
    experiment = tiny.client.get_experiment_by_name("tiny-run")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {e.name for e in tiny.client.search_experiments()} - {"Default"} == {"tiny-run"}
    (parent,) = tiny.parents
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["jaxmlp.sweep_name"] == "tiny-run"
    assert parent.data.tags["jaxmlp.sweep_hash"] == tiny.sweep.hash
    assert parent.data.params["n_variants"] == "4" and parent.data.params["n_programs"] == "1"
    assert parent.data.metrics["n_variants"] == 4 and parent.data.metrics["n_failed"] == 0
    # the program's epoch wall times, once, on the parent (its children share them): its slots
    # trained the variants side by side, at least as long as the longest, at most all in turn
    (key,) = [k for k in parent.data.metrics if k.startswith("epoch_seconds_g00-")]
    epochs = [int(c.data.metrics["stopped_epoch"]) for c in tiny.children]
    seconds = tiny.client.get_metric_history(parent.info.run_id, key)
    assert sorted(m.step for m in seconds) == list(range(1, len(seconds) + 1)) and all(m.value > 0 for m in seconds)
    assert max(epochs) <= len(seconds) < sum(epochs)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_one_finished_child_per_variant_nested_under_the_parent(tiny):
    parent_id = tiny.parents[0].info.run_id
    by_key = _children_by_key(tiny)
    assert len(tiny.children) == 4 and set(by_key) == {v.key for v in tiny.sweep.variants}
    for v in tiny.sweep.variants:
        run = by_key[v.key]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.info.run_name == v.run_name
        assert run.data.tags["jaxmlp.diverged"] == "false"
        params = run.data.params
        assert params["model.activation"] == v.config.model.activation
        assert params["training.seed"] == str(v.seed)
        assert params["model.hidden"] == "[16]" and params["optimizer.name"] == "sgd"
        assert float(params["optimizer.learning_rate"]) == 0.1
        assert params["variant_key"] == v.key
    assert sorted((c.data.params["model.activation"], c.data.params["training.seed"]) for c in tiny.children) == [
        ("relu", "0"), ("relu", "1"), ("tanh", "0"), ("tanh", "1")]


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_children_hold_whole_epoch_histories_and_final_metrics(tiny):
    for run in tiny.children:
        metrics = run.data.metrics
        assert set(FINAL_METRICS) <= set(metrics)
        stopped = int(metrics["stopped_epoch"])
        assert 1 <= int(metrics["best_epoch"]) <= stopped <= 8
        for key in EPOCH_METRICS:
            history = tiny.client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, stopped + 1)), key
            assert all(math.isfinite(m.value) for m in history)
        val_loss = {m.step: m.value for m in tiny.client.get_metric_history(run.info.run_id, "val_loss")}
        assert metrics["best_val_loss"] == pytest.approx(val_loss[int(metrics["best_epoch"])])
        assert 0.5 < metrics["test_accuracy"] <= 1.0
        assert "epoch_seconds" not in metrics


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_children_carry_checkpoints_and_the_parent_the_sweep_file_summary_and_plots(tiny, tmp_path):
    client, parent = tiny.client, tiny.parents[0].info.run_id
    for run in tiny.children:
        files = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert files == {"checkpoint/config.json", "checkpoint/params.msgpack"}
    top = {f.path for f in client.list_artifacts(parent)}
    assert {"tiny-run.yaml", "summary", "plots"} <= top
    assert {f.path for f in client.list_artifacts(parent, "summary")} == {"summary/summary.csv", "summary/summary.md"}
    plots = client.list_artifacts(parent, "plots")
    assert plots and all(f.path.endswith(".png") and f.file_size > 1000 for f in plots)
    client.download_artifacts(parent, "", str(tmp_path))
    assert (tmp_path / "tiny-run.yaml").read_text() == tiny.path.read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "summary" / "summary.csv").read_text())))
    assert [r["setting"] for r in rows] == ["model.activation=relu", "model.activation=tanh"]
    assert "model.activation=tanh" in (tmp_path / "summary" / "summary.md").read_text()
    assert (tmp_path / plots[0].path).read_bytes().startswith(b"\x89PNG")


def _digits():
    from jaxmlp.config import load_config
    from jaxmlp.data import load_dataset

    return load_dataset(load_config(TINY_BASE).data)


@pytest.fixture(scope="module")
def best(tiny, tmp_path_factory) -> SimpleNamespace:
    """The parent's best model, the run it came from and that run's checkpoint artifact."""
    from jaxmlp.checkpoint import load_checkpoint

    tags = tiny.parents[0].data.tags
    run_id = tags["jaxmlp.best_run_id"]
    folder = tiny.client.download_artifacts(run_id, "checkpoint", str(tmp_path_factory.mktemp("ckpt")))
    return SimpleNamespace(run=tiny.client.get_run(run_id), uri=tags["jaxmlp.best_model_uri"],
                           checkpoint=load_checkpoint(folder))


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_best_model_is_the_child_with_the_lowest_validation_loss(tiny, best):
    assert best.uri.startswith("models:/")
    assert best.run.info.run_id in {c.info.run_id for c in tiny.children}
    lowest = min(tiny.children, key=lambda c: c.data.metrics["best_val_loss"])
    assert best.run.info.run_id == lowest.info.run_id
    assert tiny.parents[0].data.tags["jaxmlp.best_setting"] == best.run.data.tags["jaxmlp.setting"]
    assert best.checkpoint.config.model.activation == best.run.data.params["model.activation"]
    assert best.checkpoint.config.training.seed == int(best.run.data.params["training.seed"])


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_each_setting_logs_the_model_of_its_best_seed(tiny):
    check_models_of_the_best(tiny.client, tiny.parents[0], tiny.children)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_logged_pyfunc_model_predicts_what_the_engine_trained(tiny, best, monkeypatch):
    import mlflow
    import mlflow.pyfunc

    from jaxmlp.checkpoint import predict
    from tests.helpers.engine import fit

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny.uri)  # models:/ URIs resolve through the global URI
    assert mlflow.get_tracking_uri() == tiny.uri
    data = _digits()
    x = np.asarray(data.test.x)
    probabilities = mlflow.pyfunc.load_model(best.uri).predict(x)
    assert probabilities.shape == (len(x), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probabilities, predict(best.checkpoint, x), rtol=1e-6, atol=1e-7)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == np.asarray(data.test.y)))
    assert accuracy == pytest.approx(best.run.data.metrics["test_accuracy"], abs=1e-6)

    # the same variants trained again by the engine give the same parameters, hence the same probabilities
    configs = [v.config for v in tiny.sweep.variants]
    retrained = fit(configs, data.on_device())
    (i,) = [i for i, v in enumerate(tiny.sweep.variants) if v.key == best.run.data.tags["jaxmlp.variant_key"]]
    engine = predict(best.checkpoint._replace(params=retrained.variants[i].params), x)
    np.testing.assert_allclose(probabilities, engine, rtol=1e-5, atol=1e-6)
    assert retrained.variants[i].test["accuracy"] == pytest.approx(best.run.data.metrics["test_accuracy"], abs=1e-6)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_register_creates_a_model_version_of_the_best_model(tiny, best, monkeypatch):
    import mlflow.pyfunc

    versions = tiny.client.search_model_versions("name='tiny-best'")
    assert [(int(v.version), v.run_id) for v in versions] == [(1, best.run.info.run_id)]
    assert tiny.parents[0].data.tags["jaxmlp.registered_model"] == "tiny-best v1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny.uri)
    x = np.asarray(_digits().test.x[:7])
    np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/tiny-best/1").predict(x),
                               mlflow.pyfunc.load_model(best.uri).predict(x), rtol=1e-6)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_no_tracking_trains_prints_the_table_and_creates_no_store(tiny, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "tiny-run.yaml"
    path.write_text(tiny.path.read_text())
    result = run_sweep_cli(path, "--no-tracking", "--no-progress", "--compile-cache", cache)
    assert result.code == 0, result.err
    assert "sweep 'tiny-run': 4 variants" in result.out
    lines = result.out.splitlines()
    assert any(line.startswith("model.activation=relu") for line in lines)
    assert any(line.startswith("model.activation=tanh") for line in lines)
    assert "MLflow" not in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-run.yaml"]
    # the same seeds give the untracked library the same test accuracies as the tracked run, and
    # as the command printed for it
    again = jaxmlp.run_sweep(path, tracking=False, compile_cache=cache).rows
    for tracked in (tiny.result.rows, json.loads(tiny.printed.out)["rows"]):
        assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in tracked]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-run.yaml"]


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_dry_run_logs_nothing(tiny, cache):
    before = tiny.client.search_runs([tiny.parents[0].info.experiment_id])
    result = run_sweep_cli(tiny.path, "--dry-run", "--tracking-uri", tiny.uri, "--compile-cache", cache)
    assert result.code == 0 and "4 variants = 2 settings x 2 seeds; 1 group(s), 1 compiled program(s)" in result.out
    after = tiny.client.search_runs([tiny.parents[0].info.experiment_id])
    assert [r.info.run_id for r in after] == [r.info.run_id for r in before]
    assert {e.name for e in tiny.client.search_experiments()} - {"Default"} == {"tiny-run"}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_diverged_variant_fails_alone_and_the_others_finish(tmp_path, store_uri, cache):
    uri = store_uri
    path = write_sweep(tmp_path, {"name": "diverge", "base": TINY_BASE, "grid": {
        "model.activation": ["relu", "tanh"], "optimizer.learning_rate": [0.1, 1e30]}, "seeds": [0]})
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 1, result.err
    assert "FAILED: relu · lr 1e30 · seed 0: diverged" in result.out
    client = store_client(uri)
    (parent,), children = sweep_runs(client, "diverge")
    assert parent.info.status == "FAILED" and "diverged" in parent.data.tags["jaxmlp.failure_reason"]
    # relu's loss turns NaN; tanh saturates, its loss stays finite but far above its initial value:
    # both diverged (training.divergence_factor), the others finish
    assert parent.data.metrics["n_diverged"] == 2
    by_setting = {(c.data.params["model.activation"], float(c.data.params["optimizer.learning_rate"])): c
                  for c in children}
    assert len(children) == 4 and len(by_setting) == 4
    for key in (("relu", 1e30), ("tanh", 1e30)):
        diverged = by_setting.pop(key)
        assert diverged.info.status == "FAILED"
        assert diverged.data.tags["jaxmlp.diverged"] == "true"
        assert "diverged: loss NaN, infinite or above training.divergence_factor" in \
            diverged.data.tags["jaxmlp.failure_reason"]
        history = sorted(client.get_metric_history(diverged.info.run_id, "train_loss"), key=lambda m: m.step)
        assert len(history) == int(diverged.data.metrics["stopped_epoch"])
        last = history[-1].value  # NaN/inf kept as logged
        assert not math.isfinite(last) if key[0] == "relu" else last > 100 * math.log(10)
    for run in by_setting.values():
        assert run.info.status == "FINISHED" and run.data.tags["jaxmlp.diverged"] == "false"
        assert "jaxmlp.failure_reason" not in run.data.tags
        assert all(math.isfinite(run.data.metrics[k]) for k in FINAL_METRICS)
    assert by_setting[("relu", 0.1)].data.metrics["test_accuracy"] > 0.5


@pytest.fixture(scope="module")
def one_group_fails(tmp_path_factory, cache) -> SimpleNamespace:
    """A sweep whose first group's program fails (its executor raises) and whose second trains.
    (Missing data no longer gets that far: the sweep refuses it before logging anything.)"""
    import jaxmlp.sweep.runner as runner

    class FailingNarrow(runner.LocalExecutor):
        def run(self, task, data):
            if task.chunks[0][0].model.hidden == (8,):
                raise RuntimeError("the device is on fire")
            return super().run(task, data)

    folder = tmp_path_factory.mktemp("fails")
    path = write_sweep(folder, {"name": "one-group-fails", "base": TINY_BASE, "grid": {
        "model.hidden": [[8], [16]], "model.activation": ["relu", "tanh"]}, "seeds": [0]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "LocalExecutor", FailingNarrow)
        run = run_tracked(path, cache)
    return SimpleNamespace(result=run.result, client=run.client, runs=(run.parents, run.children))


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_failing_group_fails_alone_and_the_next_groups_train(one_group_fails):
    result = one_group_fails.result
    assert not result.ok
    assert any(f.startswith("group g00-") and "RuntimeError: the device is on fire" in f for f in result.failures), \
        result.failures
    (parent,), children = one_group_fails.runs
    assert parent.info.status == "FAILED" and "the device is on fire" in parent.data.tags["jaxmlp.failure_reason"]
    statuses = sorted((c.data.params["model.hidden"], c.info.status) for c in children)
    assert statuses == [("[16]", "FINISHED"), ("[16]", "FINISHED"), ("[8]", "FAILED"), ("[8]", "FAILED")]
    for child in children:
        if child.info.status == "FAILED":
            assert child.data.tags["jaxmlp.failure_reason"].startswith("group g00-")
            assert "jaxmlp.diverged" not in child.data.tags
        else:
            assert child.data.metrics["test_accuracy"] > 0.5


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_sweep_with_a_failed_group_still_gets_its_summary(one_group_fails):
    assert one_group_fails.result.tracking_errors == []
    (parent,), _ = one_group_fails.runs
    files = {f.path for f in one_group_fails.client.list_artifacts(parent.info.run_id, "summary")}
    assert files == {"summary/summary.csv", "summary/summary.md"}


@pytest.mark.slow
def test_two_sweeps_at_once_into_one_sqlite_store(tmp_path, store_uri, cache):
    uri = store_uri
    # long enough (a few seconds each) that the two sweeps are sure to write at the same time
    base = {**TINY_BASE, "training": {"epochs": 300, "batch_size": 64, "early_stopping": {"patience": None}}}
    names = ["together-a", "together-b"]
    paths = [write_sweep(tmp_path, {"name": name, "base": base, "grid": {"model.dropout": [0.0, 0.1, 0.2]},
                                    "seeds": 2}) for name in names]
    logs = [tmp_path / f"{name}.log" for name in names]
    client = store_client(uri)

    def training(name: str) -> bool:
        parents, children = sweep_runs(client, name, settled=False)
        return [p.info.status for p in parents] == ["RUNNING"] and any(c.info.status == "RUNNING" for c in children)

    # they overlap by construction: the first waits, stopped mid-training, until the second trains too
    processes = [start_sweep(paths[0], "--tracking-uri", uri, "--compile-cache", cache, log=logs[0])]
    try:
        wait_until(lambda: training(names[0]), f"{names[0]} trains", processes[0], logs[0])
        os.kill(processes[0].pid, signal.SIGSTOP)
        try:
            processes.append(start_sweep(paths[1], "--tracking-uri", uri, "--compile-cache", cache, log=logs[1]))
            wait_until(lambda: training(names[1]), f"{names[1]} trains", processes[1], logs[1])
            assert training(names[0]) and training(names[1])  # both parents RUNNING, both with training children
        finally:
            os.kill(processes[0].pid, signal.SIGCONT)
        codes = [p.wait(timeout=300) for p in processes]
    finally:
        kill_leftovers(processes)
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    assert not any("database is locked" in o for o in outputs)
    for name in names:
        parents, children = sweep_runs(client, name)
        assert [p.info.status for p in parents] == ["FINISHED"]
        assert len(children) == 6 and all(c.info.status == "FINISHED" for c in children)
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
        for child in children:
            stopped = int(child.data.metrics["stopped_epoch"])
            assert len(client.get_metric_history(child.info.run_id, "val_loss")) == stopped == 300
            assert {f.path for f in client.list_artifacts(child.info.run_id, "checkpoint")} == {
                "checkpoint/config.json", "checkpoint/params.msgpack"}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_variant_that_stops_early_ends_its_run_while_the_others_train(tmp_path, cache):
    # in file order the long-running variant comes first; the other stops after a few epochs
    base = {**TINY_BASE, "training": {"epochs": 200, "batch_size": 64}}
    path = write_sweep(tmp_path, {"name": "stops-early", "base": base,
                                  "grid": {"training.early_stopping.patience": [None, 1]}})
    run = run_tracked(path, cache)
    assert run.result.ok, run.result.failures
    client = run.client
    (parent,), children = run.parents, run.children
    by_patience = {c.data.params["training.early_stopping.patience"]: c for c in children}
    late, early = by_patience["None"], by_patience["1"]
    assert early.data.metrics["stopped_epoch"] < 20 and late.data.metrics["stopped_epoch"] == 200
    assert early.info.end_time < late.info.end_time  # submitted first, though it comes second in the file
    assert early.data.metrics["train_seconds"] < late.data.metrics["train_seconds"]
    # the early setting's model was logged on its run before the parent ended
    models = {m.source_run_id: m for m in client.search_logged_models([parent.info.experiment_id])}
    assert models[early.info.run_id].creation_timestamp < late.info.end_time


@pytest.mark.slow
def test_plots_that_fail_are_reported_and_the_parent_still_gets_its_summary(tmp_path, cache, monkeypatch):
    from jaxmlp import report

    def broken(records, rows):
        raise RuntimeError("no plotting today")

    monkeypatch.setattr(report, "sweep_figures", broken)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = write_sweep(tmp_path, {"name": "no-plots", "base": TINY_BASE, "seeds": [0]})
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 1
    assert "TRACKING ERROR: the sweep's plots could not be drawn: RuntimeError: no plotting today" in result.out
    client = store_client(uri)
    (parent,), (child,) = sweep_runs(client, "no-plots")
    assert parent.info.status == child.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "summary")] == [
        "summary/summary.csv", "summary/summary.md"]
    assert parent.data.metrics["n_variants"] == 1


@pytest.mark.slow
def test_the_command_prints_the_librarys_notices_and_warnings_on_stderr(tmp_path, store_uri):
    """What the library only logs (`jaxmlp.sweep`): a resume without an earlier parent, and
    snapshots that cannot be written (their folder is a regular file)."""
    path = write_sweep(tmp_path, {"name": "first-resume", "base": TINY_BASE})
    uri = store_uri
    (tmp_path / "not-a-folder").write_text("")
    result = run_sweep_cli(path, "--resume", "--tracking-uri", uri, "--no-progress",
                           "--snapshot-dir", tmp_path / "not-a-folder", "--snapshot-every", "0.001")
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert f"--resume: no earlier parent run of sweep 'first-resume' in {uri}; a new one is started" in lines
    (warning,) = [line for line in lines if "snapshots cannot be written" in line]
    assert warning.startswith(f"warning: snapshots cannot be written to {tmp_path / 'not-a-folder'} (")
