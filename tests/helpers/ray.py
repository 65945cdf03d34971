"""Shared by the Ray tests: a real Ray head on loopback, sweep drivers as processes, and the
processes a cluster runs (found by their session, so only this test's are ever touched)."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

from tests.helpers.sweep import free_port

#: Ray takes 127.0.0.1 as the node's address (every server it starts listens on loopback only), and
#: head and drivers authenticate with a token (`ray_head` makes one for each head).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
#: The title of a worker process while it trains a chunk (Ray names it after the task).
CHUNK_TITLE = "ray::jaxmlp-chunk"


def _stop_group(process: subprocess.Popen, grace: float = 3) -> None:
    """Stop a process started in its own session and everything in its process group (a Ray
    head takes longer than `grace` to stop gracefully; its state is thrown away anyway)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def ray_head(folder: Path, num_cpus: int) -> Iterator[tuple[str, subprocess.Popen]]:
    """`ray start --head --block` on a free loopback port, in its own session; stopped (its
    whole process group, by id) when the block ends, whatever happened inside."""
    port = free_port()
    ports = {"--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
             "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port(),
             "--metrics-export-port": free_port()}
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # its own (short: socket paths) session and address file
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--port", str(port),
               "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus), "--include-dashboard", "false",
               "--object-store-memory", str(200 * 2**20), "--disable-usage-stats", "--temp-dir", temp,
               *[str(x) for kv in ports.items() for x in kv]]
    # a new token for this head, in the environment of this process (a driver here) and of the
    # processes it starts, as long as the head runs: no ~/.ray/auth_token is needed or touched
    with mock.patch.dict(os.environ, {**LOOPBACK_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32)}), \
            open(folder / "ray-head.log", "w") as log:
        head = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_port(port, head, folder / "ray-head.log")
            yield f"127.0.0.1:{port}", head
        finally:
            _stop_group(head)
            shutil.rmtree(temp, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the Ray head did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def sweep_driver(path: Path, *args: Any, log: Path) -> Iterator[subprocess.Popen]:
    """`python -m jaxmlp.sweep PATH ARGS` as a process in its own session (a local cluster it
    starts lives in that session too); whatever is left of the session is killed at the end."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "jaxmlp.sweep", str(path), "--no-progress", *map(str, args)],
                                  cwd=path.parent, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            _stop_group(driver)
        for pid in session_processes(driver.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def session_processes(session: int, title: str = "") -> list[int]:
    """The live processes of a session whose command line starts with `title`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and cmdline.startswith(title):
            found.append(int(entry.name))
    return found
