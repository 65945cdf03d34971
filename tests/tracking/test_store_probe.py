"""The tracking store checked before training, and one owner per parent run.

Unusable stores (a SQLite path in a missing folder or under a file, a closed loopback port)
are refused within a bound, before anything is trained; a long description goes into an
artifact; two `--resume` started together train each variant once; a `--resume` while the
sweep runs is refused; a fresh run marks the RUNNING runs of a killed one KILLED.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from types import SimpleNamespace

import pytest

from jaxmlp.sweep.spec import load_sweep
from tests.helpers.sweep import (THREE_GROUPS, TINY_BASE, runs_by_status, free_port, interrupt_mid_sweep, kill_leftovers, run_sweep_cli, start_sweep, store_client,
                           sweep_runs, wait_until, write_sweep)

TWO_SETTINGS = {"base": TINY_BASE, "grid": {"optimizer.learning_rate": [0.1, 0.05]}, "seeds": 1}


def _refused(tmp_path, cache, uri: str, bound: float) -> str:
    path = write_sweep(tmp_path, {"name": "probe", **TWO_SETTINGS})
    tic = time.monotonic()
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    seconds = time.monotonic() - tic
    assert result.code == 2, (result.out, result.err)
    assert seconds < bound, f"refused only after {seconds:.0f} s"
    assert result.out == ""  # no summary: nothing was trained
    assert result.err.startswith(f"error: the tracking store {uri} cannot be used: ")
    assert "Nothing was trained. Fix: " in result.err
    return result.err


def test_a_sqlite_store_in_a_missing_folder_is_refused_before_training(tmp_path, cache):
    err = _refused(tmp_path, cache, f"sqlite:///{tmp_path}/missing/folder/mlflow.db", bound=60)
    assert f"create the folder {tmp_path}/missing/folder" in err
    assert not (tmp_path / "missing").exists()


def test_a_sqlite_store_under_a_file_is_refused_before_training(tmp_path, cache):
    (tmp_path / "a-file").write_text("not a folder")
    err = _refused(tmp_path, cache, f"sqlite:///{tmp_path}/a-file/mlflow.db", bound=60)
    assert f"{tmp_path}/a-file is a file, not a folder" in err


@pytest.mark.slow
def test_a_closed_http_port_is_refused_within_a_minute(tmp_path, cache):
    uri = f"http://127.0.0.1:{free_port()}"
    err = _refused(tmp_path, cache, uri, bound=60)
    assert "Connection refused" in err and "start the tracking server" in err


@pytest.mark.slow
def test_a_long_description_is_an_artifact_and_the_note_is_cut(tmp_path, cache):
    description = "".join(f"line {i}: " + "x" * 90 + "\n" for i in range(300))  # 30,000+ characters
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = write_sweep(tmp_path, {"name": "long-description", "description": description, **TWO_SETTINGS})
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 0, result.err
    assert "INFO mlflow" not in result.err  # MLflow's own log lines ("Creating initial MLflow database tables")
    client = store_client(uri)
    (parent,), children = sweep_runs(client, "long-description")
    note = parent.data.tags["mlflow.note.content"]
    assert len(note) <= 4000 and note.startswith(description.strip()[:3000])
    assert f"{len(description.strip()):,} characters in all" in note and "sweep/description.md" in note
    whole = client.download_artifacts(parent.info.run_id, "sweep/description.md", str(tmp_path))
    assert open(whole).read() == description.strip()
    experiment = client.get_experiment_by_name("long-description")
    assert experiment.tags["mlflow.note.content"] == note
    assert len(children) == 2 and all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory, new_store, cache) -> SimpleNamespace:
    """A sweep killed mid-way; a fresh run (no --resume) of it, killed mid-way too; then two
    --resume started at the same moment."""
    folder = tmp_path_factory.mktemp("concurrent")
    uri = new_store(folder)
    path = write_sweep(folder, {"name": "owners", **THREE_GROUPS})
    _, client, first_parents, _ = interrupt_mid_sweep(path, uri, cache, signal.SIGKILL)
    first = first_parents[0].info.run_id
    log = folder / "second.log"
    second = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=log)
    try:
        def second_mid_way() -> bool:
            children = [c for c in sweep_runs(client, "owners", settled=False)[1]
                        if c.data.tags.get("mlflow.parentRunId") != first]
            by_status = runs_by_status(children)
            return len(by_status.get("FINISHED", ())) >= 2 and bool(by_status.get("RUNNING"))

        wait_until(second_mid_way, "the fresh run's first group FINISHED and its next RUNNING", second, log)
    finally:
        second.kill()
        second.wait()
    parents, children = sweep_runs(client, "owners")
    after_second = SimpleNamespace(parents=parents, children=children, log=log.read_text())
    logs = [folder / "r1.log", folder / "r2.log"]
    resumes = [start_sweep(path, "--resume", "--tracking-uri", uri, "--compile-cache", cache, log=log)
               for log in logs]
    try:
        codes = [p.wait(timeout=300) for p in resumes]
    finally:
        kill_leftovers(resumes)
    parents, children = sweep_runs(client, "owners")
    return SimpleNamespace(client=client, first=first, after_second=after_second,
                           codes=codes, logs=[log.read_text() for log in logs], parents=parents, children=children,
                           keys={v.key for v in load_sweep(path).variants})


@pytest.mark.slow
def test_a_fresh_run_marks_the_running_runs_of_a_killed_sweep_killed(concurrent):
    parents = {p.info.run_id: p for p in concurrent.after_second.parents}
    assert parents[concurrent.first].info.status == "KILLED"
    assert "which is gone" in parents[concurrent.first].data.tags["jaxmlp.failure_reason"]
    killed_children = [c for c in concurrent.after_second.children
                       if c.data.tags["mlflow.parentRunId"] == concurrent.first and c.info.status == "KILLED"]
    assert killed_children  # the first sweep was killed while its second group was RUNNING
    assert not [c for c in concurrent.after_second.children
                if c.data.tags["mlflow.parentRunId"] == concurrent.first and c.info.status == "RUNNING"]
    log = concurrent.after_second.log
    assert f"parent run {concurrent.first} of this sweep was left RUNNING by process " in log
    assert "--resume would have continued it" in log


@pytest.mark.slow
def test_two_resumes_started_together_train_every_variant_once(concurrent):
    assert sorted(concurrent.codes) == [0, 2], concurrent.logs
    loser = concurrent.logs[concurrent.codes.index(2)]
    assert "error: " in loser and ("is being run by process" in loser or "was taken at the same moment" in loser)
    resumed = max(concurrent.parents, key=lambda p: p.info.start_time).info.run_id
    assert resumed != concurrent.first
    children = [c for c in concurrent.children if c.data.tags["mlflow.parentRunId"] == resumed]
    finished = [c.data.tags["jaxmlp.variant_key"] for c in children if c.info.status == "FINISHED"]
    assert sorted(finished) == sorted(concurrent.keys)  # each variant FINISHED exactly once
    assert "RUNNING" not in runs_by_status(concurrent.children)
    assert {p.info.run_id: p.info.status for p in concurrent.parents} == {concurrent.first: "KILLED",
                                                                         resumed: "FINISHED"}
    best = concurrent.client.search_logged_models([concurrent.parents[0].info.experiment_id],
                                                  filter_string=f"source_run_id = '{resumed}'")
    assert len(best) == 1  # one best model on the parent, not one per resume


@pytest.mark.slow
def test_a_resume_while_the_sweep_runs_is_refused_and_the_sweep_goes_on(tmp_path, store_uri, cache):
    uri = store_uri
    path = write_sweep(tmp_path, {"name": "held", **THREE_GROUPS})
    client, log = store_client(uri), tmp_path / "held.log"
    running = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=log)
    try:
        deadline = time.monotonic() + 180
        while not any(c.info.status == "FINISHED" for c in sweep_runs(client, "held", settled=False)[1]):
            assert running.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        result = run_sweep_cli(path, "--resume", "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
        assert running.poll() is None, "the sweep ended before the resume was tried: make its groups longer"
        assert result.code == 2
        assert f"is being run by process {running.pid} on host {socket.gethostname()}" in result.err
        assert "Wait for it to end (or stop it), then --resume again." in result.err
        assert running.wait(timeout=300) == 0, log.read_text()
    finally:
        if running.poll() is None:
            os.kill(running.pid, signal.SIGKILL)
            running.wait()
    (parent,), children = sweep_runs(client, "held")
    assert parent.info.status == "FINISHED" and parent.data.tags["jaxmlp.lease"] == ""
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 6


def test_a_sqlite_store_in_a_folder_nobody_may_write_is_refused_at_once(tmp_path, cache):
    """/proc takes no new files, not even from root: refused within seconds, not after MLflow's
    minute and more of retries."""
    try:
        with open("/proc/jaxmlp-probe", "wb"):
            pytest.skip("/proc takes files here")
    except OSError:
        pass
    err = _refused(tmp_path, cache, "sqlite:////proc/mlflow.db", bound=20)
    assert "/proc is not writable" in err and "make /proc writable" in err


def test_a_uri_of_no_tracking_store_scheme_is_refused_by_its_scheme(tmp_path, cache):
    """MLflow answers such a URI with a TypeError from its model registry's own exception."""
    err = _refused(tmp_path, cache, "bogus://x", bound=20)
    assert "its scheme 'bogus://' is not a tracking store" in err and "sqlite:, postgresql:" in err
    assert "TypeError" not in err


