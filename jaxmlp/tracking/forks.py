"""A fork server for tracking processes: one Python process per sweep process imports MLflow
(its stores and its pyfunc flavour) once, then forks a tracking process for each sweep. A
forked tracking process is ready in milliseconds; a fresh interpreter takes about 2 s of CPU
to import the same, which every tracked sweep of a notebook, a script or a test session paid.

Linux only (it needs `os.fork` in a process without threads, file descriptors passed over a
Unix socket and `os.pidfd_open`); elsewhere, and where the server cannot be used, the caller
starts a fresh interpreter as before (`fork_tracking_process` returns None).

The server is a fresh interpreter started from the sweep process's main thread, in a session of
its own, ignoring terminal signals. It ends when the sweep process does: at the end of file of
its socket, or at once by the kernel's parent-death signal where the sweep process is killed.
Each tracking process it forks gets the sweep process's working directory, environment, module
path, stdout and a pipe for stderr, so it behaves as one started by the sweep process itself.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import Callable, Sequence

#: What the server imports before forking: MLflow's client, its stores and its pyfunc flavour,
#: and the tracking modules a tracking process runs.
PRELOAD = ("mlflow", "mlflow.pyfunc", "mlflow.store.tracking.sqlalchemy_store",
           "mlflow.store.model_registry.sqlalchemy_store", "mlflow.store.tracking.rest_store",
           "jaxmlp.tracking.store", "jaxmlp.tracking.model", "jaxmlp.tracking.process")

#: The process names (Linux's `comm`, at most 15 characters) tracking processes and the server take.
TRACKING_NAME, SERVER_NAME = "jaxmlp-tracking", "jaxmlp-forks"

_MAX_REQUEST = 1 << 20


def _prctl(option: int, *args) -> bool:
    """Linux's prctl(option, args...); False where the platform has none."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(option, *args)
    except (OSError, AttributeError):
        return False
    return True


def set_process_name(name: str) -> None:
    """Name this process (what `ps -o comm` and /proc/PID/comm show) where the platform allows."""
    _prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def die_with_parent(parent: int) -> None:
    """Have the kernel end this process when its parent `parent` dies (Linux; `PR_SET_PDEATHSIG`),
    and end it now if that parent is already gone."""
    if not _prctl(1, signal.SIGKILL):  # PR_SET_PDEATHSIG; not Linux: the closed pipe or socket still ends it
        return
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(0)


def module_path() -> list[str]:
    """This process's module search path, for a process that must import this same jaxmlp
    (installed or not)."""
    return [p for p in sys.path if p]


# -- the server process ---------------------------------------------------------------------

def _server(fd: int, parent: int) -> None:
    """The fork server's loop: fork a tracking process per "fork" request (its descriptors come
    with the request), answer "status" requests with a forked process's exit code."""
    import gc
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(parent)
    set_process_name(SERVER_NAME)
    sock = socket.socket(fileno=fd)
    from jaxmlp.tracking.logs import quiet_mlflow_logging

    quiet_mlflow_logging()  # (before MLflow's import configures its loggers)
    for module in PRELOAD:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()  # the imported modules stay shared with every fork (not copied by the collector)
    statuses: dict[int, int] = {}
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 3)
        except OSError:
            os._exit(0)
        if not message:  # the sweep process closed its end (or ended)
            os._exit(0)
        _reap(statuses)
        request = json.loads(message)
        if request["op"] == "status":
            pid = request["pid"]
            if pid not in statuses:
                _reap(statuses, pid)
            sock.send(json.dumps(statuses.get(pid)).encode())
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(request, fds)  # never returns
        for fd_ in fds:
            os.close(fd_)


def _reap(statuses: dict[int, int], pid: int = -1) -> None:
    """Collect the exit codes of ended forks (`pid`: that one only) without waiting."""
    while True:
        try:
            ended, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if ended == 0:
            return
        statuses[ended] = os.waitstatus_to_exitcode(status)
        if pid != -1:
            return


