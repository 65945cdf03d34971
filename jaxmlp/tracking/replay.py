"""Replaying a spool folder (`jaxmlp.tracking.spool`) into a store: checked whole first, then
logged exactly once, resumable.

    python -m jaxmlp.tracking replay FOLDER [--tracking-uri URI]

Every file is read and checked before anything is logged: a truncated or stray
`children/*.json`, a `spool.json` of wrong types, a child without both checkpoint files is
refused naming the file (`SpoolError`), and the store is not touched. The replay logs into
the store (the sweep's own by default): where the sweep's parent run is there, into it
(children it already holds FINISHED are kept, runs left RUNNING are ended with their
results); elsewhere, under a new parent run of the sweep's experiment. Each replayed child
ends as the sweep would have ended it; the settings' best models and the sweep's best are
logged, and the summary closes the parent.

Each step done is written down in the folder's `replayed.json`, per store (the parent run,
the children, histories, best models and summary replayed so far), before the next begins:
a replay killed midway goes on in the same parent run the next time, and a replay of a
replayed spool logs nothing twice.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from jaxmlp.config import bounded_repr
from jaxmlp.records import VariantRecord
from jaxmlp.tracking.schema import VARIANT_KEY_TAG
from jaxmlp.tracking.spool import SPOOL_FILE

#: The folder's record of what was replayed, per store.
LEDGER = "replayed.json"
#: The files of a spooled child's checkpoint.
CHECKPOINT_FILES = ("config.json", "params.msgpack")
#: What `spool.json` must hold, and its types (keys absent are allowed where None is).
_SWEEP_FIELDS: dict[str, tuple[type, ...]] = {
    "sweep_name": (str,), "sweep_hash": (str,), "sweep_file": (str,), "tracking_uri": (str,),
    "parent_run_id": (str, type(None)), "note": (str, type(None)), "git_commit": (str, type(None)),
    "environment": (dict, type(None)), "params": (dict, type(None)), "best_of_settings": (dict, type(None)),
    "best": (str, type(None))}
_CHILD_FIELDS: dict[str, tuple[type, ...]] = {
    "run_id": (str, type(None)), "run_name": (str,), "group": (str,), "reason": (str, type(None)),
    "record": (dict,), "history": (list,)}
_SUMMARY_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,), "reason": (str, type(None)), "metrics": (dict,), "best_setting": (str, type(None)),
    "table": (dict, type(None)), "front": (dict, type(None)), "front_keys": (list, type(None))}


class SpoolError(ValueError):
    """A spool folder that cannot be replayed; the message names the file and what is wrong."""


@dataclasses.dataclass
class Child:
    """One spooled child run: its file's number, entry and record."""

    n: str
    entry: dict[str, Any]
    record: VariantRecord


@dataclasses.dataclass
class SpoolContents:
    """A spool folder read and checked whole."""

    folder: Path
    sweep: dict[str, Any]
    children: list[Child]
    histories: list[Path]
    summary: dict[str, Any] | None


