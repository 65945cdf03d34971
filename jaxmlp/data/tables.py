"""The user's own data: a CSV or Parquet table, arrays in an `.npz` file, or any
tensorflow-datasets set (`tfds`, images flattened and scaled to [0, 1]).

A file is checked before anything is compiled (the column to predict exists, features are
numbers, no values are missing, rows and targets agree, at least two classes, enough rows
for the splits), each problem refused with the file, the column and the fix. A table is
read once and its arrays cached by the file's digest, like the MNIST family's prepared
arrays; the digest is also what a sweep's identity and its MLflow datasets record. Class
labels of any type are mapped to 0..C-1 (sorted) and kept in the dataset's `info`, so
predictions come back as the user's labels.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp.config import FILE_DATASETS, DataConfig, did_you_mean
from jaxmlp.data.errors import DataError

#: The array names an `.npz` file may hold: one table, or given splits.
NPZ_KEYS = (("x", "y"), ("x_train", "y_train"), ("x_val", "y_val"), ("x_test", "y_test"))


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to an .npz file atomically (a reader never sees a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


@functools.lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """16 hex digits of BLAKE2b over the file's bytes (hashed once per version of the file)."""
    stat = os.stat(path)
    return _digest(os.fspath(path), stat.st_mtime_ns, stat.st_size)


def resolve_file(cfg: DataConfig, folder: str | os.PathLike) -> DataConfig:
    """The data section with its file's path made absolute (a relative one is read from
    `folder`, the sweep file's) and the file's digest; other datasets unchanged."""
    if cfg.name not in FILE_DATASETS:
        return cfg
    path = Path(cfg.path).expanduser()
    path = (path if path.is_absolute() else Path(folder) / path).absolute()
    if not path.is_file():
        raise DataError(f"data.path: {cfg.path}: no such file ({path}); give the {cfg.name} file's path "
                        "(in a sweep file, relative to the sweep file)")
    return cfg.model_copy(update={"path": str(path), "digest": file_digest(path)})


def prepared_arrays(cfg: DataConfig) -> dict[str, np.ndarray]:
    """The file's arrays, checked: `x`, `y` (or given splits, see NPZ_KEYS) and, for a table,
    `columns` (the feature names)."""
    path = Path(cfg.path).expanduser().absolute()
    if not path.is_file():
        raise DataError(f"data.path: {path}: no such file; give the {cfg.name} file's path")
    digest = file_digest(path)
    if cfg.digest and cfg.digest != digest:
        raise DataError(f"{path}: the file changed since it was read (digest {cfg.digest} then, {digest} now); "
                        "restore it, or start the sweep again (without --resume) to train on the new content")
    from jaxmlp.data import cache_folder

    return _prepared(str(path), digest, cfg.name, cfg.target, cfg.features, str(cache_folder(cfg)))


@functools.lru_cache(maxsize=8)
def _prepared(path: str, digest: str, kind: str, target: str | None, features: tuple[str, ...] | None,
              cache: str) -> dict[str, np.ndarray]:
    if kind == "npz":
        return _npz_arrays(Path(path))
    options = hashlib.blake2b(json.dumps([target, features]).encode(), digest_size=4).hexdigest()
    cached = Path(cache) / "arrays" / f"{Path(path).stem}-{digest}-{options}.npz"
    if cached.exists():
        with np.load(cached) as npz:
            return dict(npz)
    import pandas as pd

    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - whatever the reader says, with the file's name
        raise DataError(f"{path}: not a readable {kind} file ({type(err).__name__}: {err})") from None
    arrays = frame_arrays(frame, target, features, path)
    save_arrays(cached, arrays)
    return arrays


