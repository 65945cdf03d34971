"""The tracking process failing: an unpicklable result, argument or exception, calls after
close, the process killed; and what a sweep does then: it still trains, prints its summary
with the tracking errors and exits 1, never hangs. Summary logging that fails when the
parent closes ends the parent FAILED with the reason. What a dead store could not log is
spooled, and the replay command logs it."""
from __future__ import annotations

import contextlib
import signal
import time

import pytest

from jaxmlp.tracking import RemoteError, Tracker, TrackerProcess

from tests.helpers.sweep import TINY_BASE, run_sweep_cli, store_client, sweep_runs, write_sweep

#: Installed in a tracking process by its warm-up hook: Tracker methods that misbehave there only.
FAULTS = '''
import threading
from jaxmlp.tracking.store import Tracker


class Unpicklable(Exception):
    def __init__(self):
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def unpicklable_answers():
    Tracker.find_experiment = lambda self, name_or_id: threading.Lock()
    def model_uris(self, run_id):
        raise Unpicklable()
    Tracker.model_uris = model_uris


def summary_cannot_be_logged():
    log_folder = Tracker.log_folder
    def broken(self, run_id, files, artifact_path):
        if artifact_path == "summary":
            raise OSError("no space left on device")
        return log_folder(self, run_id, files, artifact_path)
    Tracker.log_folder = broken

def store_fills_up():
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from tracking_fullness import cap_pages

    event.listen(Engine, "checkout", cap_pages(16))
'''

#: A SQLite database that can grow by a number of pages and no more: MLflow's writes beyond
#: fail as on a full disk ("database or disk is full").
FULLNESS = '''
def cap_pages(more):
    limit = []

    def cap(connection, record, proxy):
        if not limit:
            limit.append(connection.execute("PRAGMA page_count").fetchone()[0] + more)
        connection.execute(f"PRAGMA max_page_count = {limit[0]}")
    return cap
'''


@pytest.fixture
def faults(importable) -> str:
    """The module of FAULTS, importable by tracking processes started from now on."""
    importable(tracking_faults=FAULTS, tracking_fullness=FULLNESS)
    return "tracking_faults"


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (rather than hang) when the block takes longer than `seconds`."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_unpicklable_results_arguments_and_exceptions_are_errors_and_the_process_serves_on(uri, faults):
    remote = TrackerProcess(uri, warm_up=[f"{faults}:unpicklable_answers"])
    try:
        with deadline(120):
            exp = remote.experiment("faults")
            with pytest.raises(RemoteError, match=r"the result of 'find_experiment' cannot be sent back"):
                remote.find_experiment("faults")
            with pytest.raises(RemoteError, match=r"^Unpicklable: holds a lock$"):
                remote.model_uris("any")
            with pytest.raises(Exception, match=r"pickle|Can't get local object"):  # refused here, nothing sent
                remote.log_epoch_seconds(lambda: None, "g0", [])
            assert remote.experiment("faults") == exp  # the conversation is still in step
            assert remote._process.poll() is None
    finally:
        remote.close()
    assert remote._process.returncode == 0


def test_calls_after_close_are_refused_and_close_twice_is_fine(uri):
    remote = TrackerProcess(uri)
    remote.close()
    assert remote._process.returncode == 0
    with pytest.raises(RuntimeError, match="the tracking process is closed"):
        remote.experiment("closing")
    remote.close()


def test_a_killed_tracking_process_makes_every_later_call_fail_at_once(uri):
    remote = TrackerProcess(uri)
    with deadline(120):
        remote.experiment("killed")
        remote._process.kill()
        remote._process.wait()
        for _ in range(2):
            with pytest.raises(RemoteError, match=rf"the tracking process ended unexpectedly \(exit code "
                                                  rf"{-signal.SIGKILL}\)"):
                remote.experiment("killed")
        remote.close()


def _tracking_processes(monkeypatch, warm_up: tuple[str, ...] = (), kill_at_once: bool = False) -> list:
    """Make the sweep command's tracking process (TrackerProcess.for_sweep) one with extra
    warm-up hooks, killed at once if asked; the list gets each one started."""
    started: list[TrackerProcess] = []

    def for_sweep(cls, tracking_uri=None):
        remote = TrackerProcess(tracking_uri, warm_up=("jaxmlp.tracking.model:import_model_flavour", *warm_up))
        if kill_at_once:
            remote._process.kill()
            remote._process.wait()
        started.append(remote)
        return remote

    monkeypatch.setattr(TrackerProcess, "for_sweep", classmethod(for_sweep))
    return started


