"""MLflow edge: experiments, parent and child runs, batched logging, artifacts, models.

Receives plain dicts, lists and bytes; knows nothing about training. Every method of
`Tracker` is synchronous. MLflow is imported on first use, so importing this module is
cheap. The sweep runner runs the calls in a `TrackerProcess` (a separate Python process,
started before JAX, that imports MLflow and opens the store meanwhile) and overlaps them
with training by submitting them to one `AsyncWriter` thread.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import posixpath
import re
import shlex
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_UI_BASE = "http://127.0.0.1:5000"
#: The `--tracking-uri` option's help, for every command that takes it (see `resolve_tracking_uri`).
TRACKING_URI_HELP = ("MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                     f"{DEFAULT_TRACKING_URI} in the working directory)")

ROLE_TAG = "jaxmlp.role"
SWEEP_NAME_TAG = "jaxmlp.sweep_name"
SWEEP_HASH_TAG = "jaxmlp.sweep_hash"
VARIANT_KEY_TAG = "jaxmlp.variant_key"
FAILURE_REASON_TAG = "jaxmlp.failure_reason"
SETTING_TAG = "jaxmlp.setting"
DIVERGED_TAG = "jaxmlp.diverged"
GROUP_TAG = "jaxmlp.group"
PARENT_RUN_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_OR_TAGS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000

_SQLITE = "sqlite:///"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else ./mlflow.db; SQLite paths made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith(_SQLITE) and not uri[len(_SQLITE):].startswith("/"):
        uri = _SQLITE + os.path.abspath(uri[len(_SQLITE):])
    return uri


def _is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ui_command(tracking_uri: str) -> str:
    """The shell command that shows a local store in the MLflow UI (a server: its URI)."""
    if _is_server(tracking_uri):
        return tracking_uri
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"


def ui_base_url(tracking_uri: str) -> str:
    """Where the UI of this store is: the server itself, or what `mlflow ui` serves by default."""
    return tracking_uri.rstrip("/") if _is_server(tracking_uri) else DEFAULT_UI_BASE


def runs_page_url(ui_base: str, experiment_id: str) -> str:
    """The classic runs page (parent runs with nested children) of one experiment."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


class TrackingError(RuntimeError):
    """One or more background tracking jobs failed; `errors` holds every exception."""

    def __init__(self, errors: list[BaseException]):
        lines = "\n".join(f"  {type(e).__name__}: {e}" for e in errors)
        super().__init__(f"{len(errors)} tracking job(s) failed:\n{lines}")
        self.errors = errors