def _json(path: Path, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """The JSON object in `path`, its `fields` of their types; `SpoolError` naming the file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpoolError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(value, dict):
        raise SpoolError(f"{path}: a JSON object expected, found {type(value).__name__}")
    for key, types in fields.items():
        if not isinstance(value.get(key), types):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise SpoolError(f"{path}: {key}: {type(value.get(key)).__name__} {bounded_repr(value.get(key), 80)}; "
                             f"{wanted} expected")
    return value


def _record(path: Path, fields: dict[str, Any]) -> VariantRecord:
    try:
        fields = dict(fields)
        fields["history"] = {k: (list(v[0]), list(v[1])) for k, v in fields.get("history", {}).items()}
        record = VariantRecord(**fields)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise SpoolError(f"{path}: record: not a variant's record ({type(err).__name__}: {err})") from None
    if not isinstance(record.variant_key, str) or not isinstance(record.setting, dict):
        raise SpoolError(f"{path}: record: variant_key and setting expected")
    return record


def read_spool(folder: str | os.PathLike) -> SpoolContents:
    """Every file of a spool folder, checked before anything is logged."""
    folder = Path(folder)
    if not (folder / SPOOL_FILE).is_file():
        raise FileNotFoundError(f"{folder}: not a spool folder (no {SPOOL_FILE})")
    sweep = _json(folder / SPOOL_FILE, _SWEEP_FIELDS)
    children = []
    for path in sorted((folder / "children").glob("*"), key=lambda p: (len(p.stem), p.stem)):
        if path.suffix != ".json" or not path.stem.isdigit():
            raise SpoolError(f"{path}: not a file the sweep writes (children/<number>.json); remove it")
        entry = _json(path, _CHILD_FIELDS)
        missing = [f for f in CHECKPOINT_FILES if not (folder / "checkpoints" / path.stem / f).is_file()]
        if missing:
            raise SpoolError(f"{path}: its checkpoint lacks {', '.join(missing)} in {folder / 'checkpoints' / path.stem}")
        children.append(Child(path.stem, entry, _record(path, entry["record"])))
    summary_path = folder / "summary" / "summary.json"
    summary = _json(summary_path, _SUMMARY_FIELDS) if summary_path.exists() else None
    return SpoolContents(folder, sweep, children, sorted((folder / "histories").glob("*/*.parquet")), summary)


class Ledger:
    """What was replayed from a folder into one store, kept in the folder's `LEDGER` (written
    whole, renamed into place, after every step)."""

    def __init__(self, folder: Path, tracking_uri: str):
        self.path, self.uri = folder / LEDGER, tracking_uri
        try:
            self.stores = json.loads(self.path.read_text()) if self.path.exists() else {}
        except ValueError as err:
            raise SpoolError(f"{self.path}: unreadable ({err}); remove it to replay everything again") from None
        self.done: dict[str, Any] = self.stores.setdefault(tracking_uri, {})

    def has(self, step: str) -> bool:
        return step in self.done

    def mark(self, step: str, value: Any = True) -> None:
        self.done[step] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stores, indent=1))
        os.replace(tmp, self.path)


def replay(folder: str | os.PathLike, tracking_uri: str | None = None, out: Callable[[str], Any] = print) -> str:
    """Log a spool folder into a store (see the module's docstring); return the parent run's id."""
    from jaxmlp.tracking.store import Tracker

    spool = read_spool(folder)
    sweep = spool.sweep
    t = Tracker(tracking_uri or sweep["tracking_uri"])
    ledger = Ledger(spool.folder, t.tracking_uri)
    experiment_id = t.experiment(sweep["sweep_name"])
    parent = _existing_parent(t, ledger.done.get("parent") or sweep.get("parent_run_id"))
    if parent is None:
        parent_run_id = t.start_parent(
            experiment_id, f"{sweep['sweep_name']} (replayed {time.strftime('%Y-%m-%d %H:%M:%S')})",
            sweep_name=sweep["sweep_name"], sweep_hash=sweep["sweep_hash"], sweep_file=sweep["sweep_file"],
            note=sweep.get("note") or "", git_commit=sweep.get("git_commit"),
            environment=sweep.get("environment") or {}, params=sweep.get("params") or {})
        ledger.mark("parent", parent_run_id)
        out(f"replaying {spool.folder} into a new parent run {parent_run_id} in {t.tracking_uri}")
    else:
        parent_run_id = parent.run_id
        ledger.mark("parent", parent_run_id)
        out(f"replaying {spool.folder} into parent run {parent_run_id} in {t.tracking_uri}")
    children = {c["tags"].get(VARIANT_KEY_TAG): c for c in t.children(parent_run_id)}
    run_ids = {key: child["run_id"] for key, child in children.items()}
    replayed = sum(_replay_child(t, ledger, spool, c, experiment_id, parent_run_id, children, run_ids)
                   for c in spool.children)
    for path in spool.histories:
        step = f"histories/{path.parent.name}/{path.name}"
        if not ledger.has(step):
            t.log_histories(parent_run_id, path.parent.name, path.stem, path.read_bytes())
            ledger.mark(step)
    _replay_best(t, ledger, sweep, parent_run_id, run_ids, ending=spool.summary is not None)
    if spool.summary is not None and not ledger.has("summary"):
        s = spool.summary
        t.close_parent(parent_run_id, s["status"], s["reason"],
                       summary_files=_read_files(spool.folder / "summary" / "files"),
                       figures=_read_files(spool.folder / "summary" / "plots"), metrics=s["metrics"],
                       best_setting=s["best_setting"], table=s["table"], front=s.get("front"),
                       front_keys=s.get("front_keys"))
        ledger.mark("summary")
    out(f"replayed {replayed} child run(s){' and the summary' if spool.summary is not None else ''}")
    return parent_run_id


def _replay_child(t, ledger: Ledger, spool: SpoolContents, child: Child, experiment_id: str, parent_run_id: str,
                  children: dict[str, dict[str, Any]], run_ids: dict[str, str]) -> bool:
    """End one spooled child's run (started where the store has none); False where it was
    replayed before or the store holds it FINISHED."""
    record, entry, step = child.record, child.entry, f"children/{child.n}"
    existing = children.get(record.variant_key)
    if ledger.has(step):
        return False
    if existing is not None and existing["status"] == "FINISHED":
        ledger.mark(step, existing["run_id"])
        return False
    if existing is not None and existing["status"] == "RUNNING":
        run_id = existing["run_id"]
    else:
        run_id = t.start_child(experiment_id, parent_run_id, entry["run_name"], variant_key=record.variant_key,
                               index=record.index, setting=record.setting, seed=record.seed,
                               group=entry["group"], params=record.config)
    t.finish_child(run_id, record, history=entry["history"],
                   files=_read_files(spool.folder / "checkpoints" / child.n), reason=entry["reason"])
    run_ids[record.variant_key] = run_id
    ledger.mark(step, run_id)
    return True


def _replay_best(t, ledger: Ledger, sweep: dict[str, Any], parent_run_id: str, run_ids: dict[str, str],
                 ending: bool) -> None:
    """Each setting's best variant's model, and the sweep's best marked on the parent where the
    sweep's end was not logged (`ending`: the spool holds the summary); each once."""
    overall = sweep.get("best")
    for label, key in (sweep.get("best_of_settings") or {}).items():
        run_id, step = run_ids.get(key), f"best/{key}"
        if run_id is None or ledger.has(step):
            continue
        logged = t.model_uris(run_id)
        model_uri = logged[0] if logged else t.log_model_from_run(run_id)
        if key == overall and (not logged or ending):
            with tempfile.TemporaryDirectory() as tmp:
                t.mark_best(parent_run_id, t.download_checkpoint(run_id, tmp), run_id=run_id, setting=label,
                            model_uri=model_uri)
        ledger.mark(step)


def _read_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def _existing_parent(t, run_id: str | None):
    if not run_id:
        return None
    try:
        return t.parent(run_id)
    except Exception:  # noqa: BLE001 - not in this store
        return None