def _printed_summary(out: str, name: str, n_variants: int) -> None:
    assert f"sweep '{name}': {n_variants} variants in " in out, out
    assert any(line.startswith("model.activation=relu") for line in out.splitlines()), out
    assert any(line.startswith("model.activation=tanh") for line in out.splitlines()), out


TWO_SETTINGS = {"base": TINY_BASE, "grid": {"model.activation": ["relu", "tanh"]}, "seeds": [0]}


def _killed_mid_sweep(monkeypatch, tmp_path, uri, cache, name: str):
    """Run the sweep of TWO_SETTINGS with its tracking process killed after the first epoch, once
    both children's runs are RUNNING in the store `uri`; the spool goes under tmp_path."""
    import jaxmlp.sweep.runner as runner

    path = write_sweep(tmp_path, {"name": name, **TWO_SETTINGS})
    client = store_client(uri)
    started = _tracking_processes(monkeypatch)

    class KillsTheTrackingProcess(runner.LocalExecutor):
        def run(self, task, data):
            for event in super().run(task, data):
                yield event  # (the runner starts the runs of the variants the epoch's slots took)
                process = started[0]._process
                if event[0] == "epoch" and process.poll() is None:
                    limit = time.monotonic() + 60
                    while [c.info.status for c in sweep_runs(client, name, settled=False)[1]] != ["RUNNING"] * 2:
                        assert time.monotonic() < limit, "the two child runs did not start"
                        time.sleep(0.05)
                    process.kill()
                    process.wait()

    monkeypatch.setattr(runner, "LocalExecutor", KillsTheTrackingProcess)
    monkeypatch.setenv("JAXMLP_CACHE_DIR", str(tmp_path / "cache"))
    with deadline(240):
        result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    monkeypatch.undo()
    return path, uri, client, result


