"""The spool: what a sweep could not log, kept on disk, and its replay into a store.

When the tracking store fails during a sweep (a server gone, a full disk), the sweep writes
what it could not log into a spool folder, `<cache root>/spool/<sweep>-<time>-<pid>/`
(the cache root is $JAXMLP_CACHE_DIR or ~/.cache/jaxmlp): each child run it could not end
(its record with the per-epoch history, its checkpoint files), and the parent's summary.
Nothing trained is lost; the sweep prints the folder and the command that replays it:

    python -m jaxmlp.tracking replay FOLDER [--tracking-uri URI]

The replay logs into the store (the sweep's own by default): where the sweep's parent run
is there, into it (children it already holds FINISHED are kept, runs left RUNNING are ended
with their results); elsewhere, under a new parent run of the sweep's experiment. Each
replayed child ends as the sweep would have ended it; the settings' best models and the
sweep's best are logged, and the summary closes the parent.

Layout of a spool folder: `spool.json` (the sweep and the store), `children/<n>.json` (one
per child: run id where it had one, run name, group, record, history), `checkpoints/<n>/`,
`histories/<group>/` (a large sweep's Parquet histories), `summary/` (the summary files,
`summary.json` with its metrics, status and table).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from jaxmlp.records import VariantRecord
from jaxmlp.runtime import cache_root

SPOOL_FILE = "spool.json"


def default_spool_folder(sweep_name: str) -> Path:
    """A new folder name under <cache root>/spool for one sweep invocation."""
    return cache_root() / "spool" / f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def replay_command(folder: Path, tracking_uri: str) -> str:
    return f"python -m jaxmlp.tracking replay {folder} --tracking-uri {tracking_uri}"


def _write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _read_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


class Spool:
    """A spool folder being written by one sweep (thread-safe); created on first use."""

    def __init__(self, folder: Path, sweep: Mapping[str, Any]):
        self.folder, self.sweep = Path(folder), dict(sweep)
        self._lock = threading.Lock()
        self.n_children = 0
        self.has_summary = False
        self.has_histories = False

    @property
    def used(self) -> bool:
        return self.n_children > 0 or self.has_summary or self.has_histories

    def _started(self) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
        self.note()

    def note(self, **more: Any) -> None:
        """(Re)write spool.json with the sweep's description and `more` (e.g. its best variants)."""
        self.sweep.update(more)
        if self.folder.exists():
            (self.folder / SPOOL_FILE).write_text(json.dumps(self.sweep, indent=2, default=str))

    def child(self, *, run_id: str | None, run_name: str, group: str, record: VariantRecord,
              history: list[dict[str, float]], files: Mapping[str, bytes], reason: str | None) -> None:
        """Keep one child run that could not be ended in the store."""
        with self._lock:
            self._started()
            n = self.n_children
            self.n_children += 1
            _write_files(self.folder / "checkpoints" / str(n), files)
            entry = {"run_id": run_id, "run_name": run_name, "group": group, "reason": reason,
                     "record": dataclasses.asdict(record), "history": history}
            (self.folder / "children").mkdir(exist_ok=True)
            (self.folder / "children" / f"{n}.json").write_text(json.dumps(entry, default=float))

    def histories(self, group: str, name: str, data: bytes) -> None:
        """Keep a group's Parquet histories that could not be logged."""
        with self._lock:
            self._started()
            _write_files(self.folder / "histories" / group, {f"{name}.parquet": data})
            self.has_histories = True

    def summary(self, *, status: str, reason: str | None, summary_files: Mapping[str, bytes],
                figures: Mapping[str, bytes], metrics: Mapping[str, float], best_setting: str | None,
                table: Mapping[str, list] | None, front: Mapping[str, list] | None = None,
                front_keys: Sequence[str] | None = None) -> None:
        """Keep the parent's summary that could not be logged."""
        with self._lock:
            self._started()
            _write_files(self.folder / "summary" / "files", summary_files)
            _write_files(self.folder / "summary" / "plots", figures)
            (self.folder / "summary" / "summary.json").write_text(json.dumps(
                {"status": status, "reason": reason, "metrics": dict(metrics), "best_setting": best_setting,
                 "table": dict(table) if table else None, "front": dict(front) if front else None,
                 "front_keys": None if front_keys is None else list(front_keys)}, default=float))
            self.has_summary = True


