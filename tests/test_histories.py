"""Per-epoch histories of many variants in one Parquet file, written and read back exactly."""
from __future__ import annotations

import io
import math

import pandas as pd

from jaxmlp.tracking.histories import from_parquet, to_parquet


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