@pytest.mark.slow
def test_a_sweep_whose_tracking_process_dies_mid_sweep_trains_on_reports_and_resumes(tmp_path, store_uri, cache,
                                                                                     monkeypatch):
    name = "dies-mid-sweep"
    path, uri, client, result = _killed_mid_sweep(monkeypatch, tmp_path, store_uri, cache, name)
    assert result.code == 1, result.err
    _printed_summary(result.out, name, 2)
    assert f"TRACKING ERROR: RemoteError: the tracking process ended unexpectedly (exit code {-signal.SIGKILL})" \
        in result.out
    assert "FAILED:" not in result.out  # training itself went fine
    (parent,), children = sweep_runs(client, name)
    assert parent.info.status == "RUNNING" and {c.info.status for c in children} == {"RUNNING"}  # nobody left to end them

    with deadline(240):
        again = run_sweep_cli(path, "--resume", "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert again.code == 0, again.out + again.err
    (resumed,), children = sweep_runs(client, name)
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED", "KILLED", "KILLED"]


@pytest.mark.slow
def test_what_a_dead_store_could_not_log_is_spooled_and_the_replay_logs_it_all(tmp_path, store_uri, cache,
                                                                              monkeypatch):
    from jaxmlp.tracking.__main__ import main as tracking_main

    name = "spooled"
    _, uri, client, result = _killed_mid_sweep(monkeypatch, tmp_path, store_uri, cache, name)
    assert result.code == 1, result.err
    line = next(x for x in result.out.splitlines() if "nothing trained is lost" in x)
    assert "2 child run(s) and the summary not logged are kept in " in line
    folder = line.split(" are kept in ")[1].split("; log them with: ")[0]
    assert folder.startswith(f"{tmp_path}/cache/spool/{name}-")
    assert line.endswith(f"log them with: python -m jaxmlp.tracking replay {folder} --tracking-uri {uri}")
    printed = {x.split()[0]: x.split() for x in result.out.splitlines() if x.startswith("model.activation=")}

    assert tracking_main(["replay", folder]) == 0  # into the sweep's own store, which works again
    (parent,), children = sweep_runs(client, name)
    assert parent.info.status == "FINISHED" and parent.data.tags["jaxmlp.summary_logged"] == "true"
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]  # the RUNNING ones ended
    for child in children:
        setting = child.data.tags["jaxmlp.setting"]
        assert f"{child.data.metrics['best_val_loss']:.4f}" == printed[setting][1]  # what the sweep printed
        epochs = int(child.data.metrics["epochs_trained"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert sorted(steps) == list(range(1, epochs + 1))
        assert client.list_artifacts(child.info.run_id, "checkpoint")
    models = {m.source_run_id for m in client.search_logged_models([parent.info.experiment_id])}
    assert models == {parent.info.run_id, *(c.info.run_id for c in children)}  # each setting's best, the sweep's best
    assert parent.data.tags["jaxmlp.best_run_id"] in {c.info.run_id for c in children}
    assert client.list_artifacts(parent.info.run_id, "summary")


def test_a_sweep_whose_tracking_process_is_dead_from_the_start_is_refused_before_training(
        tmp_path, cache, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = write_sweep(tmp_path, {"name": "dead-from-the-start", **TWO_SETTINGS})
    _tracking_processes(monkeypatch, kill_at_once=True)
    with deadline(120):
        result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 2
    assert result.out == ""  # no summary: nothing was trained
    assert result.err.startswith(f"error: the tracking store {uri} cannot be used: RemoteError: the tracking "
                                 "process ended unexpectedly")
    assert "Nothing was trained." in result.err


@pytest.mark.slow
def test_summary_logging_that_fails_when_the_parent_closes_ends_it_failed_with_the_reason(
        tmp_path, store_uri, cache, monkeypatch, faults):
    uri, name = store_uri, "summary-fails"
    path = write_sweep(tmp_path, {"name": name, **TWO_SETTINGS})
    _tracking_processes(monkeypatch, warm_up=(f"{faults}:summary_cannot_be_logged",))
    with deadline(240):
        result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 1, result.err
    _printed_summary(result.out, name, 2)
    assert "TRACKING ERROR: OSError: no space left on device" in result.out
    client = store_client(uri)
    (parent,), children = sweep_runs(client, name)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["jaxmlp.failure_reason"] == (
        "the sweep summary could not be logged: OSError: no space left on device")
    assert not client.list_artifacts(parent.info.run_id, "summary")
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert parent.data.tags["jaxmlp.best_run_id"] in {c.info.run_id for c in children}  # models came before


def test_a_failing_store_call_prints_mlflow_s_error_as_one_line(store_uri, faults, capfd):
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from tracking_fullness import cap_pages

    tracker = Tracker(store_uri)
    run = tracker.client.create_run(tracker.experiment("full")).info.run_id
    cap = cap_pages(0)
    event.listen(Engine, "checkout", cap)
    try:
        capfd.readouterr()
        with pytest.raises(Exception, match="database or disk is full"):
            tracker.log_history(run, [{"epoch": e, **{f"metric_{'x' * 200}_{i}": 0.5 for i in range(50)}}
                                      for e in range(40)])
    finally:
        event.remove(Engine, "checkout", cap)
    printed = capfd.readouterr().err.splitlines()
    assert len(printed) == 1 and "Traceback" not in printed[0], printed
    assert printed[0].endswith("OperationalError: database or disk is full"), printed


@pytest.mark.slow  # a whole sweep (about a minute on a slow machine)
def test_a_full_store_prints_a_line_per_failure_and_the_spool_message_last(tmp_path, store_uri, cache, monkeypatch,
                                                                           faults):
    uri, name = store_uri, "store-fills-up"  # created (and migrated) before the cap
    path = write_sweep(tmp_path, {"name": name, **TWO_SETTINGS})
    _tracking_processes(monkeypatch, warm_up=(f"{faults}:store_fills_up",))
    monkeypatch.setenv("JAXMLP_CACHE_DIR", str(tmp_path / "cache"))
    with deadline(240):
        result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 1, result.err
    _printed_summary(result.out, name, 2)
    mlflow_lines = result.err.splitlines()  # the tracking process's stderr, forwarded
    assert mlflow_lines and all("database or disk is full" in x for x in mlflow_lines), mlflow_lines
    errors = [x for x in result.out.splitlines() if x.startswith("TRACKING ERROR: MlflowException")]
    assert len(mlflow_lines) == len(errors), (mlflow_lines, errors)  # one line per failure
    tracking = [x for x in result.out.splitlines() if x.startswith("TRACKING ERROR")]
    assert tracking[-1].startswith("TRACKING ERROR: nothing trained is lost: ") and " are kept in " in tracking[-1]
