"""Crash soak: a sweep SIGKILLed at seeded random moments (while it imports, compiles, trains
and logs), resumed, the resume killed again, for a few rounds, then resumed to its end, holds
exactly what an uninterrupted run of the same file holds: every variant FINISHED once under
one parent, no run left RUNNING, complete per-epoch histories, the same numbers bit for bit.

Each invocation is a process in a session of its own and is killed with its whole process
group; the sweep's tracking process and its fork server run in sessions of their own, so they
must end by themselves once the sweep process is gone (the test waits for that before resuming).
"""
from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from jaxmlp.tracking.forks import SERVER_NAME, TRACKING_NAME
from tests.helpers.sweep import compile_cache, store_client, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

#: Six variants in three groups of one compiled program (one setting per group), so a kill
#: can land between groups, in a group's training, or while a finished group is logged.
SOAK = {
    "name": "soak",
    # long enough (about 12 s of training on a fast 2-core CPU, two slots for six variants) that
    # every kill moment below lands while the sweep trains
    "base": {"data": {"name": "digits"}, "model": {"hidden": [256, 256]},
             "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
             "training": {"epochs": 400, "batch_size": 64, "early_stopping": {"patience": 25}}},
    "grid": {"optimizer.learning_rate": [0.001, 0.002, 0.004]},
    "seeds": 2,
    "execution": {"max_variants_per_program": 2},
}
N_VARIANTS = 6
SEED = 16  # the kill moments' random generator

#: The metrics a variant's numbers are compared by (logged once, at its best epoch).
FINAL_METRICS = ("test_loss", "test_accuracy", "best_epoch", "stopped_epoch", "best_val_loss", "epochs_trained")
#: Logged once per epoch trained (steps 1..epochs_trained).
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "momentum")
#: Seconds a tracking process may take to end once its sweep process is killed: it notices at
#: its next read of the pipe, after the call (or the start-up imports) at hand.
HELPER_EXIT_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0


@dataclass
class Moment:
    """When to kill an invocation: `delay` seconds after `milestone` ("start"; "child", a child
    run created by this invocation; "finished", a child run FINISHED by this invocation)."""

    milestone: str
    delay: float

    def __str__(self) -> str:
        return f"{self.delay:.2f} s after {self.milestone}"


def kill_moments(rng: random.Random) -> list[Moment]:
    """Four kills spread over a run's life: imports, store and compile, training, a group's logging."""
    return [Moment("start", rng.uniform(0.3, 4.0)), Moment("start", rng.uniform(4.0, 12.0)),
            Moment("child", rng.uniform(0.0, 3.0)), Moment("finished", rng.uniform(0.0, 1.0))]


