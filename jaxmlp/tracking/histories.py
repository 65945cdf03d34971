"""Per-epoch histories of many variants in one columnar file: what a large sweep keeps on its
parent run (`histories/<group>/<part>.parquet`) where logging every epoch of every child as MLflow
metrics would cost more than the training. One row per variant and epoch, one column per
metric (NaN where a metric has no value), plus the variant's key and index in its sweep.

Read them all back with pandas (one folder per group, one file per invocation that trained it):

    import glob, mlflow, pandas
    folder = mlflow.artifacts.download_artifacts(run_id=PARENT_RUN_ID, artifact_path="histories")
    frame = pandas.concat(map(pandas.read_parquet, glob.glob(f"{folder}/*/*.parquet")))

`jaxmlp.report` reads them through `Tracker.variant_records`.
"""
from __future__ import annotations

import io
import math
from typing import Iterable, Sequence

IDENTITY_COLUMNS = ("variant_key", "variant_index", "epoch")
SKIPPED = ("epoch", "epoch_seconds")  # the epoch's wall time belongs to the group, on the parent
Histories = dict[str, dict[str, tuple[list[int], list[float]]]]  # variant key -> metric -> (epochs, values)


def to_parquet(histories: Iterable[tuple[str, int, Sequence[dict[str, float]]]]) -> bytes:
    """A Parquet file of (variant key, variant index, per-epoch records with an 'epoch')."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(key, index, record) for key, index, history in histories for record in history]
    metrics = sorted({name for _, _, record in rows for name in record if name not in SKIPPED})
    columns = {"variant_key": pa.array([key for key, _, _ in rows], pa.string()),
               "variant_index": pa.array([index for _, index, _ in rows], pa.int32()),
               "epoch": pa.array([int(record["epoch"]) for _, _, record in rows], pa.int32())}
    for name in metrics:
        columns[name] = pa.array([float(record.get(name, math.nan)) for _, _, record in rows], pa.float64())
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, compression="zstd")
    return out.getvalue()


class HistoryFileError(ValueError):
    """A Parquet history file that cannot be read: corrupted, truncated, or without its columns."""


def from_parquet(data: bytes, metrics: Sequence[str] | None = None) -> Histories:
    """Variant key -> metric -> (epochs, values), epochs where the metric has a value only;
    `HistoryFileError` where the file is not a history `to_parquet` wrote."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data)).to_pydict()
    except (pa.ArrowException, OSError) as err:
        raise HistoryFileError(f"not a readable Parquet file ({type(err).__name__}: {err})") from None
    missing = [c for c in ("variant_key", "epoch") if c not in table]
    names = [n for n in table if n not in IDENTITY_COLUMNS and (metrics is None or n in metrics)]
    wrong = [n for n in names if any(v is not None and not isinstance(v, (int, float)) for v in table[n])]
    if missing or wrong:
        raise HistoryFileError(f"columns {', '.join(missing)} missing" if missing else
                               f"column {wrong[0]} holds values that are not numbers")
    out: Histories = {}
    for i, key in enumerate(table["variant_key"]):
        for name in names:
            value = table[name][i]
            if value is not None and not math.isnan(value):
                steps, values = out.setdefault(key, {}).setdefault(name, ([], []))
                steps.append(int(table["epoch"][i]))
                values.append(float(value))
    return out