@pytest.mark.parametrize("uri, reason", [("sqlite://", "SQLite would keep everything in memory"),
                                         ("http://[::1", "it is not a valid URI (Invalid IPv6 URL)")])
def test_an_in_memory_or_unparsable_uri_is_refused_with_the_reason(tmp_path, cache, uri, reason):
    """`sqlite://` exited 0 and kept nothing; `http://[::1` was a traceback."""
    err = _refused(tmp_path, cache, uri, bound=20)
    assert reason in err and "Traceback" not in err


@pytest.fixture
def silent_server():
    """A loopback address that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def _without_http_settings() -> dict[str, str]:
    """This environment without MLflow's HTTP settings (a command must bound them itself)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}


@pytest.mark.slow  # a sweep process of its own (its imports: several seconds)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_store_probe_ends_the_sweep_at_once(tmp_path, cache, silent_server, signum):
    """A server that accepts and never answers: the signal was ignored until the probe's 90 s."""
    import select

    path = write_sweep(tmp_path, {"name": "probe-signal", **TWO_SETTINGS})
    uri = "http://127.0.0.1:%d" % silent_server.getsockname()[1]
    sweep = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=tmp_path / "log")
    try:
        readable, _, _ = select.select([silent_server], [], [], 120)  # the probe's connection: the phase hit
        assert readable, (tmp_path / "log").read_text()[-3000:]
        tic = time.monotonic()
        os.kill(sweep.pid, signum)
        code = sweep.wait(timeout=60)
        seconds = time.monotonic() - tic
    finally:
        kill_leftovers([sweep])
    assert code == 128 + signum, (tmp_path / "log").read_text()[-3000:]
    assert seconds < 15, f"ended {seconds:.0f} s after the signal"