def _start(path: Path, uri: str, cache: str, log: Path, *extra: str) -> subprocess.Popen:
    """`python -m jaxmlp.sweep` in a session of its own (so its process group can be killed)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "jaxmlp.sweep", str(path), "--tracking-uri", uri, "--no-progress", "--json",
             "--compile-cache", cache, *extra],
            cwd=path.parent, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)


def _tracking_processes(folder: Path) -> dict[int, str]:
    """The live (not zombie) tracking processes, and fork servers, of sweeps run in `folder`
    (their working directory): pid -> process name. Tracking processes are forked by a fork
    server or started as fresh interpreters; both name themselves (`jaxmlp.tracking.forks`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            cwd = os.readlink(entry / "cwd") if name in (TRACKING_NAME, SERVER_NAME) else ""
        except OSError:
            continue
        if name in (TRACKING_NAME, SERVER_NAME) and cwd == os.path.realpath(folder) and state != "Z":
            found[int(entry.name)] = name
    return found


def _counts(client) -> tuple[int, int]:
    """(child runs, FINISHED child runs) in the store now."""
    children = sweep_runs(client, SOAK["name"], settled=False)[1]
    return len(children), sum(c.info.status == "FINISHED" for c in children)


def _kill_at(process: subprocess.Popen, moment: Moment, client) -> bool:
    """Wait for the moment, then SIGKILL the process group; False where the process ended first."""
    children, finished = _counts(client)
    reached = {"start": lambda: True, "child": lambda: _counts(client)[0] > children,
               "finished": lambda: _counts(client)[1] > finished}[moment.milestone]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not reached():
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"no {moment.milestone} within {RUN_TIMEOUT} s"
        time.sleep(0.05)
    try:
        process.wait(timeout=moment.delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def _wait_for_tracking_processes_to_end(folder: Path, what: str) -> float:
    """Seconds until no tracking process (or fork server) of a sweep in `folder` is left (asserting
    it is within the bound)."""
    start = time.monotonic()
    while (left := _tracking_processes(folder)) and time.monotonic() < start + HELPER_EXIT_TIMEOUT:
        time.sleep(0.1)
    assert not left, (f"{what}: its tracking process(es) still alive {HELPER_EXIT_TIMEOUT:.0f} s after the sweep "
                      f"process was killed: {left}")
    return time.monotonic() - start


def _run_to_end(path: Path, uri: str, cache: str, log: Path, *extra: str) -> subprocess.Popen:
    process = _start(path, uri, cache, log, *extra)
    try:
        process.wait(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, f"{log.name} exited {process.returncode}:\n{log.read_text()[-3000:]}"
    return process


def _finished_by_key(client, parent_run_id: str) -> dict[str, object]:
    """The FINISHED children of a parent by variant key (asserting one each)."""
    _, children = sweep_runs(client, SOAK["name"])
    finished = [c for c in children
                if c.data.tags["mlflow.parentRunId"] == parent_run_id and c.info.status == "FINISHED"]
    counts = collections.Counter(c.data.tags["jaxmlp.variant_key"] for c in finished)
    assert all(n == 1 for n in counts.values()), f"variants FINISHED more than once: {counts}"
    return {c.data.tags["jaxmlp.variant_key"]: c for c in finished}


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_sweep(tmp_path_factory, new_store):
    cache = compile_cache(tmp_path_factory)
    folder = tmp_path_factory.mktemp("crash-soak")
    path = write_sweep(folder, SOAK)
    uri_a, uri_b = new_store(folder, "a.db"), new_store(folder, "b.db")

    _run_to_end(path, uri_a, cache, folder / "a.log")
    client_a, client_b = store_client(uri_a), store_client(uri_b)
    (parent_a,), _ = sweep_runs(client_a, SOAK["name"])
    expected = _finished_by_key(client_a, parent_a.info.run_id)
    assert len(expected) == N_VARIANTS

    moments = kill_moments(random.Random(SEED))
    rounds = []  # what happened to each invocation, for the failure messages
    process = None
    try:
        for n, moment in enumerate(moments):
            log = folder / f"b{n}.log"
            started = time.monotonic()
            process = _start(path, uri_b, cache, log, *(["--resume"] if n else []))
            killed = _kill_at(process, moment, client_b)
            ended = (f"killed at {time.monotonic() - started:.1f} s" if killed
                     else f"ended by itself, exit {process.returncode}")
            ended += " leaving {} child runs, {} FINISHED".format(*_counts(client_b))
            rounds.append(f"round {n} ({moment}): {ended}")
            assert killed or process.returncode == 0, f"{rounds}\n{log.read_text()[-3000:]}"
            assert killed, (f"{rounds}: the invocation ended before its kill moment, so the soak killed nothing "
                            "there; give SOAK more epochs for a machine this fast")
            gone = _wait_for_tracking_processes_to_end(folder, rounds[-1])
            rounds[-1] += f", its tracking process gone {gone:.1f} s later"
            print(rounds[-1])
        _run_to_end(path, uri_b, cache, folder / "b-final.log", "--resume")
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in _tracking_processes(folder):  # only ours: they run in this test's folder
            os.kill(pid, signal.SIGKILL)
    context = "; ".join(rounds)

    parents, children = sweep_runs(client_b, SOAK["name"])
    assert len(parents) == 1, f"{context}: every invocation after the first resumed, yet parents {parents}"
    (parent,) = parents
    assert parent.info.status == "FINISHED", context
    left_running = [(r.info.run_name, r.info.run_id) for r in parents + children if r.info.status == "RUNNING"]
    assert not left_running, f"{context}: runs left RUNNING {left_running}"
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}, context
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}, context

    finished = _finished_by_key(client_b, parent.info.run_id)
    assert sorted(finished) == sorted(expected), context  # every variant exactly once
    for key, run in finished.items():
        run_id, reference = run.info.run_id, expected[key]
        epochs = int(run.data.metrics["epochs_trained"])
        assert epochs == int(run.data.metrics["stopped_epoch"]), (context, run.info.run_name)
        for metric in EPOCH_METRICS:
            history = _history(client_b, run_id, metric)
            assert [step for step, _ in history] == list(range(1, epochs + 1)), (context, run.info.run_name, metric)
            assert history == _history(client_a, reference.info.run_id, metric), (context, run.info.run_name, metric)
        for metric in FINAL_METRICS:
            assert len(_history(client_b, run_id, metric)) == 1, (context, run.info.run_name, metric)
        numbers = {m: run.data.metrics[m] for m in FINAL_METRICS}
        assert numbers == {m: reference.data.metrics[m] for m in FINAL_METRICS}, (context, run.info.run_name)