class AsyncWriter:
    """One background thread that runs submitted callables in submission order.

    A failing job does not stop later ones; its exception is kept (and stays on its
    future) until `flush` or `close` raises it as a `TrackingError`.
    """

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxmlp-tracking")
        self._futures: list[concurrent.futures.Future] = []
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future = self._executor.submit(fn, *args, **kwargs)
        future.add_done_callback(self._keep_error)
        with self._lock:
            self._futures.append(future)
        return future

    def _keep_error(self, future: concurrent.futures.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            with self._lock:
                self._errors.append(future.exception())

    def flush(self, raise_errors: bool = True) -> list[BaseException]:
        """Wait for all submitted jobs; raise (or return) the errors gathered since the last flush."""
        with self._lock:
            futures, self._futures = self._futures, []
        concurrent.futures.wait(futures)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors and raise_errors:
            raise TrackingError(errors) from errors[0]
        return errors

    def close(self, raise_errors: bool = True) -> list[BaseException]:
        """Finish all submitted jobs, stop the thread, then report errors like `flush`."""
        try:
            return self.flush(raise_errors)
        finally:
            self._executor.shutdown(wait=True)


class RemoteError(RuntimeError):
    """An exception raised in the tracking process that could not be sent back as it was."""


def _serve(fd: int, tracking_uri: str, warm_up: list[str]) -> None:
    """The tracking process: run `Tracker` calls received on the connection `fd` one by one and
    send back their results. `warm_up`: "module:function" names to call first.

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
    conn, tracker = Connection(fd), Tracker(tracking_uri)
    try:
        tracker.client  # import MLflow and open the store while the sweep process imports JAX
    except Exception:  # noqa: BLE001 - the first call reports it
        pass
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
    # Every call is done and committed: skip the interpreter's teardown of MLflow and
    # SQLAlchemy (about a second) that the sweep process would wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class TrackerProcess:
    """A `Tracker` whose calls run in a separate Python process, one at a time, in call order.

    The sweep process only pickles arguments and waits on a pipe (the GIL is free meanwhile):
    importing MLflow, SQL transactions, artifacts, models and plots cost it nothing but
    their share of the CPU. `Tracker` methods are called as usual; their exceptions come
    back and are raised.
    `warm_up`: "module:function" names of functions the process calls before serving
    (imports that later calls need).

    The process is a fresh interpreter that imports only this module (not the caller's
    `__main__`, unlike multiprocessing's spawn), so any script may start one.
    """

    def __init__(self, tracking_uri: str | None = None, warm_up: Sequence[str] = ()):
        import multiprocessing
        import subprocess
        import sys

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._conn, child = multiprocessing.Pipe()
        # The caller's module search path, so this same jaxmlp is imported, installed or not.
        code = (f"import sys; sys.path[:] = {[p for p in sys.path if p]!r}; from jaxmlp.tracking import _serve; "
                f"_serve({child.fileno()}, {self.tracking_uri!r}, {list(warm_up)!r})")
        self._process = subprocess.Popen([sys.executable, "-c", code], pass_fds=[child.fileno()],
                                         stdin=subprocess.DEVNULL)
        child.close()
        self._lock = threading.Lock()

    @classmethod
    def for_sweep(cls, tracking_uri: str | None = None) -> "TrackerProcess":
        """A sweep's tracking process: it imports MLflow, opens the store, then the model
        flavour, while the sweep process starts JAX and compiles."""
        return cls(tracking_uri, warm_up=("jaxmlp.tracking:import_model_flavour",))

    @property
    def pid(self) -> int:
        return self._process.pid

    def _request(self, name: str, args: tuple, kwargs: dict) -> Any:
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

    @property
    def alive(self) -> bool:
        return self._process.poll() is None


def _chunks(items: list, size: int) -> Iterator[list]:
    return (items[i:i + size] for i in range(0, len(items), size))


def _truncate(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def history_metrics(history: list[dict[str, float]], step_key: str = "epoch") -> list:
    """MLflow `Metric`s of per-step records ({step_key: n, name: value, ...})."""
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    return [Metric(key, float(value), timestamp, int(record[step_key]))
            for record in history for key, value in record.items() if key != step_key]


def step_metrics(metrics: dict[str, float], step: int = 0) -> list:
    """MLflow `Metric`s of one value per name at one step."""
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    return [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]


def _run_params(params: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(key, _truncate(value, MAX_PARAM_LENGTH)) for key, value in params.items()]


def _run_tags(tags: dict[str, Any]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(key, _truncate(value, MAX_TAG_LENGTH)) for key, value in tags.items()]


class Tracker:
    """Experiments, runs, metrics, artifacts and models in one MLflow store, by explicit URI."""

    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_id: str | None = None
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def client(self):
        """The `MlflowClient`, created (MLflow imported, store opened) on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = _open_client(self.tracking_uri)
            return self._client

    def experiment(self, name: str, tags: dict[str, str]) -> str:
        """Get or create the experiment; set its tags; remember and return its id."""
        from mlflow.exceptions import MlflowException

        tags = {EXPERIMENT_KIND_TAG: "custom_model_development", **tags}
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    name, artifact_location=self._artifact_location(name), tags=tags)
                return self.experiment_id
            except MlflowException:  # another process created it meanwhile
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} in {self.tracking_uri} is deleted; restore it with "
                f"`MLFLOW_TRACKING_URI={self.tracking_uri} mlflow experiments restore "
                f"--experiment-id {found.experiment_id}` or choose another experiment name")
        self.experiment_id = found.experiment_id
        for key, value in tags.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)
        return self.experiment_id

    def _artifact_location(self, experiment_name: str) -> str | None:
        """Artifacts of a SQLite store live next to the database, not in the working directory."""
        if not self.tracking_uri.startswith(_SQLITE):
            return None
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment_name).strip("-.") or "experiment"
        return (Path(self.tracking_uri[len(_SQLITE):]).parent / "mlruns" / folder).as_uri()

    def start_parent(self, experiment_id: str, run_name: str, tags: dict[str, str],
                     params: dict[str, Any]) -> str:
        """Create the sweep's parent run; `tags` should carry jaxmlp.sweep_name (see find_parent)."""
        return self._start_run(experiment_id, run_name, {**tags, ROLE_TAG: "parent"}, params)

    def start_child(self, experiment_id: str, parent_run_id: str, run_name: str, variant_key: str,
                    params: dict[str, Any], tags: dict[str, str]) -> str:
        """Create one variant's run, nested under the parent in the UI."""
        tags = {**tags, ROLE_TAG: "child", PARENT_RUN_TAG: parent_run_id, VARIANT_KEY_TAG: variant_key}
        return self._start_run(experiment_id, run_name, tags, params)

    def _start_run(self, experiment_id: str, run_name: str, tags: dict[str, Any],
                   params: dict[str, Any]) -> str:
        # Tags go with the creation, so a process killed right after it leaves no untagged run behind.
        run_id = self.client.create_run(experiment_id, run_name=run_name,
                                        tags={t.key: t.value for t in _run_tags(tags)}).info.run_id
        self._log_batches(run_id, params=_run_params(params))
        return run_id

    def find_parent(self, experiment_id: str, sweep_name: str) -> tuple[str, dict[str, str]] | None:
        """The newest parent run of this sweep, with its tags (resume compares jaxmlp.sweep_hash)."""
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`{ROLE_TAG}` = 'parent' and tags.`{SWEEP_NAME_TAG}` = {_quote(sweep_name)}",
            order_by=["attributes.start_time DESC"], max_results=1)
        return (runs[0].info.run_id, dict(runs[0].data.tags)) if runs else None

    def children(self, parent_run_id: str, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every child run of a parent (all pages): run_id, run_name, status, tags, params, metrics."""
        experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        query = f"tags.`{PARENT_RUN_TAG}` = {_quote(parent_run_id)}"
        found, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], query, max_results=page_size, page_token=token)
            found += [{"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
                       "tags": dict(r.data.tags), "params": dict(r.data.params),
                       "metrics": dict(r.data.metrics)} for r in page]
            token = page.token
            if not token:
                return found

    def log_history(self, run_id: str, history: list[dict[str, float]], step_key: str = "epoch") -> None:
        """Log per-step records ({step_key: n, name: value, ...}); NaN and inf are kept as they are."""
        self._log_batches(run_id, metrics=history_metrics(history, step_key))

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Log one value per metric at one step (e.g. final test metrics)."""
        self._log_batches(run_id, metrics=step_metrics(metrics, step))

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._log_batches(run_id, tags=_run_tags(tags))

    def _log_batches(self, run_id: str, metrics: list = (), params: list = (), tags: list = ()) -> None:
        """`log_batch` within MLflow's limits: 1000 metrics, 100 params, 100 tags per call; one
        call when everything fits."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        if (len(metrics) <= MAX_METRICS_PER_BATCH and len(params) <= MAX_PARAMS_OR_TAGS_PER_BATCH
                and len(tags) <= MAX_PARAMS_OR_TAGS_PER_BATCH):
            if metrics or params or tags:
                self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            return
        for chunk in _chunks(list(params), MAX_PARAMS_OR_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(list(tags), MAX_PARAMS_OR_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(list(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """A small text artifact (json, yaml, md, csv) at `artifact_file` inside the run."""
        self.client.log_text(run_id, text, artifact_file)

    def log_file(self, run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a local file (or folder) into the run, under `artifact_path`."""
        self.client.log_artifact(run_id, os.fspath(path), artifact_path)

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        """Binary artifact (e.g. a PNG plot) at `artifact_file` inside the run."""
        folder, name = posixpath.split(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, name)
            path.write_bytes(data)
            self.log_file(run_id, path, folder or None)

    def log_folder(self, run_id: str, files: dict[str, bytes], artifact_path: str) -> None:
        """Several small files into one artifact folder of the run, in one store call."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            self.client.log_artifacts(run_id, tmp, artifact_path)

    def finish(self, run_id: str, status: str, reason: str | None = None, *,
               history: list[dict[str, float]] | None = None, metrics: dict[str, float] | None = None,
               step: int = 0, tags: dict[str, Any] | None = None, files: dict[str, bytes] | None = None,
               artifact_path: str = "") -> None:
        """End a run as FINISHED, FAILED or KILLED; `reason` goes to tag jaxmlp.failure_reason.

        A run's last results can come along, in few store calls: one `log_batch` for the
        per-epoch `history` (as in `log_history`), the `metrics` at `step` and the tags, one
        call for the `files` (into `artifact_path`), one for the status.
        """
        tags = dict(tags or {})
        if reason is not None:
            tags[FAILURE_REASON_TAG] = reason
        self._log_batches(run_id, metrics=history_metrics(history or []) + step_metrics(metrics or {}, step),
                          tags=_run_tags(tags))
        if files:
            self.log_folder(run_id, files, artifact_path)
        self.client.set_terminated(run_id, status)

    def model_uris(self, run_id: str) -> list[str]:
        """The models:/ URIs of the models logged on a run."""
        return [f"models:/{m.model_id}" for m in self.client.get_run(run_id).outputs.model_outputs]

    def metric_history(self, run_id: str, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of one metric of a run, in step order."""
        points = sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
        return [step for step, _ in points], [value for _, value in points]

    def download(self, run_id: str, artifact_path: str, folder: str | os.PathLike) -> str:
        """Copy a run's artifact (file or folder) into `folder`; return the local path."""
        return self.client.download_artifacts(run_id, artifact_path, os.fspath(folder))

    def reopen(self, run_id: str) -> None:
        """Mark a finished or killed run RUNNING again (a resumed sweep's parent)."""
        self.client.update_run(run_id, status="RUNNING")

    def log_model_from_run(self, run_id: str) -> str:
        """Turn a child run's checkpoint artifact into an MLflow model on that run; return its URI."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.download(run_id, "checkpoint", tmp)
            return self.log_model(run_id, folder)

    def mark_killed(self, run_ids: Iterable[str], reason: str = "left RUNNING by an interrupted sweep") -> None:
        """End runs that a crashed or interrupted process left RUNNING."""
        for run_id in run_ids:
            self.finish(run_id, "KILLED", reason)

    def log_model(self, run_id: str, checkpoint_dir: str | os.PathLike, artifact_path: str = "model") -> str:
        """Log a checkpoint folder as the run's MLflow pyfunc model; return its models:/ URI.

        The model loads through this module's `_load_pyfunc`, so nothing is pickled and
        loading it needs jaxmlp importable. Requirements are given, not inferred (that
        would load the model in a subprocess, seconds per run).
        """
        import mlflow.pyfunc
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        run = self.client.get_run(run_id)
        model = self.client.create_logged_model(
            run.info.experiment_id, artifact_path, source_run_id=run_id, params=run.data.params)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.pyfunc.save_model(Path(tmp, "model"), loader_module=__name__,
                                         data_path=os.fspath(checkpoint_dir),
                                         pip_requirements=_pip_requirements())
                self.client.log_model_artifacts(model.model_id, Path(tmp, "model"))
            self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        except BaseException:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return f"models:/{model.model_id}"

    def register_model(self, model_uri: str, name: str):
        """Register a model logged by `log_model` under `name` (created if new); return the ModelVersion."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        model = self.client.get_logged_model(model_uri.removeprefix("models:/"))
        # The artifact location, not the models:/ URI: MLflow would resolve that through the
        # process-wide tracking URI instead of this client's.
        return self.client.create_model_version(name, model.artifact_location,
                                                run_id=model.source_run_id, model_id=model.model_id)


def _open_client(tracking_uri: str):
    """A client with its store open: a new SQLite file is created and migrated now."""
    from mlflow.tracking import MlflowClient

    with _store_creation_lock(tracking_uri):
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)
    return client


