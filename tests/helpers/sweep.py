"""Shared by the sweep tests: tiny sweep files, a sweep run by the library (`jaxmlp.run_sweep`,
for the tests of behaviour) or by the command (in-process or as a process, for its parsing,
exit codes and printing), and what a real MLflow store holds afterwards."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from jaxmlp.sweep.spec import load_sweep


PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "jaxmlp.role"

#: A network small enough that a group of a few variants trains in well under a second.
TINY_BASE = {
    "data": {"name": "digits"},
    "model": {"hidden": [16]},
    "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
    "training": {"epochs": 8, "batch_size": 64, "early_stopping": {"patience": 3}},
}


def free_port() -> int:
    """A loopback port that nothing listens on (the OS's choice, closed again at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_sweep(folder: Path, spec: dict[str, Any], filename: str | None = None) -> Path:
    path = Path(folder) / (filename or f"{spec['name']}.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def compile_cache(tmp_path_factory) -> str:
    """One persistent XLA cache per test session, shared by its pytest-xdist workers (each has
    its own basetemp, below the session's), so a program compiled by one test is reused."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla-cache"
    folder.mkdir(exist_ok=True)
    return str(folder)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_sweep_cli(*args: Any) -> CliResult:
    """`python -m jaxmlp.sweep ARGS` in this process, its stdout and stderr captured."""
    from jaxmlp.commands.sweep import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


@dataclass
class Tracked:
    """A sweep the library ran into a store, and what the store held right after it."""

    path: Path
    uri: str
    result: Any  # jaxmlp.SweepResult
    client: Any
    parents: list
    children: list
    models: dict[str, list]  # the READY logged models by the run they were logged from


@functools.cache
def _migrated_store() -> Path:
    """An empty, migrated SQLite store made once per process (creating and migrating one costs
    1.7 s of CPU, copying it 0.03 s), removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    from jaxmlp.bench.common import migrated_store

    folder = Path(tempfile.mkdtemp(prefix="jaxmlp-test-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return migrated_store(folder)


def run_tracked(path: Path, cache: str, **options: Any) -> Tracked:
    """`jaxmlp.run_sweep(PATH, **options)` in this process (no signal handlers, nothing printed)
    into the SQLite store `mlflow.db` in PATH's folder (an empty migrated one copied there where
    there is none), its programs in the compilation cache `cache`; the runs of the sweep's
    experiment afterwards. It plans on this process's devices: two XLA CPU devices under pytest
    (conftest.py), as the command in this process; the command started as a process has one
    per CPU core."""
    import shutil

    import jaxmlp

    uri = f"sqlite:///{path.parent}/mlflow.db"
    if not (path.parent / "mlflow.db").exists():
        shutil.copyfile(_migrated_store(), path.parent / "mlflow.db")
    result = jaxmlp.run_sweep(path, tracking_uri=uri, compile_cache=cache, **options)
    client = store_client(uri)
    parents, children = sweep_runs(client, result.sweep.spec.name)
    models = models_by_run(client, parents[0].info.experiment_id) if parents else {}
    return Tracked(path, uri, result, client, parents, children, models)


def print_resumed(tracked: Tracked, *args: Any) -> CliResult:
    """The command resuming the finished sweep of `tracked` (`--resume --no-progress`, ARGS): it
    trains and logs nothing and prints the whole outcome, read back from the store, and exits
    as the sweep ended: the command's printing and exit code at the cost of reading a store."""
    return run_sweep_cli(tracked.path, "--resume", "--tracking-uri", tracked.uri, "--no-progress", *args)


def start_sweep(path: Path, *args: Any, log: Path) -> subprocess.Popen:
    """`python -m jaxmlp.sweep PATH ARGS` as a separate process, output to `log`, started in PATH's
    folder, its snapshots in PATH's folder too."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "jaxmlp.sweep", str(path), "--no-progress",
                                 "--snapshot-dir", str(path.parent / "snapshots"), *map(str, args)],
                                cwd=path.parent, stdout=out, stderr=subprocess.STDOUT, env=env)


def kill_leftovers(processes) -> None:
    """Kill (and reap) those of `processes` still running: a test's cleanup after it waited on them."""
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()


def store_client(tracking_uri: str):
    """An MlflowClient on the store (opened like jaxmlp opens it: one process migrates a new file)."""
    from jaxmlp.tracking import Tracker

    return Tracker(tracking_uri).client


def sweep_runs(client, experiment_name: str, settled: bool = True) -> tuple[list, list]:
    """The parent runs and the child runs of an experiment (every status).

    `settled`: no sweep is writing, so every run must be a parent or a child (while one is
    writing, a run just created may not have its tags yet).
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return [], []
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "parent"]
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    if settled:
        known = {r.info.run_id for r in parents + children}
        others = [(r.info.run_id, r.info.run_name, r.info.status, dict(r.data.tags)) for r in runs if r.info.run_id not in known]
        assert not others, f"runs that are neither parent nor child: {others}"
    return parents, children


def wait_until(condition: Callable[[], bool], what: str, process: subprocess.Popen, log: Path,
               timeout: float = 180) -> None:
    """Poll `condition` until it holds; fail (with the process's output) if the process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {process.returncode}) before {what}:\n"
                                 f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def models_by_run(client, experiment_id: str) -> dict[str, list]:
    """The READY logged models of an experiment by the run they were logged from."""
    out: dict[str, list] = {}
    for model in client.search_logged_models([experiment_id], max_results=1000):
        if str(model.status) == "READY":
            out.setdefault(model.source_run_id, []).append(model)
    return out


def check_models_of_the_best(client, parent, children) -> None:
    """One model per setting, on its child with the lowest best_val_loss; the overall best on the parent."""
    finished = [c for c in children if c.info.status == "FINISHED"]
    models = models_by_run(client, parent.info.experiment_id)
    best_per_setting: dict[str, Any] = {}
    for c in sorted(finished, key=lambda c: -c.data.metrics["best_val_loss"]):
        best_per_setting[c.data.tags["jaxmlp.setting"]] = c  # the lowest comes last
    expected = {c.info.run_id for c in best_per_setting.values()} | {parent.info.run_id}
    logged = {run_id: len(found) for run_id, found in models.items()}
    assert logged == {run_id: 1 for run_id in expected}, f"models logged {logged}, expected one on each of {expected}"
    overall = min(finished, key=lambda c: c.data.metrics["best_val_loss"])
    assert parent.data.tags["jaxmlp.best_run_id"] == overall.info.run_id, "the parent's best is not the overall best"
    assert parent.data.tags["jaxmlp.best_model_uri"] == f"models:/{models[overall.info.run_id][0].model_id}"


def start_parent(tracker, experiment_id: str, run_name: str = "sweep", *, sweep_name: str = "s",
                 sweep_hash: str = "h", params: dict[str, Any] | None = None) -> str:
    """A parent run of a made-up sweep (no file, note, commit or environment)."""
    return tracker.start_parent(experiment_id, run_name, sweep_name=sweep_name, sweep_hash=sweep_hash,
                                sweep_file=f"{sweep_name}.yaml", note="", git_commit=None, environment={},
                                params=params or {})


def start_child(tracker, experiment_id: str, parent_run_id: str, run_name: str, variant_key: str, *,
                params: dict[str, Any] | None = None, index: int = 0, setting: dict[str, Any] | None = None,
                seed: int = 0, group: str = "g0") -> str:
    """A child run of one made-up variant."""
    return tracker.start_child(experiment_id, parent_run_id, run_name, variant_key=variant_key, index=index,
                               setting=setting or {}, seed=seed, group=group, params=params or {})


def log_final_metrics(tracker, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Metrics at one step, through the MLflow client (as a run's final metrics are logged)."""
    for key, value in metrics.items():
        tracker.client.log_metric(run_id, key, float(value), step=step)


@dataclass
class UiSweep:
    """A finished sweep as the MLflow UI tests need it: its printed output and its runs' names."""

    out: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent_name: str
    model_name: str


def run_ui_sweep(folder: Path, tracking_uri: str, cache: str, monkeypatch, name: str) -> UiSweep:
    """The tiny sweep (relu and tanh, two seeds each) run by the command with its printed
    outcome, its best model registered as NAME-best (alias champion) and system metrics on;
    `monkeypatch` restores MLflow's system-metrics switch (which --system-metrics sets in this
    process) and samples it every half second meanwhile."""
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    path = write_sweep(folder, {"name": name, "base": TINY_BASE, "grid": {"model.activation": ["relu", "tanh"]},
                                "seeds": 2})
    result = run_sweep_cli(path, "--tracking-uri", tracking_uri, "--no-progress", "--register", f"{name}-best",
                           "--system-metrics", "--compile-cache", cache)
    assert result.code == 0, result.out + result.err
    (parent,), _ = sweep_runs(store_client(tracking_uri), name)
    return UiSweep(result.out, tracking_uri, parent.info.experiment_id, parent.info.run_id, parent.info.run_name,
                   f"{name}-best")


#: Three groups of two seeds; the middle one trains long enough to be interrupted.
THREE_GROUPS = {
    "base": {"data": {"name": "digits"}, "training": {"batch_size": 64, "early_stopping": {"patience": None}}},
    "zip": {"model.hidden": [[16], [24], [32]], "training.epochs": [5, 1500, 5]},
    "seeds": 2,
}


def runs_by_status(children) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in children:
        out.setdefault(c.info.status, set()).add(c.info.run_id)
    return out


def start_interruptible(path, uri, cache, log):
    """The sweep as a process that Ctrl-C reaches as in a terminal: a caught (not ignored)
    SIGINT here is reset to the default in the child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=log)
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupt_mid_sweep(path, uri, cache, signum) -> tuple[int, object, list, list]:
    """Start the sweep as a process; once the first group has FINISHED and the next is RUNNING, send `signum`."""
    client, name, log = store_client(uri), load_sweep(path).spec.name, path.with_suffix(".log")
    process = start_interruptible(path, uri, cache, log)
    try:
        def first_group_done() -> bool:
            by_status = runs_by_status(sweep_runs(client, name, settled=False)[1])
            return len(by_status.get("FINISHED", ())) >= 2 and bool(by_status.get("RUNNING"))

        wait_until(first_group_done, "the first group FINISHED and the next RUNNING", process, log)
        os.kill(process.pid, signum)
        code = process.wait(timeout=120)
    finally:
        kill_leftovers([process])
    parents, children = sweep_runs(client, name)
    return code, client, parents, children