def frame_arrays(frame, target: str, features: tuple[str, ...] | None, source: str) -> dict[str, np.ndarray]:
    """A DataFrame's features and target as arrays, refusing what a network cannot take."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    if target not in columns:
        raise DataError(f"{source}: data.target: no column {target!r}{did_you_mean(target, columns)}; "
                        f"columns: {', '.join(columns)}")
    chosen = list(features) if features else [c for c in columns if c != target]
    if unknown := [c for c in chosen if c not in columns]:
        raise DataError(f"{source}: data.features: no column(s) {', '.join(unknown)}"
                        f"{did_you_mean(unknown[0], columns)}; columns: {', '.join(columns)}")
    if text := [c for c in chosen if not (is_numeric_dtype(frame[c]) or is_bool_dtype(frame[c]))]:
        raise DataError(f"{source}: non-numeric feature column(s) {', '.join(text)}: categorical features need "
                        "encoding first (e.g. pandas.get_dummies), or leave them out with data.features")
    counts = frame[chosen + [target]].isna().sum()
    if missing := [f"{c} ({n})" for c, n in counts.items() if n]:
        raise DataError(f"{source}: missing values in column(s) {', '.join(missing)}; fill or drop them first "
                        "(e.g. DataFrame.dropna)")
    y = frame[target].to_numpy()
    return {"x": frame[chosen].to_numpy(np.float64), "y": y.astype(str) if y.dtype == object else y,
            "columns": np.asarray(chosen, dtype=str)}


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Arrays x, y (or given splits) of an .npz file, each pair with one target per row."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = dict(npz)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    if {"x", "y"} & arrays.keys():
        pairs = [NPZ_KEYS[0]]
    elif {"x_train", "x_test"} <= arrays.keys():
        pairs = [p for p in NPZ_KEYS[1:] if p[0] in arrays or p[1] in arrays]
    else:
        raise DataError(f"{path}: holds {', '.join(arrays) or 'no arrays'}; give arrays x and y, or x_train, "
                        "y_train, x_test, y_test (and optionally x_val, y_val)")
    for xk, yk in pairs:
        if xk not in arrays or yk not in arrays:
            raise DataError(f"{path}: has {xk if xk in arrays else yk} but not {yk if xk in arrays else xk}; "
                            "give both")
        x, y = arrays[xk], arrays[yk]
        if len(x) != len(y):
            raise DataError(f"{path}: {xk} has {len(x)} rows but {yk} has {len(y)}; give one target per row")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{path}: {xk} holds {x.dtype} values; features must be numbers")
        if (bad := int(np.isnan(x.astype(np.float64)).sum())):
            raise DataError(f"{path}: missing values: {bad} NaN in {xk}; fill or drop them first")
    widths = {xk: arrays[xk].shape[1:] for xk, _ in pairs}
    if len(set(widths.values())) > 1:
        shapes = ", ".join(f"{k} {list(s)}" for k, s in widths.items())
        raise DataError(f"{path}: the splits' rows differ in shape ({shapes}); "
                        "give every split the same features")
    return {k: (a.reshape(len(a), -1) if k.startswith("x") else a) for k, a in arrays.items()}


def _task(cfg: DataConfig, y: np.ndarray, source: str) -> str:
    """classification or regression: data.task, else by the targets' type (floating-point
    numbers are regression; text, booleans and integers are class labels)."""
    if cfg.task == "regression" and y.dtype.kind not in "biuf":
        raise DataError(f"{source}: data.task regression needs numeric targets, not {y.dtype} values; "
                        "use data.task: classification")
    if cfg.task != "auto":
        return cfg.task
    return "regression" if y.dtype.kind == "f" else "classification"


def _indices(cfg: DataConfig, arrays: dict[str, np.ndarray], source: str) -> tuple[np.ndarray, ...]:
    """(train, validation, test) rows of the concatenated splits, checked to hold rows each."""
    from jaxmlp.data import DEFAULT_VAL_FRACTION, _held_out, split_indices

    try:
        if "x" in arrays:
            tr, va, te = split_indices(cfg, len(arrays["x"]))
        else:
            n_tr, n_te = len(arrays["x_train"]), len(arrays["x_test"])
            n_given = len(arrays.get("x_val", ()))  # a validation split of its own, after train
            if "x_val" in arrays:
                tr, va = np.arange(n_tr), n_tr + np.arange(n_given)
            else:
                order = np.random.default_rng(cfg.split_seed).permutation(n_tr)
                n_va = _held_out(n_tr, cfg.val_size, DEFAULT_VAL_FRACTION)
                tr, va = order[n_va:], order[:n_va]
            te = n_tr + n_given + np.arange(n_te)
    except ValueError:  # a validation split that would leave no training rows
        tr = va = te = np.arange(0)
    empty = [name for name, rows in (("training", tr), ("validation", va), ("test", te))
             if not len(rows) and (name != "validation" or cfg.validated)]
    if empty:
        n = sum(len(a) for k, a in arrays.items() if k.startswith("y"))
        raise DataError(f"{source}: {n} rows are too few for the splits (data.test_size {cfg.test_size}, "
                        f"data.val_size {cfg.val_size}): no {' or '.join(empty)} rows; give more rows")
    return tr, va, te


def _joined(arrays: dict[str, np.ndarray], letter: str) -> np.ndarray:
    """One array of the splits' x or y, in the order train, validation, test (or the table's)."""
    keys = [p[0 if letter == "x" else 1] for p in NPZ_KEYS]
    return np.concatenate([arrays[k] for k in keys if k in arrays])


def _any_tfds_arrays(cfg: DataConfig) -> dict[str, np.ndarray]:
    """Any tensorflow-datasets set's train and test arrays, from a .npz cache or prepared once."""
    from jaxmlp.data import cache_folder

    folder = hashlib.blake2b(str(cfg.data_dir).encode(), digest_size=4).hexdigest() if cfg.data_dir else "cache"
    cached = cache_folder(cfg) / "arrays" / f"tfds-{cfg.dataset.replace('/', '-')}-{folder}.npz"
    if cached.exists():
        with np.load(cached) as npz:
            return dict(npz)
    from jaxmlp.data.tfds import load_any

    splits = load_any(cfg.dataset, cfg.manual_dir, cfg.data_dir or cache_folder(cfg) / "tfds")
    if "test" not in splits:
        raise DataError(f"data.dataset: {cfg.dataset!r} has no test split (splits: {', '.join(splits)}); "
                        "give a dataset with train and test splits")
    arrays = {f"{letter}_{split}": a.reshape(len(a), -1) if letter == "x" else a
              for split, pair in splits.items() for letter, a in zip("xy", pair)}
    save_arrays(cached, arrays)
    return arrays


