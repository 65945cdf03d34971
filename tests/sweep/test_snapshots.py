"""Chunk snapshots in files: an `.npz` of plain arrays and a JSON document, read without pickle;
every field round-trips exactly; anything else is refused naming the file; a folder that cannot
be written turns snapshots off with one warning and training goes on."""
from __future__ import annotations

import dataclasses
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxmlp.engine import Snapshot, Trainer
from jaxmlp.sweep.executors import ProgramTask, train_program
from jaxmlp.sweep.snapshots import DOCUMENT, FORMAT, VERSION, Snapshots, decode, encode

#: Every kind of value a snapshot's fields may nest: dicts with str and int keys, lists, tuples,
#: numbers, bools, None, strings, arrays of several dtypes and shapes, numpy scalars.
EVERYTHING = {
    "slots": {0: [3, 4], 7: (1, None)},
    "queue": [(2, "a|b"), (5, "ü\n<b>")],
    "epochs": np.arange(6, dtype=np.int64).reshape(2, 3),
    "mask": np.array([True, False]),
    "empty": np.zeros((0, 4), np.float32),
    "key": np.array([[1, 2]], np.uint32),
    "scalar": np.float32(0.25),
    "count": np.int32(-3),
    "flag": np.bool_(True),
    "zero_d": np.array(1.5, np.float64),
    "numbers": [1, 2.5, -0.0, float("inf"), True, False, None, 2**70],
    "nested": {"inner": {1: {"deep": [np.int8(-1), (np.uint16(9),)]}}},
}


def assert_identical(found: Any, expected: Any, where: str = "value") -> None:
    """Equal values of the same type, arrays of the same dtype and shape, at every level."""
    assert type(found) is type(expected), f"{where}: {type(found)} != {type(expected)}"
    if isinstance(expected, (np.ndarray, np.generic)):
        assert found.dtype == expected.dtype and found.shape == expected.shape, where
        np.testing.assert_array_equal(found, expected, err_msg=where)
    elif isinstance(expected, dict):
        assert list(found) == list(expected), where
        for (fk, fv), (ek, ev) in zip(found.items(), expected.items()):
            assert_identical(fk, ek, f"{where} key {ek!r}")
            assert_identical(fv, ev, f"{where}[{ek!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(found) == len(expected), where
        for i, (f, e) in enumerate(zip(found, expected)):
            assert_identical(f, e, f"{where}[{i}]")
    else:
        assert found == expected or (found != found and expected != expected), where


def a_snapshot() -> Snapshot:
    leaves = [np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), np.array([[7, 8]], np.uint32)]
    return Snapshot(epoch=2, leaves=leaves, records=[{"epoch": 1, **EVERYTHING}, {"epoch": 2, "nan": float("nan")}],
                    seconds=1.25)


def test_every_nested_value_round_trips_exactly():
    arrays: list[np.ndarray] = []
    data = json.loads(json.dumps(encode(EVERYTHING, arrays)))
    assert_identical(decode(data, arrays), EVERYTHING)


def test_a_snapshot_round_trips_exactly_through_its_file(tmp_path):
    snapshots = Snapshots(tmp_path, every=0)
    snapshot = a_snapshot()
    assert snapshots.save("k", snapshot) is True
    loaded = snapshots.load("k")
    assert type(loaded) is Snapshot
    for field in dataclasses.fields(Snapshot):
        assert_identical(getattr(loaded, field.name), getattr(snapshot, field.name), field.name)
    with np.load(snapshots.path("k"), allow_pickle=False) as npz:  # the header, readable by anyone
        document = json.loads(npz[DOCUMENT].tobytes())
    assert (document["format"], document["version"]) == (FORMAT, VERSION)


