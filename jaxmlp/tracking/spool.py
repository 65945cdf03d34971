"""The spool: what a sweep could not log, kept on disk, and its replay into a store.

When the tracking store fails during a sweep (a server gone, a full disk), the sweep writes
what it could not log into a spool folder, `<cache root>/spool/<sweep>-<time>-<pid>/`
(the cache root is $JAXMLP_CACHE_DIR or ~/.cache/jaxmlp): each child run it could not end
(its record with the per-epoch history, its checkpoint files), and the parent's summary.
Nothing trained is lost; the sweep prints the folder and the command that replays it
(`jaxmlp.tracking.replay`: checked whole first, then logged exactly once, resumable):

    python -m jaxmlp.tracking replay FOLDER [--tracking-uri URI]

Layout of a spool folder: `spool.json` (the sweep and the store), `children/<n>.json` (one
per child: run id where it had one, run name, group, record, history), `checkpoints/<n>/`,
`histories/<group>/` (a large sweep's Parquet histories), `summary/` (the summary files,
`summary.json` with its metrics, status and table); `replayed.json` once a replay began.
"""
from __future__ import annotations

import dataclasses
import json
import os
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