@contextlib.contextmanager
def _store_creation_lock(tracking_uri: str) -> Iterator[None]:
    """Processes opening SQLite stores in one folder take turns (a lock on the folder):
    MLflow's schema migrations, run by two processes at once on a new file, fail and can
    leave the file unusable."""
    if not tracking_uri.startswith(_SQLITE):
        yield
        return
    import fcntl

    folder = os.open(Path(tracking_uri[len(_SQLITE):]).parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def _quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    if "'" in value:
        if '"' in value:
            raise ValueError(f"cannot search MLflow for a value with both quote characters: {value!r}")
        return f'"{value}"'
    return f"'{value}'"


def import_model_flavour() -> None:
    """Import what `Tracker.log_model` needs (done ahead by an idle tracking process)."""
    import mlflow.pyfunc  # noqa: F401


def _pip_requirements() -> list[str]:
    """Pinned requirements of the model, given so MLflow skips inferring them (seconds per model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "jax", "flax", "numpy")]


class JaxMLPModel:
    """The pyfunc model MLflow loads from a logged checkpoint folder."""

    def __init__(self, checkpoint_dir: str | os.PathLike):
        from jaxmlp.checkpoint import load_checkpoint

        self.checkpoint = load_checkpoint(checkpoint_dir)

    def predict(self, model_input: Any, params: dict | None = None) -> Any:
        """Class probabilities [N, C] or regression outputs [N] for an array or DataFrame of features."""
        import numpy as np
        from jaxmlp.checkpoint import predict

        return predict(self.checkpoint, np.asarray(model_input, dtype=np.float32))


def _load_pyfunc(data_path: str) -> JaxMLPModel:
    """MLflow's loader-module hook: `data_path` is the checkpoint folder inside the model."""
    return JaxMLPModel(data_path)


def main(argv: list[str] | None = None) -> int:
    """`python -m jaxmlp.tracking model RUN_ID`: make any child run's parameters an MLflow model."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m jaxmlp.tracking",
                                description="Log a sweep child's saved parameters as an MLflow pyfunc model.")
    sub = p.add_subparsers(dest="command", required=True)
    model = sub.add_parser("model", help="log the run's checkpoint artifact as a model")
    model.add_argument("run_id")
    model.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    model.add_argument("--register", metavar="NAME", help="also register it in the Model Registry")
    args = p.parse_args(argv)
    tracker = Tracker(args.tracking_uri)
    uri = tracker.log_model_from_run(args.run_id)
    print(f"logged {uri} on run {args.run_id}")
    if args.register:
        version = tracker.register_model(uri, args.register)
        print(f"registered as {args.register} version {version.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
