"""The MLflow store as a sweep uses it: experiments, parent and child runs, their tags,
params, metrics, artifacts and models, and the records read back from them.

`Tracker` takes and returns plain values (names, ids, dicts, `VariantRecord`s); the tag
names and the conversion of records to and from runs are `jaxmlp.tracking.schema`'s.
Every method is synchronous; MLflow is imported on first use, so importing this module is cheap. Calls are
batched within MLflow's limits (`jaxmlp.tracking.batches`).
"""
from __future__ import annotations

import fnmatch
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from jaxmlp.records import VariantRecord
from jaxmlp.tracking import schema
from jaxmlp.tracking.batches import history_metrics, log_batches, run_params, run_tags, step_metrics
from jaxmlp.tracking.histories import Histories, HistoryFileError, from_parquet
from jaxmlp.tracking.client import open_client, read_run
from jaxmlp.tracking.registry import Registry
from jaxmlp.tracking.uri import resolve_tracking_uri, sqlite_path

if TYPE_CHECKING:
    from jaxmlp.config import DataConfig

#: Seconds between system metrics samples (MLflow's own default is 10: a short sweep would get two points).
SYSTEM_METRICS_INTERVAL = 2.0

#: MLflow's switch for system metrics, which `--system-metrics` turns on (`request_system_metrics`).
SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"


def request_system_metrics() -> None:
    """Have every tracker started from now on (in this process or its children) log system
    metrics on the parent runs it starts or reopens."""
    os.environ[SYSTEM_METRICS_ENV] = "true"


def system_metrics_requested() -> bool:
    return os.environ.get(SYSTEM_METRICS_ENV, "").strip().lower() in ("true", "1")


def _parent_run(run) -> schema.ParentRun:
    return schema.parent_run(run.info.run_id, run.info.experiment_id, run.info.status, run.data.tags)