def _record(fields: dict[str, Any]) -> VariantRecord:
    fields = dict(fields)
    fields["history"] = {k: (list(v[0]), list(v[1])) for k, v in fields.get("history", {}).items()}
    return VariantRecord(**fields)


def replay(folder: str | os.PathLike, tracking_uri: str | None = None, out=print) -> str:
    """Log a spool folder into a store (see the module's docstring); return the parent run's id."""
    from jaxmlp.tracking.store import Tracker

    folder = Path(folder)
    if not (folder / SPOOL_FILE).is_file():
        raise FileNotFoundError(f"{folder}: not a spool folder (no {SPOOL_FILE})")
    sweep = json.loads((folder / SPOOL_FILE).read_text())
    t = Tracker(tracking_uri or sweep["tracking_uri"])
    experiment_id = t.experiment(sweep["sweep_name"])
    parent = _existing_parent(t, sweep.get("parent_run_id"))
    if parent is None:
        parent_run_id = t.start_parent(
            experiment_id, f"{sweep['sweep_name']} (replayed {time.strftime('%Y-%m-%d %H:%M:%S')})",
            sweep_name=sweep["sweep_name"], sweep_hash=sweep["sweep_hash"], sweep_file=sweep["sweep_file"],
            note=sweep.get("note", ""), git_commit=sweep.get("git_commit"), environment=sweep.get("environment", {}),
            params=sweep.get("params", {}))
        children: dict[str, dict[str, Any]] = {}
        out(f"replaying {folder} into a new parent run {parent_run_id} in {t.tracking_uri}")
    else:
        parent_run_id = parent.run_id
        children = {c["tags"].get("jaxmlp.variant_key"): c for c in t.children(parent_run_id)}
        out(f"replaying {folder} into parent run {parent_run_id} in {t.tracking_uri}")
    run_ids, replayed = {}, 0
    for path in sorted((folder / "children").glob("*.json"), key=lambda p: int(p.stem)):
        entry = json.loads(path.read_text())
        record = _record(entry["record"])
        existing = children.get(record.variant_key)
        if existing is not None and existing["status"] == "FINISHED":
            run_ids[record.variant_key] = existing["run_id"]
            continue
        if existing is not None and existing["status"] == "RUNNING":
            run_id = existing["run_id"]
        else:
            run_id = t.start_child(experiment_id, parent_run_id, entry["run_name"], variant_key=record.variant_key,
                                   index=record.index, setting=record.setting, seed=record.seed,
                                   group=entry["group"], params=record.config)
        t.finish_child(run_id, record, history=entry["history"],
                       files=_read_files(folder / "checkpoints" / path.stem), reason=entry["reason"])
        run_ids[record.variant_key] = run_id
        replayed += 1
    for path in sorted((folder / "histories").glob("*/*.parquet")):
        t.log_histories(parent_run_id, path.parent.name, path.stem, path.read_bytes())
    summary = folder / "summary" / "summary.json"
    for key, child in children.items():
        run_ids.setdefault(key, child["run_id"])
    overall = sweep.get("best")
    for label, key in sweep.get("best_of_settings", {}).items():
        run_id = run_ids.get(key)
        if run_id is None:
            continue
        logged = t.model_uris(run_id)
        model_uri = logged[0] if logged else t.log_model_from_run(run_id)
        if key == overall and (not logged or summary.is_file()):  # the sweep's end was not logged
            with tempfile.TemporaryDirectory() as tmp:
                t.mark_best(parent_run_id, t.download_checkpoint(run_id, tmp), run_id=run_id, setting=label,
                            model_uri=model_uri)
    if summary.is_file():
        s = json.loads(summary.read_text())
        t.close_parent(parent_run_id, s["status"], s["reason"],
                       summary_files=_read_files(folder / "summary" / "files"),
                       figures=_read_files(folder / "summary" / "plots"), metrics=s["metrics"],
                       best_setting=s["best_setting"], table=s["table"], front=s.get("front"),
                       front_keys=s.get("front_keys"))
    out(f"replayed {replayed} child run(s){' and the summary' if summary.is_file() else ''}")
    return parent_run_id


def _existing_parent(t, run_id: str | None):
    if not run_id:
        return None
    try:
        return t.parent(run_id)
    except Exception:  # noqa: BLE001 - not in this store
        return None
