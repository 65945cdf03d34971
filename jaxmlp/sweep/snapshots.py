"""Snapshots of the chunks a sweep trains, in files, so that `--resume` goes on from a killed
chunk's last snapshot instead of its first epoch.

A chunk's snapshot (`engine.Snapshot`: its states and epoch records after an epoch) is written
after the first epoch that ends `every` seconds or more after the last write, and when the
chunk's training is abandoned (Ctrl-C, SIGTERM, a failure); it is removed when the chunk ends.
A write goes to a temporary file renamed into place, so a kill mid-write leaves the previous
snapshot whole. A snapshot's name is two digests: of the sweep (its tracking store and name),
then of the chunk (the parent run, the sweep file's hash, the chunk's variants and layout), so
only a `--resume` of the same parent run finds it; a sweep that starts removes its own older
snapshots (`prune`: `--resume` continues only the newest parent run). The files are the
process's own (pickled numpy arrays): never load one from elsewhere.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path

from jaxmlp.engine import Snapshot

#: The layout of a snapshot file; a file of another layout is ignored (the chunk starts over).
FORMAT = 1


class Snapshots:
    """A folder of chunk snapshots; `every`: seconds of training between two writes."""

    def __init__(self, folder: str | Path, every: float):
        self.folder, self.every = Path(folder), float(every)

    @staticmethod
    def digest(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]

    def prune(self, sweep: str, keep: set[str]) -> None:
        """Remove the snapshots of the sweep digest `sweep` whose keys are not in `keep`."""
        for path in self.folder.glob(f"{sweep}-*.snapshot"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.snapshot"

    def load(self, key: str) -> Snapshot | None:
        """The chunk's snapshot, or None where there is none; `ValueError` where the file is unreadable."""
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            layout, snapshot = pickle.loads(data)
        except Exception as err:  # noqa: BLE001 - whatever a truncated or foreign file raises
            raise ValueError(f"{self.path(key)} is unreadable ({type(err).__name__}: {err})") from err
        if layout != FORMAT or not isinstance(snapshot, Snapshot):
            raise ValueError(f"{self.path(key)} is not a snapshot of this version of jaxmlp")
        return snapshot

    def save(self, key: str, snapshot: Snapshot) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump((FORMAT, snapshot), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def discard(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