def _child_history(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """A variant's per-epoch metrics for its run; the epoch's wall time belongs to the group
    (every variant in it shares it) and goes on the parent run once (`log_epoch_seconds`)."""
    return [{k: val for k, val in row.items() if k != "epoch_seconds"} for row in history]


class Tracker(Registry):
    """Experiments, runs, metrics, artifacts and models (`Registry`) in one MLflow store, by explicit URI."""

    def __init__(self, tracking_uri: str | None = None):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._client = None
        self._client_lock = threading.Lock()
        self._dataset_inputs = None  # a DatasetInputs, created on first use
        self._system_metrics: dict[str, Any] = {}  # run id -> its running SystemMetricsMonitor

    @property
    def client(self):
        """The `MlflowClient`, created (MLflow imported, store opened) on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = open_client(self.tracking_uri)
            return self._client

    # -- experiments -------------------------------------------------------------------------

    def experiment(self, name: str, note: str | None = None) -> str:
        """Get or create the experiment (a note, where given, becomes its description); return its id."""
        from mlflow.exceptions import MlflowException

        tags = {schema.EXPERIMENT_KIND_TAG: "custom_model_development", **({schema.NOTE_TAG: note} if note is not None else {})}
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=self._artifact_location(name),
                                                     tags=tags)
            except MlflowException:  # another process created it meanwhile
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} in {self.tracking_uri} is deleted; restore it with "
                f"`MLFLOW_TRACKING_URI={self.tracking_uri} mlflow experiments restore "
                f"--experiment-id {found.experiment_id}` or choose another experiment name")
        for key, value in tags.items():
            self.client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id

    def _artifact_location(self, experiment_name: str) -> str | None:
        """Artifacts of a SQLite store live next to the database, not in the working directory."""
        database = sqlite_path(self.tracking_uri)
        if database is None:
            return None
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment_name).strip("-.") or "experiment"
        return (database.parent / "mlruns" / folder).as_uri()

    def find_experiment(self, name_or_id: str) -> tuple[str, str] | None:
        """(id, name) of the experiment with this name, else (all digits) with this id; None if neither."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name_or_id)
        if found is None and name_or_id.isdigit():
            try:
                found = self.client.get_experiment(name_or_id)
            except MlflowException:
                return None
        return None if found is None else (found.experiment_id, found.name)

    # -- runs --------------------------------------------------------------------------------

    def start_parent(self, experiment_id: str, run_name: str, *, sweep_name: str, sweep_hash: str,
                     sweep_file: str, note: str, git_commit: str | None, environment: Mapping[str, str],
                     params: Mapping[str, Any], lease: str = "") -> str:
        """Create a sweep's parent run (found again by `find_parent`) held by `lease`;
        `environment`: versions and devices, as tags. Its system metrics start where
        requested (`request_system_metrics`)."""
        tags = schema.parent_tags(sweep_name=sweep_name, sweep_hash=sweep_hash, sweep_file=sweep_file, note=note,
                                  git_commit=git_commit, environment=environment, lease=lease)
        run_id = self._start_run(experiment_id, run_name, tags, params)
        if system_metrics_requested():
            self.start_system_metrics(run_id)
        return run_id

    def start_system_metrics(self, run_id: str) -> None:
        """Log MLflow's system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) on a run
        until it ends (`finish`), sampled every `SYSTEM_METRICS_INTERVAL` seconds (or
        $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL)."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        if run_id not in self._system_metrics:
            monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL,
                                           tracking_uri=self.tracking_uri)
            monitor.start()
            self._system_metrics[run_id] = monitor

    def _stop_system_metrics(self, run_id: str) -> None:
        monitor = self._system_metrics.pop(run_id, None)
        if monitor is not None:
            monitor.finish()

    def start_child(self, experiment_id: str, parent_run_id: str, run_name: str, *, variant_key: str,
                    index: int, setting: Mapping[str, Any], seed: int, group: str,
                    params: Mapping[str, Any], trial: tuple[int, str] | None = None) -> str:
        """Create one variant's run, nested under the parent in the UI. The setting goes as its
        values and its configuration `params` as JSON (read back by `variant_records`), both
        also for the UI (`jaxmlp.tracking.schema`); an optimised setting's `trial` (number,
        proposal JSON) goes with the creation, so the study can be rebuilt from the store
        whenever the process ends (`trial_tags`)."""
        tags = schema.child_tags(parent_run_id, variant_key=variant_key, index=index, setting=setting, seed=seed,
                                 group=group, config=params, trial=trial)
        return self._start_run(experiment_id, run_name, tags,
                               schema.child_params(params, variant_key=variant_key, group=group))

    def _start_run(self, experiment_id: str, run_name: str, tags: dict[str, Any],
                   params: Mapping[str, Any]) -> str:
        # Tags go with the creation, so a process killed right after it leaves no untagged run behind.
        run_id = self.client.create_run(experiment_id, run_name=run_name,
                                        tags={t.key: t.value for t in run_tags(tags)}).info.run_id
        log_batches(self.client, run_id, params=run_params(dict(params)))
        return run_id

    def find_parent(self, experiment_id: str, sweep_name: str) -> schema.ParentRun | None:
        """The newest parent run of this sweep (resume compares its sweep hash)."""
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`{schema.ROLE_TAG}` = 'parent' and tags.`{schema.SWEEP_NAME_TAG}` = {_quote(sweep_name)}",
            order_by=["attributes.start_time DESC"], max_results=1)
        return _parent_run(runs[0]) if runs else None

    def running_parents(self, experiment_id: str, sweep_name: str) -> list[schema.ParentRun]:
        """The parent runs of this sweep that are RUNNING (by a live process, or left so by a dead one)."""
        runs = self.client.search_runs(
            [experiment_id], f"tags.`{schema.ROLE_TAG}` = 'parent' and tags.`{schema.SWEEP_NAME_TAG}` = {_quote(sweep_name)} "
                             "and attributes.status = 'RUNNING'", max_results=1000)
        return [_parent_run(run) for run in runs]

    def set_lease(self, run_id: str, lease: str) -> None:
        """Write the parent's lease (`jaxmlp.sweep.ownership`); "" releases it."""
        self.client.set_tag(run_id, schema.LEASE_TAG, lease)

    def kill_abandoned(self, parent_run_id: str, reason: str) -> int:
        """Mark a parent left RUNNING by a dead process, and its RUNNING children, KILLED; its
        lease released. Returns the number of children marked."""
        running = [c["run_id"] for c in self.children(parent_run_id) if c["status"] == "RUNNING"]
        self.mark_killed(running, reason)
        self.end_parent(parent_run_id, "KILLED", reason)
        return len(running)

    def run(self, run_id: str):
        """The MLflow run with this id; `RunNotFound` where the store has none."""
        return read_run(self.client, self.tracking_uri, run_id)

    def parent(self, run_id: str) -> schema.ParentRun | None:
        """The sweep parent run with this id; None where the run is not a sweep's parent;
        `RunNotFound` where the store has no run of this id."""
        run = self.run(run_id)
        return _parent_run(run) if run.data.tags.get(schema.ROLE_TAG) == "parent" else None

    def children(self, parent_run_id: str, page_size: int = 1000) -> list[dict[str, Any]]:
        """Every child run of a parent (all pages): run_id, run_name, status, tags, params, metrics."""
        experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        query = f"tags.`{schema.PARENT_RUN_TAG}` = {_quote(parent_run_id)}"
        found, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], query, max_results=page_size, page_token=token)
            found += [{"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
                       "tags": dict(r.data.tags), "params": dict(r.data.params),
                       "metrics": dict(r.data.metrics)} for r in page]
            token = page.token
            if not token:
                return found

    def variant_records(self, parent_run_id: str, histories: Sequence[str] = ()) -> list[VariantRecord]:
        """Every child run of a parent as a record, in sweep order. `histories`: names (or
        patterns such as 'dead_fraction_*') of per-epoch metrics whose whole history the
        records carry: from the child's MLflow metrics, else from the parent's Parquet
        histories (a large sweep's, `log_histories`)."""
        records = [schema.variant_record(child, self._histories(child, histories))
                   for child in sorted(self.children(parent_run_id), key=schema.sweep_order)]
        stored = self.parquet_histories(parent_run_id) if histories else {}
        for record in records:
            for name, points in stored.get(record.variant_key, {}).items():
                if name not in record.history and any(fnmatch.fnmatchcase(name, p) for p in histories):
                    record.history[name] = points
        return records

    def trial_tags(self, parent_run_id: str) -> list[dict[str, Any]]:
        """An optimised sweep's child runs (all, killed ones too) as their trial number,
        proposal JSON and told JSON (None before the study was told), in trial order."""
        found = [schema.trial_of(c) for c in self.children(parent_run_id)]
        return sorted((t for t in found if t is not None), key=lambda t: t["trial"])

    def tag_told(self, run_ids: Sequence[str], told: str) -> None:
        """What the study was told of a trial (JSON), on the runs of its seeds."""
        for run_id in run_ids:
            self.client.set_tag(run_id, schema.TOLD_TAG, told)

    def log_study(self, parent_run_id: str, sampler: str, seed: int, settings_told: int,
                  best_so_far: float | None) -> None:
        """An optimised sweep's sampler and seed (params) and, once a setting was told, the
        study's best first objective so far (metric `best_so_far`, step: settings told)."""
        metrics = [] if best_so_far is None else step_metrics({"best_so_far": best_so_far}, settings_told)
        log_batches(self.client, parent_run_id, metrics=metrics,
                    params=run_params({"optimize.sampler": sampler, "optimize.seed": seed}))

    def log_histories(self, parent_run_id: str, group: str, name: str, data: bytes) -> None:
        """A group's per-epoch histories as one Parquet file (`jaxmlp.tracking.histories`), on
        the parent under histories/<group>/<name>.parquet."""
        self.log_folder(parent_run_id, {f"{name}.parquet": data}, f"{schema.HISTORIES_FOLDER}/{group}")

    def parquet_histories(self, parent_run_id: str) -> Histories:
        """Every history in the parent's Parquet files: variant key -> metric -> (epochs, values)."""
        out: Histories = {}
        folders = [f.path for f in self.client.list_artifacts(parent_run_id, schema.HISTORIES_FOLDER) if f.is_dir]
        files = [f.path for folder in folders for f in self.client.list_artifacts(parent_run_id, folder)
                 if f.path.endswith(".parquet")]
        with tempfile.TemporaryDirectory() as tmp:
            for path in files:
                local = self.client.download_artifacts(parent_run_id, path, tmp)
                try:
                    histories = from_parquet(Path(local).read_bytes())
                except HistoryFileError as err:
                    raise HistoryFileError(f"{path} of parent run {parent_run_id} in {self.tracking_uri}: {err}; "
                                           "remove it or log it again from the sweep's spool") from None
                for key, metrics in histories.items():
                    out.setdefault(key, {}).update(metrics)
        return out

    def _histories(self, child: dict[str, Any], names: Sequence[str]) -> dict[str, tuple[list[int], list[float]]]:
        """The child's per-epoch MLflow metrics whose names match `names` (names or patterns)."""
        return {k: self.metric_history(child["run_id"], k) for k in child["metrics"]
                if any(fnmatch.fnmatchcase(k, pattern) for pattern in names)}

    # -- logging -----------------------------------------------------------------------------

    def log_history(self, run_id: str, history: list[dict[str, float]], step_key: str = "epoch") -> None:
        """Log per-step records ({step_key: n, name: value, ...}); NaN and inf are kept as they are."""
        log_batches(self.client, run_id, metrics=history_metrics(history, step_key))

    def log_child_history(self, run_id: str, history: list[dict[str, float]]) -> None:
        """A child's per-epoch history as MLflow metrics (as `finish_child` logs it)."""
        self.log_history(run_id, _child_history(history))

    def log_epoch_seconds(self, parent_run_id: str, group: str, seconds: Sequence[tuple[int, float]]) -> None:
        """The wall time of each epoch of a group (shared by its variants), once, on the parent."""
        self.log_history(parent_run_id, [{"epoch": epoch, f"epoch_seconds_{group}": s} for epoch, s in seconds])

    def log_file(self, run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a local file (or folder) into the run, under `artifact_path`."""
        self.client.log_artifact(run_id, os.fspath(path), artifact_path)

    def log_folder(self, run_id: str, files: dict[str, bytes], artifact_path: str) -> None:
        """Several small files into one artifact folder of the run, in one store call."""
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            self.client.log_artifacts(run_id, tmp, artifact_path)

    # -- ending runs -------------------------------------------------------------------------

    def finish(self, run_id: str, status: str, reason: str | None = None, *,
               history: list[dict[str, float]] | None = None, metrics: dict[str, float] | None = None,
               step: int = 0, tags: dict[str, Any] | None = None, files: dict[str, bytes] | None = None,
               artifact_path: str = "", inputs: Sequence | None = None) -> None:
        """End a run as FINISHED, FAILED or KILLED; `reason` goes to tag jaxmlp.failure_reason.

        A run's last results can come along, in few store calls: one `log_batch` for the
        per-epoch `history` (as in `log_history`), the `metrics` at `step` and the tags, one
        call for its dataset `inputs` (`dataset_inputs`), one for the `files` (into
        `artifact_path`), one for the status. Its system metrics, if on, stop first.
        """
        self._stop_system_metrics(run_id)
        tags = dict(tags or {})
        if reason is not None:
            tags[schema.FAILURE_REASON_TAG] = reason
        log_batches(self.client, run_id, metrics=history_metrics(history or []) + step_metrics(metrics or {}, step),
                          tags=run_tags(tags))
        if inputs:
            self.client.log_inputs(run_id, datasets=list(inputs))
        if files:
            self.log_folder(run_id, files, artifact_path)
        self.client.set_terminated(run_id, status)

    def dataset_inputs(self, data: DataConfig) -> list:
        """The MLflow dataset inputs (training, validation, test) of the data a configuration
        names, described once per tracker (`jaxmlp.tracking.datasets`)."""
        if self._dataset_inputs is None:
            from jaxmlp.tracking.datasets import DatasetInputs

            self._dataset_inputs = DatasetInputs()
        return self._dataset_inputs(data)

    def finish_child(self, run_id: str, record: VariantRecord, *, history: list[dict[str, float]],
                     files: dict[str, bytes], reason: str | None, data: DataConfig | None = None) -> None:
        """End a trained variant's run with its status: its per-epoch `history`, its final
        metrics at step best_epoch, whether it diverged, its checkpoint `files` under checkpoint/,
        the splits of its `data` as dataset inputs. (Inputs go with the end, not the start: by
        then the sweep has loaded the data itself, so describing it only reads caches.)"""
        metrics, tags = schema.outcome(record)
        self.finish(run_id, record.status, reason, history=_child_history(history),
                    metrics=metrics, step=record.best_epoch or 0,
                    tags=tags, files=files, artifact_path="checkpoint",
                    inputs=self.dataset_inputs(data) if data is not None else None)

    def mark_killed(self, run_ids: Iterable[str], reason: str = "left RUNNING by an interrupted sweep") -> None:
        """End runs that a crashed or interrupted process left RUNNING."""
        for run_id in run_ids:
            self.finish(run_id, "KILLED", reason)

    def reopen(self, run_id: str) -> None:
        """Mark a finished or killed run RUNNING again (a resumed sweep's parent; its system
        metrics, where requested, go on)."""
        self.client.update_run(run_id, status="RUNNING")
        if system_metrics_requested():
            self.start_system_metrics(run_id)

    def end_parent(self, parent_run_id: str, status: str, reason: str | None = None) -> None:
        """End a parent run without its summary (interrupted, or its summary failed); its lease released."""
        self.finish(parent_run_id, status, reason, tags={schema.LEASE_TAG: ""})

    def close_parent(self, parent_run_id: str, status: str, reason: str | None, *, summary_files: dict[str, bytes],
                     figures: dict[str, bytes], metrics: dict[str, float], best_setting: str | None,
                     table: Mapping[str, list] | None = None, front: Mapping[str, list] | None = None,
                     front_keys: Sequence[str] | None = None) -> None:
        """Summary (files, and `table` by column as MLflow's table artifact), plots and metrics
        on the parent, then end it; with several objectives also their Pareto `front` (a table
        artifact) and each child's `jaxmlp.pareto` tag (true for the variants in `front_keys`).
        It never stays RUNNING: where the summary cannot be logged, it ends FAILED and the error
        is raised."""
        try:
            self.log_folder(parent_run_id, summary_files, "summary")
            if table:
                self.client.log_table(parent_run_id, dict(table), schema.SUMMARY_TABLE_FILE)
            if front:
                self.client.log_table(parent_run_id, dict(front), schema.PARETO_TABLE_FILE)
            if front_keys is not None:
                self._tag_pareto(parent_run_id, set(front_keys))
            self.log_folder(parent_run_id, figures, "plots")
        except Exception as err:
            why = f"the sweep summary could not be logged: {type(err).__name__}: {err}"
            self.end_parent(parent_run_id, "FAILED", "; ".join(filter(None, [reason, why]))[:5000])
            raise
        tags = {schema.SUMMARY_TAG: "true", schema.LEASE_TAG: ""}
        if best_setting is not None:
            tags[schema.BEST_BY_TEST_MEAN_TAG] = best_setting
        self.finish(parent_run_id, status, reason, metrics=metrics, tags=tags)

    def _tag_pareto(self, parent_run_id: str, keys: set[str]) -> None:
        """Tag each child run `jaxmlp.pareto` true or false: whether its variant's setting is on the front."""
        for child in self.children(parent_run_id):
            on_front = child["tags"].get(schema.VARIANT_KEY_TAG) in keys
            self.client.set_tag(child["run_id"], schema.PARETO_TAG, str(on_front).lower())

    # -- metrics -----------------------------------------------------------------------------

    def metric_history(self, run_id: str, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of one metric of a run, in step order."""
        points = sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
        return [step for step, _ in points], [value for _, value in points]

def _quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    if "'" in value:
        if '"' in value:
            raise ValueError(f"cannot search MLflow for a value with both quote characters: {value!r}")
        return f'"{value}"'
    return f"'{value}'"