def _child(request: dict, fds: list[int]) -> None:
    """A forked tracking process: take on the sweep process's context, then serve (the request's
    "module:function" target, called with the connection, its arguments, the parent's pid and
    `announce=True`: it sends its pid first)."""
    import importlib

    code = 1
    try:
        conn, out, err = fds
        os.setsid()
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        module, _, function = request["target"].partition(":")
        target = getattr(importlib.import_module(module), function)  # (imported by the server already)
        target(conn, *request["args"], parent=os.getppid(), announce=True)
        code = 0
    except BaseException:  # noqa: BLE001 - printed, the exit code says it
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- the sweep process's side ------------------------------------------------------------------

class ForkedProcess:
    """A tracking process forked by the server: `poll`, `wait`, `kill` and `returncode` as on
    `subprocess.Popen`. Its pid comes later (`pid_source`, read once the server has forked), so
    that starting one never waits on the server's imports."""

    def __init__(self, server: "ForkServer", pid_source: Callable[[], int | None], stderr):
        self._server, self._pid_source, self.stderr = server, pid_source, stderr
        self._pid: int | None = None
        self._pidfd: int | None = None
        self.returncode: int | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        with self._lock:
            if self._pid is None and self.returncode is None:
                self._pid = self._pid_source()
                if self._pid is None:  # never forked (the server died first)
                    self.returncode = -signal.SIGKILL
                else:
                    try:
                        self._pidfd = os.pidfd_open(self._pid)
                    except ProcessLookupError:  # already ended and collected
                        self._pidfd = None
            return self._pid

    def _ended(self, timeout: float | None) -> bool:
        if self.pid is None or self._pidfd is None:  # (never forked, or ended and collected at once)
            return True
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def poll(self) -> int | None:
        if self.returncode is None and self._ended(0):
            self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._ended(timeout):
                raise subprocess.TimeoutExpired("tracking process", timeout)
            self._collect()
        return self.returncode

    def _collect(self) -> None:
        code = self._server.status(self._pid) if self._pid is not None else None
        self.returncode = code if code is not None else -signal.SIGKILL  # (the server gone: killed with it)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def kill(self) -> None:
        if self.pid is not None and self.returncode is None and self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass


class ForkServer:
    """The sweep process's end of a fork server (started at once; its imports run meanwhile)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (f"import sys; sys.path[:] = {module_path()!r}; "
                f"from {__name__} import _server; _server({theirs.fileno()}, {os.getpid()})")
        self.process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()],
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        theirs.close()
        self._sock = ours
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, conn_fd: int, target: str, args: Sequence, pid_source: Callable[[], int | None]) -> ForkedProcess:
        """Have the server fork a process running `target` ("module:function", imported by the
        server) on the connection `conn_fd` with `args` (JSON values); its first message there is
        its pid (`pid_source` reads it). Raises OSError where the server is gone."""
        read_end, write_end = os.pipe()
        request = {"op": "fork", "target": target, "args": list(args), "cwd": os.getcwd(),
                   "env": dict(os.environ), "path": module_path()}
        try:
            with self._lock:
                socket.send_fds(self._sock, [json.dumps(request).encode()], [conn_fd, _stdout_fd(), write_end])
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return ForkedProcess(self, pid_source, os.fdopen(read_end, "rb"))

    def status(self, pid: int) -> int | None:
        """The exit code of an ended fork; None where unknown (running, or the server gone)."""
        try:
            with self._lock:
                self._sock.send(json.dumps({"op": "status", "pid": pid}).encode())
                return json.loads(self._sock.recv(64) or b"null")
        except (OSError, ValueError):
            return None


def _stdout_fd() -> int:
    try:
        os.fstat(1)
        return 1
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)  # (closed stdout: the fork writes nowhere)


_servers: dict[int, ForkServer] = {}  # by the sweep process's pid (a forked sweep process starts its own)
_servers_lock = threading.Lock()


def _usable() -> bool:
    return (sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")
            and threading.current_thread() is threading.main_thread()  # (the server dies with the thread that started it)
            and os.environ.get("JAXMLP_TRACKING_FORKS", "1") != "0")


def server() -> ForkServer | None:
    """This process's fork server, started on first use; None where it cannot be used."""
    if not _usable():
        return None
    with _servers_lock:
        current = _servers.get(os.getpid())
        if current is not None and current.alive():  # (a changed sys.path goes with each request)
            return current
        try:
            _servers[os.getpid()] = current = ForkServer()
        except OSError:
            return None
        return current