def source_arrays(cfg: DataConfig) -> dict[str, np.ndarray]:
    """The arrays of a file (csv, parquet, npz) or of a tensorflow-datasets set (tfds)."""
    return _any_tfds_arrays(cfg) if cfg.name == "tfds" else prepared_arrays(cfg)


def table_facts(cfg: DataConfig) -> dict[str, Any]:
    """What a user's dataset is, known after reading its arrays (not splitting them): task,
    classes, inputs, rows per split; every bad-data case refused here."""
    arrays = source_arrays(cfg)
    source = cfg.path or f"tfds {cfg.dataset}"
    y = _joined(arrays, "y")
    task = _task(cfg, y, source)
    classes = np.unique(y) if task == "classification" else None
    if classes is not None and len(classes) < 2:
        raise DataError(f"{source}: data.target {cfg.target or 'y'} has one class only ({classes[0].item()!r}); "
                        "classification needs two or more")
    tr, va, te = _indices(cfg, arrays, source)
    return {"task": task, "classes": classes, "features": int(arrays[next(k for k in arrays if k.startswith("x"))]
                                                              .shape[1]), "splits": (tr, va, te)}


def load_table(cfg: DataConfig):
    """The file's dataset, split and standardised like the built-in tables; class labels as
    0..C-1, the user's labels in `info['classes']`, feature names in `info['columns']`."""
    from jaxmlp.data import _tabular

    facts, arrays = table_facts(cfg), source_arrays(cfg)
    x, y = _joined(arrays, "x"), _joined(arrays, "y")
    info: dict[str, Any] = {"source": cfg.path, "digest": file_digest(cfg.path)} if cfg.path else {}
    if "columns" in arrays:
        info["columns"] = arrays["columns"].tolist()
    classes = facts["classes"]
    if classes is not None:
        info["classes"] = classes.tolist()
        y = np.searchsorted(classes, y)
    name, scale = Path(cfg.path).stem if cfg.path else cfg.dataset, 255.0 if x.dtype == np.uint8 else None
    if scale:
        info["input_scale"] = scale
    return _tabular(cfg, name, x, y, facts["task"], scale=scale,
                    num_classes=len(classes) if classes is not None else 0, indices=facts["splits"], info=info)


def arrays_config(arrays: dict[str, np.ndarray], name: str, *, cache_dir: str | None = None,
                  **options: Any) -> DataConfig:
    """The data section of in-memory arrays (`x`, `y` or given splits, see NPZ_KEYS): they are
    written once to `<cache>/datasets/<digest>/<name>.npz`, which the section names, so the
    data has a file, a digest and a name like any user's file."""
    from jaxmlp.config import load_config
    from jaxmlp.runtime import cache_root

    arrays = {k: (a.astype(str) if a.dtype == object else a) for k, a in arrays.items()}
    h = hashlib.blake2b(digest_size=8)
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B") if a.size else b"")
    data = {"name": "npz", "cache_dir": cache_dir, **options}
    path = cache_root(cache_dir) / "datasets" / h.hexdigest() / f"{name}.npz"
    if not path.exists():
        save_arrays(path, arrays)
    config = load_config({"data": {**data, "path": str(path)}}, source="<arrays>").data
    return resolve_file(config, path.parent)
