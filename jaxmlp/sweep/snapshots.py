"""Snapshots of the chunks a sweep trains, in files, so that `--resume` goes on from a killed
chunk's last snapshot instead of its first epoch.

A chunk's snapshot (`engine.Snapshot`: its states and epoch records after an epoch) is written
after the first epoch that ends `every` seconds or more after the last write, and when the
chunk's training is abandoned (Ctrl-C, SIGTERM, a failure); it is removed when the chunk ends.
A write goes to a temporary file renamed into place, so a kill mid-write leaves the previous
snapshot whole. A snapshot's name is two digests: of the sweep (its tracking store and name),
then of the chunk (the parent run, the sweep file's hash, the chunk's variants and layout), so
only a `--resume` of the same parent run finds it; a sweep that starts removes its own older
snapshots (`prune`: `--resume` continues only the newest parent run).

A file is an `.npz` of plain arrays, read with `allow_pickle=False`, and a JSON document (one
of those arrays, as UTF-8 bytes) with a header (`FORMAT`, `VERSION`) and the snapshot's
fields, its arrays referenced by index: nothing in it can run code, and a file of another
format, version or layout is refused naming it (the chunk then starts over). Snapshots are an
optimisation: where one cannot be written (the folder is a regular file, the disk is full,
permission denied) a warning goes once to the `jaxmlp.sweep` logger (the sweep command prints
it; the library prints nothing) and the sweep goes on without them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp.engine import Snapshot

#: Where the warning that snapshots are off goes (the runner's notices' logger).
LOG = logging.getLogger("jaxmlp.sweep")
#: The header of a snapshot file; a file with another is refused (the chunk starts over).
FORMAT, VERSION = "jaxmlp-snapshot", 2
#: The name of the array that holds the JSON document.
DOCUMENT = "document"


def encode(value: Any, arrays: list[np.ndarray]) -> Any:
    """`value` as JSON data: arrays and numpy scalars appended to `arrays` and referenced by
    index; dicts, tuples and numpy values tagged so that `decode` rebuilds them exactly (a
    dict's keys keep their type: an int stays an int)."""
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.hasobject:
            raise TypeError(f"an array of Python objects ({value.dtype}) cannot be stored without pickle")
        arrays.append(np.asarray(value))
        return {"t": "array" if isinstance(value, np.ndarray) else "scalar", "i": len(arrays) - 1}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {"t": "dict", "v": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"t": "tuple", "v": [encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [encode(v, arrays) for v in value]
    raise TypeError(f"a {type(value).__name__} cannot be stored in a snapshot")


def decode(data: Any, arrays: list[np.ndarray]) -> Any:
    """The value `encode` turned into `data` (`arrays` in the order encode appended them)."""
    if isinstance(data, list):
        return [decode(v, arrays) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get("t")
    if tag in ("array", "scalar"):
        index = data["i"]
        if type(index) is not int or not 0 <= index < len(arrays):
            raise ValueError(f"array index {index!r} out of 0..{len(arrays) - 1}")
        return arrays[index] if tag == "array" else arrays[index][()]
    if tag == "tuple":
        return tuple(decode(v, arrays) for v in data["v"])
    if tag == "dict":
        return {decode(k, arrays): decode(v, arrays) for k, v in data["v"]}
    raise ValueError(f"unknown tag {tag!r}")


def write(f, snapshot: Snapshot) -> None:
    """`snapshot` as an `.npz` into the binary file `f`."""
    arrays: list[np.ndarray] = []
    fields = {field.name: encode(getattr(snapshot, field.name), arrays) for field in dataclasses.fields(snapshot)}
    document = json.dumps({"format": FORMAT, "version": VERSION, "fields": fields, "arrays": len(arrays)})
    np.savez(f, **{DOCUMENT: np.frombuffer(document.encode(), np.uint8)}, **{f"a{i}": a for i, a in enumerate(arrays)})


def read(path: Path) -> Snapshot:
    """The snapshot in the file `path`; `ValueError` naming the file where it is anything else."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            document = json.loads(npz[DOCUMENT].tobytes().decode())
            header = (document.get("format"), document.get("version"))
            if header != (FORMAT, VERSION):
                raise ValueError(f"header {header}, not {(FORMAT, VERSION)}")
            count = document["arrays"]
            if not isinstance(count, int) or set(npz.files) != {DOCUMENT, *(f"a{i}" for i in range(count))}:
                raise ValueError(f"arrays {sorted(npz.files)} do not match the document")
            arrays = [npz[f"a{i}"] for i in range(count)]
        fields = document["fields"]
        names = {field.name for field in dataclasses.fields(Snapshot)}
        if not isinstance(fields, dict) or set(fields) != names:
            raise ValueError(f"fields {sorted(fields) if isinstance(fields, dict) else fields!r}, not {sorted(names)}")
        return Snapshot(**{name: decode(data, arrays) for name, data in fields.items()})
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
            zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a snapshot of this version of jaxmlp ({type(err).__name__}: {err})") from err


class Snapshots:
    """A folder of chunk snapshots; `every`: seconds of training between two writes. Off
    (`enabled` false) after the first write that fails, with one warning (`LOG`)."""

    def __init__(self, folder: str | Path, every: float):
        self.folder, self.every = Path(folder), float(every)
        self.enabled = True

    @staticmethod
    def digest(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]

    def prune(self, sweep: str, keep: set[str]) -> None:
        """Remove the snapshots of the sweep digest `sweep` whose keys are not in `keep`."""
        try:
            for path in self.folder.glob(f"{sweep}-*.snapshot"):
                if path.stem not in keep:
                    path.unlink(missing_ok=True)
        except OSError as err:
            self._disable(err)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.snapshot"

    def load(self, key: str) -> Snapshot | None:
        """The chunk's snapshot, or None where there is none; `ValueError` naming the file where
        it is not a snapshot of this version."""
        try:
            if not self.path(key).is_file():
                return None
        except OSError:
            return None
        return read(self.path(key))

    def save(self, key: str, snapshot: Snapshot) -> bool:
        """Write the chunk's snapshot; False (and snapshots off) where it cannot be written."""
        if not self.enabled:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{key}.", suffix=".tmp")
        except OSError as err:
            return self._disable(err)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f, snapshot)
            os.replace(tmp, self.path(key))
        except OSError as err:
            Path(tmp).unlink(missing_ok=True)
            return self._disable(err)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def discard(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as err:
            self._disable(err)

    def _disable(self, err: OSError) -> bool:
        """Snapshots off, said once (`LOG`) with the folder and the reason; False."""
        if self.enabled:
            reason = err.strerror or str(err)
            LOG.warning("warning: snapshots cannot be written to %s (%s); the sweep goes on without them "
                        "(a killed chunk restarts from its first epoch on --resume)", self.folder, reason)
        self.enabled = False
        return False