@pytest.mark.slow  # MLflow's bounded retries against a closed port: about 15 s (both commands at once)
def test_report_and_replay_against_a_closed_port_end_within_a_bound_with_one_line(tmp_path):
    """They used MLflow's unbounded defaults (251-300 s, then a traceback)."""
    import subprocess
    import sys

    uri = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "spool.json").write_text(
        '{"sweep_name": "s", "sweep_hash": "h", "sweep_file": "s.yaml", "tracking_uri": "%s"}' % uri)
    argv = {"report": ["jaxmlp.report", "some-sweep", "--tracking-uri", uri],
            "replay": ["jaxmlp.tracking", "replay", str(tmp_path / "spool"), "--tracking-uri", uri]}
    tic = time.monotonic()
    processes = {command: subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=_without_http_settings())
                 for command, args in argv.items()}
    try:
        for command, process in processes.items():
            _, stderr = process.communicate(timeout=120)
            seconds = time.monotonic() - tic
            assert process.returncode == 2, f"{command}: {stderr[-3000:]}"
            assert seconds < 60, f"{command} refused only after {seconds:.0f} s"
            assert stderr.startswith("error: the tracking store ") and "Traceback" not in stderr, f"{command}: {stderr}"
            assert stderr.count("\n") == 1 and "Fix: start the tracking server" in stderr, f"{command}: {stderr}"
    finally:
        kill_leftovers(processes.values())


@pytest.mark.slow  # SQLite's and MLflow's own waits on the lock: about 20 s
def test_a_locked_sqlite_store_is_refused_with_the_lock_as_the_reason_and_its_fix(tmp_path, store_uri, cache):
    """It said "make mlflow.db writable" (the wrong fix), with SQLAlchemy's SQL and links over
    three lines. (The sweep runs as a process of its own: SQLite's locks do not survive a fork.)"""
    import sqlite3

    uri = store_uri  # a store with its tables
    path = write_sweep(tmp_path, {"name": "probe", **TWO_SETTINGS})
    lock = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        process = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=tmp_path / "log")
        try:
            code = process.wait(timeout=150)
        finally:
            kill_leftovers([process])
    finally:
        lock.close()
    err = (tmp_path / "log").read_text()
    assert code == 2, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert line.startswith(f"error: the tracking store {uri} cannot be used: ") and "database is locked" in line
    assert f"Fix: another process holds a lock on {tmp_path}/mlflow.db" in line and "writable" not in line
    assert "[SQL:" not in err
