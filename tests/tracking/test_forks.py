"""The fork server: a sweep process's tracking processes are forked by one server that imported
MLflow once, each with the caller's working directory, environment and module path as they
were when it started; a dead server is replaced (its forks report being killed), and where the
server is not used (turned off, or from a thread other than the main one) a fresh interpreter
serves as before."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from jaxmlp.tracking import RemoteError, TrackerProcess
from jaxmlp.tracking import forks
from jaxmlp.tracking.forks import TRACKING_NAME, ForkedProcess

from tests.tracking.test_tracking_failures import deadline

#: A warm-up hook writing what the tracking process sees into $JAXMLP_PROBE_FILE.
PROBE = '''
import json, os, sys


def record():
    with open(os.environ["JAXMLP_PROBE_FILE"], "w") as f:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
                   "mark": os.environ.get("JAXMLP_PROBE_MARK"),
                   "name": open(f"/proc/{os.getpid()}/comm").read().strip(),
                   "path_has_probe": any(p.endswith("importable") for p in sys.path)}, f)
'''


@pytest.fixture
def probe(importable) -> str:
    importable(tracking_probe=PROBE)
    return "tracking_probe:record"


def _seen(remote: TrackerProcess, file: Path, name: str) -> dict:
    """Make a call (so the warm-up has run), close, and read what the probe wrote."""
    assert remote.experiment(name)
    remote.close()
    assert remote._process.returncode == 0
    return json.loads(file.read_text())


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux's pidfd")
def test_tracking_processes_are_forked_by_one_server_with_the_callers_folder_and_environment(
        uri, probe, tmp_path, monkeypatch):
    monkeypatch.delenv("JAXMLP_TRACKING_FORKS", raising=False)  # (a user's setting would turn it off)
    server = forks.server()
    assert server is not None and server.alive()
    seen = []
    with deadline(120):
        for n in range(2):  # set after the server started: each fork takes the caller's at its start
            folder = tmp_path / f"cwd{n}"
            folder.mkdir()
            monkeypatch.chdir(folder)
            monkeypatch.setenv("JAXMLP_PROBE_MARK", f"mark{n}")
            monkeypatch.setenv("JAXMLP_PROBE_FILE", str(tmp_path / f"probe{n}.json"))
            remote = TrackerProcess(uri, warm_up=[probe])
            assert isinstance(remote._process, ForkedProcess)
            seen.append(_seen(remote, tmp_path / f"probe{n}.json", f"forked{n}"))
            assert seen[-1]["cwd"] == str(folder.resolve()) and seen[-1]["mark"] == f"mark{n}"
    assert forks.server() is server
    assert [s["ppid"] for s in seen] == [server.process.pid] * 2  # forked by the server, not fresh interpreters
    assert seen[0]["pid"] != seen[1]["pid"]
    assert all(s["name"] == TRACKING_NAME and s["path_has_probe"] for s in seen)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux's pidfd")
def test_a_dead_fork_server_takes_its_forks_along_and_the_next_tracking_process_gets_a_new_one(uri, monkeypatch):
    monkeypatch.delenv("JAXMLP_TRACKING_FORKS", raising=False)
    server = forks.server()
    with deadline(120):
        remote = TrackerProcess(uri)
        remote.experiment("before")  # opened: the fork now dies with its server
        server.process.kill()
        server.process.wait()
        remote._process.wait(30)
        assert remote._process.returncode == -signal.SIGKILL
        with pytest.raises(RemoteError, match=rf"ended unexpectedly \(exit code {-signal.SIGKILL}\)"):
            remote.experiment("after")
        remote.close()
        fresh = TrackerProcess(uri)
        assert fresh.experiment("after")
        assert isinstance(fresh._process, ForkedProcess) and forks.server() is not server
        fresh.close()
        assert fresh._process.returncode == 0


def test_without_the_fork_server_a_fresh_interpreter_serves(uri, probe, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMLP_PROBE_FILE", str(tmp_path / "off.json"))
    monkeypatch.setenv("JAXMLP_TRACKING_FORKS", "0")
    with deadline(120):
        remote = TrackerProcess(uri, warm_up=[probe])
        assert isinstance(remote._process, subprocess.Popen)
        seen = _seen(remote, tmp_path / "off.json", "fresh")
    assert seen["ppid"] == os.getpid() and seen["name"] == TRACKING_NAME
    monkeypatch.delenv("JAXMLP_TRACKING_FORKS")
    started = []
    thread = threading.Thread(target=lambda: started.append(TrackerProcess(uri)))  # (a fork server
    thread.start()  # started from a thread would die with it)
    thread.join()
    with deadline(120):
        assert isinstance(started[0]._process, subprocess.Popen) and started[0].experiment("threaded")
        started[0].close()
