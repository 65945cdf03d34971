"""The tracking process: a `Tracker` whose calls run in a separate Python interpreter, so
MLflow's imports, SQL transactions, artifacts and models never hold the sweep process's GIL.
The two talk over a pipe: a call goes as (method name, args, kwargs), its result or
exception comes back."""
from __future__ import annotations

import os
import threading
from typing import IO, Any, Callable, Sequence

from jaxmlp.tracking.forks import TRACKING_NAME, die_with_parent, module_path, set_process_name
from jaxmlp.tracking.logs import quiet_mlflow_logging
from jaxmlp.tracking.store import Tracker
from jaxmlp.tracking.uri import resolve_tracking_uri


class RemoteError(RuntimeError):
    """An exception raised in the tracking process that could not be sent back as it was."""


def _serve(fd: int, tracking_uri: str, warm_up: list[str], parent: int, announce: bool = False) -> None:
    """The tracking process: run `Tracker` calls received on the connection `fd` one by one and
    send back their results. `warm_up`: "module:function" names to call first; `parent`: the
    process whose death ends this one; `announce`: send this process's pid first (a fork, whose
    pid the sweep process does not know).

    Signals from the terminal are ignored here: the sweep process decides what happens on
    Ctrl-C (it marks unfinished runs KILLED through this process). When the sweep process
    dies, the connection closes and this process ends after the call at hand.
    """
    import gc
    import importlib
    import pickle
    import signal
    import sys
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    set_process_name(TRACKING_NAME)
    bound_http_requests()
    quiet_mlflow_logging()
    conn, tracker = Connection(fd), Tracker(tracking_uri)
    if announce:
        conn.send(os.getpid())
    opening_error = None  # the first call gets it, rather than waiting out the same retries again
    try:
        tracker.client  # import MLflow and open the store while the sweep process imports JAX
    except Exception as err:  # noqa: BLE001 - the first call reports it
        opening_error = err
    # Only now: killed with the sweep process while MLflow migrates a new SQLite store, the
    # store would be left half-migrated (unusable); until here a dead sweep costs some seconds.
    # (Where the parent died first, this process ends now; the kernel ends it with its parent after.)
    die_with_parent(parent)
    for name in warm_up:  # now, while the sweep process compiles, rather than later while it trains
        module, _, function = name.partition(":")
        getattr(importlib.import_module(module), function)()
    gc.freeze()  # MLflow's many long-lived objects out of the collector's way: logging runs ~25% faster
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            message = pickle.loads(message)
            if message is None:
                break
            name, args, kwargs = message
            if opening_error is not None:
                error, opening_error = opening_error, None
                raise error
            reply = (True, getattr(tracker, name)(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - sent back, raised in the caller
            try:
                pickle.dumps(err)
            except Exception:  # noqa: BLE001
                err = RemoteError(f"{type(err).__name__}: {err}")
            reply = (False, err)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            conn.send((False, RemoteError(f"the result of {name!r} cannot be sent back: {err}")))
        except OSError:  # the sweep process is gone (killed): nobody to answer, nothing to print
            return
    # Every call is done and committed: skip the interpreter's teardown of MLflow and
    # SQLAlchemy (about a second) that the sweep process would wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


#: MLflow's HTTP settings for a tracking server, unless the environment sets them: a request
#: waits at most 30 s, and a failing one is retried 4 times over about 15 s (a server that
#: restarts within that is ridden out; a dead one is an error within about 45 s, not the
#: 8 minutes of MLflow's defaults: 7 retries, backoff factor 2, 120 s timeout).
HTTP_REQUEST_SETTINGS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
                         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5"}


def bound_http_requests() -> None:
    """Bounded timeouts and retries for the HTTP requests of this process (`HTTP_REQUEST_SETTINGS`)."""
    for key, value in HTTP_REQUEST_SETTINGS.items():
        os.environ.setdefault(key, value)


def store_failure(err: BaseException) -> str | None:
    """One line saying why the store failed where `err` is MLflow's error (a server that does
    not answer or refuses, a locked database); None for anything else."""
    from mlflow.exceptions import MlflowException

    if not isinstance(err, MlflowException):
        return None
    line = " ".join(str(err.message).split())
    return line if len(line) <= 400 else f"{line[:400]}..."


def _forward(stream: IO[bytes], write: Callable[[str], Any]) -> None:
    for line in iter(stream.readline, b""):
        write(line.decode(errors="replace").rstrip("\n"))
    stream.close()


class TrackerProcess:
    """A `Tracker` whose calls run in a separate Python process, one at a time, in call order.

    The sweep process only pickles arguments and waits on a pipe (the GIL is free meanwhile):
    importing MLflow, SQL transactions, artifacts, models and plots cost it nothing but
    their share of the CPU. `Tracker` methods are called as usual; their exceptions come
    back and are raised.
    `warm_up`: "module:function" names of functions the process calls before serving
    (imports that later calls need).

    The process is forked by this process's fork server (`jaxmlp.tracking.forks`: MLflow
    imported once per sweep process, not once per sweep), or else a fresh interpreter; either
    imports only jaxmlp's tracking modules (not the caller's `__main__`, unlike
    multiprocessing's spawn), so any script may start one. What it writes to stderr (MLflow's
    warnings) goes through `self.write_line`, by default to this process's stderr; a progress
    display replaces it to print such lines above its bars.
    """

    def __init__(self, tracking_uri: str | None = None, warm_up: Sequence[str] = ()):
        import multiprocessing
        import sys

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._conn, child = multiprocessing.Pipe()
        self._lock = threading.Lock()
        self._process = self._fork(child.fileno(), list(warm_up)) or self._start(child.fileno(), list(warm_up))
        child.close()
        self.write_line: Callable[[str], Any] = lambda line: print(line, file=sys.stderr, flush=True)
        self._stderr = threading.Thread(target=_forward, args=(self._process.stderr, lambda s: self.write_line(s)),
                                        name="jaxmlp-tracking-stderr", daemon=True)
        self._stderr.start()

    def _fork(self, fd: int, warm_up: list[str]):
        """A tracking process forked by this process's fork server (`jaxmlp.tracking.forks`),
        MLflow already imported; None where there is none."""
        from jaxmlp.tracking.forks import server

        forks = server()
        if forks is None:
            return None
        try:
            return forks.fork(fd, f"{__name__}:_serve", (self.tracking_uri, warm_up), self._forked_pid)
        except OSError:  # the server is gone: a fresh interpreter instead
            return None

    def _forked_pid(self) -> int | None:
        """The forked process's first message, its pid (None where it never started)."""
        with self._lock:
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                return None

    def _start(self, fd: int, warm_up: list[str]):
        """A tracking process in a fresh interpreter."""
        import subprocess
        import sys

        code = (f"import sys; sys.path[:] = {module_path()!r}; "
                f"from {__name__} import _serve; "
                f"_serve({fd}, {self.tracking_uri!r}, {warm_up!r}, parent={os.getpid()})")
        # A session of its own: a Ctrl-C in the terminal goes to the sweep process alone (which
        # decides what happens to the runs), not to this one while it is still importing.
        return subprocess.Popen([sys.executable, "-c", code], pass_fds=[fd], stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)

    @classmethod
    def for_sweep(cls, tracking_uri: str | None = None) -> "TrackerProcess":
        """A sweep's tracking process: it imports MLflow, opens the store, then the model
        flavour, while the sweep process starts JAX and compiles."""
        return cls(tracking_uri, warm_up=("jaxmlp.tracking.model:import_model_flavour",))

    def _request(self, name: str, args: tuple, kwargs: dict) -> Any:
        self._process.pid  # (a fork's pid is its first message: read before any call)
        with self._lock:
            if self._conn.closed:
                raise RuntimeError("the tracking process is closed")
            try:
                self._conn.send((name, args, kwargs))
                ok, value = self._conn.recv()
            except (EOFError, OSError) as err:
                raise RemoteError(f"the tracking process ended unexpectedly (exit code "
                                  f"{self._process.poll()})") from err
        if not ok:
            raise value
        return value

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(Tracker, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._request(name, args, kwargs)

    def close(self, timeout: float = 60.0) -> None:
        """Let the process finish and end; it has done every call by the time each returned."""
        import subprocess

        self._process.pid  # (a fork's pid is its first message: read before the connection closes)
        with self._lock:
            if not self._conn.closed:
                try:
                    self._conn.send(None)
                except OSError:
                    pass
                self._conn.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stderr.join(5)

    def kill(self) -> None:
        """End the process now (a store that does not answer); a call waiting on it raises."""
        self._process.kill()
        self._process.wait()
        with self._lock:
            self._conn.close()
