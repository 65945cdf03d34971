"""Per-epoch histories of many variants in one Parquet file, written and read back exactly."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from jaxmlp.tracking.histories import HistoryFileError, from_parquet, to_parquet


def test_histories_round_trip_through_parquet_exactly():
    histories = [
        ("a1", 0, [{"epoch": 1, "val_loss": 0.5, "train_loss": 0.7}, {"epoch": 2, "val_loss": 0.25}]),
        ("b2", 7, [{"epoch": 1, "val_loss": 1 / 3, "hp/optimizer.learning_rate": 0.01, "train_loss": math.inf}]),
        ("c3", 9, []),
    ]
    data = to_parquet(histories)
    back = from_parquet(data)
    assert back == {"a1": {"val_loss": ([1, 2], [0.5, 0.25]), "train_loss": ([1], [0.7])},
                    "b2": {"val_loss": ([1], [1 / 3]), "hp/optimizer.learning_rate": ([1], [0.01]),
                           "train_loss": ([1], [math.inf])}}
    assert from_parquet(data, metrics=["val_loss"]) == {"a1": {"val_loss": ([1, 2], [0.5, 0.25])},
                                                       "b2": {"val_loss": ([1], [1 / 3])}}
    frame = pd.read_parquet(io.BytesIO(data))  # the documented one-liner's reader
    assert list(frame.columns[:3]) == ["variant_key", "variant_index", "epoch"]
    assert frame.shape == (3, 6) and frame["variant_index"].tolist() == [0, 0, 7]


def _histories() -> bytes:
    return to_parquet([("a1", 0, [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.25}])])


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "not a readable Parquet file"),
    (lambda data: b"garbage" * 10, "not a readable Parquet file"),
    (lambda data: _parquet({"variant_key": ["a1"], "val_loss": [0.5]}), "columns epoch missing"),
    (lambda data: _parquet({"variant_key": ["a1"], "epoch": [1], "val_loss": ["x"]}),
     "column val_loss holds values that are not numbers"),
])
def test_a_damaged_history_file_is_refused_with_what_is_wrong(damage, message):
    """Corrupted, truncated or column-missing files were pyarrow or KeyError tracebacks in the report."""
    with pytest.raises(HistoryFileError, match=message):
        from_parquet(damage(_histories()))


def _parquet(columns: dict) -> bytes:
    out = io.BytesIO()
    pd.DataFrame(columns).to_parquet(out)
    return out.getvalue()


def test_the_store_names_the_damaged_history_file(store_uri):
    from jaxmlp.tracking import Tracker

    t = Tracker(store_uri)
    parent = t.start_parent(t.experiment("h"), "h", sweep_name="h", sweep_hash="x", sweep_file="h.yaml", note="",
                            git_commit=None, environment={}, params={})
    t.log_histories(parent, "g0", "good", _histories())
    assert t.parquet_histories(parent) == {"a1": {"val_loss": ([1, 2], [0.5, 0.25])}}
    t.log_histories(parent, "g1", "bad", _histories()[:100])
    with pytest.raises(HistoryFileError, match=f"^histories/g1/bad.parquet of parent run {parent} in "
                                               f"{t.tracking_uri}: not a readable Parquet file"):
        t.parquet_histories(parent)