def test_a_trainers_snapshot_read_back_resumes_training(make_config, synthetic_data, tmp_path):
    configs = [make_config({"training.seed": s}) for s in (0, 1)]
    first = Trainer(configs, synthetic_data)
    records = first.run()
    next(records)
    snapshot = first.snapshot()
    snapshots = Snapshots(tmp_path, every=0)
    snapshots.save("k", snapshot)
    loaded = snapshots.load("k")
    for a, b in zip(loaded.leaves, snapshot.leaves):
        assert_identical(a, b)
    second = Trainer(configs, synthetic_data)
    assert [r["epoch"] for r in second.run(resume=loaded)] == [2, 3, 4, 5]


class Payload:
    """Unpickled, it would create the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("content", ["payload", "old-format", "object-array", "other-version", "truncated", "stray"])
def test_anything_but_a_snapshot_of_this_version_is_refused_naming_the_file(tmp_path, content):
    """A pickle (a planted payload, or a snapshot of the pickled format) is refused and never
    run; so are an object array, another header, a truncated file, an array the document lacks."""
    snapshots = Snapshots(tmp_path / "snapshots", every=0)
    marker = tmp_path / "payload-ran"
    snapshots.save("k", a_snapshot())
    path = snapshots.path("k")
    if content == "payload":
        path.write_bytes(pickle.dumps((1, Payload(marker))))
    elif content == "old-format":
        path.write_bytes(pickle.dumps((1, a_snapshot())))
    elif content == "object-array":
        np.savez(path.open("wb"), **{DOCUMENT: np.frombuffer(b"{}", np.uint8), "a0": np.array([Payload(marker)])})
    elif content in ("other-version", "stray"):
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        document = json.loads(arrays[DOCUMENT].tobytes())
        if content == "other-version":
            document["version"] = VERSION + 1
        else:
            arrays["extra"] = np.zeros(1)
        buffer = io.BytesIO()
        np.savez(buffer, **{**arrays, DOCUMENT: np.frombuffer(json.dumps(document).encode(), np.uint8)})
        path.write_bytes(buffer.getvalue())
    else:
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"^{path} is not a snapshot of this version of jaxmlp"):
        snapshots.load("k")
    assert not marker.exists()


def test_a_missing_snapshot_is_none(tmp_path):
    assert Snapshots(tmp_path, every=0).load("absent") is None
    assert Snapshots(tmp_path / "absent-folder", every=0).load("k") is None


def test_a_folder_that_cannot_be_written_turns_snapshots_off_with_one_warning(tmp_path, capsys, caplog):
    folder = tmp_path / "regular-file"
    folder.write_text("not a folder")
    snapshots = Snapshots(folder, every=0)
    assert snapshots.save("k", a_snapshot()) is False
    assert snapshots.save("k", a_snapshot()) is False
    snapshots.discard("k")
    snapshots.prune("sweep", set())
    assert snapshots.load("k") is None
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "jaxmlp.sweep"]  # the command prints it
    assert warning.startswith("warning: snapshots cannot be written")
    assert f"to {folder} (" in warning and "the sweep goes on without them" in warning
    assert capsys.readouterr() == ("", "")  # the library prints nothing


def test_a_program_trains_on_when_its_snapshots_cannot_be_written(make_config, synthetic_data, tmp_path, caplog):
    """Snapshots due after every epoch into a folder that is a regular file: every variant
    still trains to its end, the reason said once."""
    folder = tmp_path / "snapshots"
    folder.write_text("")
    configs = tuple(make_config({"training.seed": s, "training.early_stopping.patience": None}) for s in (0, 1))
    task = ProgramTask(chunks=(configs,), frozen=((False, False),), layout=None, devices=1, snapshot_keys=("k",))
    events = list(train_program(task, synthetic_data, Snapshots(folder, every=0)))
    assert [record["epoch"] for kind, _, record in events if kind == "epoch"] == [1, 2, 3, 4, 5]
    ((indices, result),) = [value for kind, _, value in events if kind == "result"]
    assert indices == [0, 1] and [v.stopped_epoch for v in result.variants] == [5, 5]
    assert caplog.text.count(f"snapshots cannot be written to {folder}") == 1
