"""Results as pandas DataFrames: one row per variant, one per setting, or one per epoch."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from jaxmlp.records import VariantRecord

#: The record fields a variant's row shows, after its setting and seed.
RECORD_COLUMNS = ("status", "best_epoch", "stopped_epoch", "diverged", "n_params", "train_seconds")


def variant_row(record: VariantRecord) -> dict[str, Any]:
    """A variant's row: its swept values, seed, how it ended, its best validation and test
    metrics (the history and configuration stay out)."""
    metrics = {k: v for k, v in record.metrics.items() if k.startswith(("best_val_", "test_"))}
    return {**record.setting, "seed": record.seed, **{k: getattr(record, k) for k in RECORD_COLUMNS}, **metrics}


def frame(rows: Iterable[dict[str, Any]]):
    """A DataFrame of dict rows (columns in first-appearance order)."""
    import pandas as pd

    return pd.DataFrame(list(rows))


def history_frame(histories: Sequence[tuple[dict[str, Any], list[dict[str, float]]]]):
    """A long DataFrame of per-epoch metrics: each variant's identifying columns, then epoch
    and every metric it recorded that epoch."""
    return frame({**ids, **epoch} for ids, history in histories for epoch in history)


def points_history(history: dict[str, tuple[list[int], list[float]]]) -> list[dict[str, float]]:
    """A record's history (metric -> (epochs, values), as read back from the store) as one
    dict per epoch."""
    epochs: dict[int, dict[str, float]] = {}
    for name, (steps, values) in history.items():
        for step, value in zip(steps, values):
            epochs.setdefault(int(step), {"epoch": int(step)})[name] = value
    return [epochs[e] for e in sorted(epochs)]
