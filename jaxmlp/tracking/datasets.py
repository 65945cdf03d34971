"""A variant's data as MLflow dataset inputs: one per split, with the context the UI's
Dataset column and filter show (training, validation, test), the source (the
tensorflow-datasets name and version, scikit-learn's loader, or jaxmlp's synthetic
generator with its numbers), sizes, and a digest of the split's arrays as the model sees
them, so two sweeps on different data (or different splits of it) are told apart.

A tracker describes each dataset once (`DatasetInputs`) and logs the same description
on every child run that trained on it.
"""
from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from jaxmlp.config import DataConfig
from jaxmlp.data import dataset_key, load_dataset

#: The dataset's splits and their MLflow contexts, in the order the UI lists them.
CONTEXTS = (("train", "training"), ("val", "validation"), ("test", "test"))
CONTEXT_TAG = "mlflow.data.context"
#: The data options that change what a split holds (besides the source itself).
_SPLIT_OPTIONS = ("split_seed", "val_size", "test_size", "train_limit")
_SYNTHETIC_OPTIONS = ("n_samples", "n_features", "n_classes")


def array_digest(*arrays: np.ndarray) -> str:
    """16 hex digits of BLAKE2b over the arrays' shapes, dtypes and bytes (all of them: a
    digits split hashes in microseconds, an MNIST training split in a fraction of a second)."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        if a.size:
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _tfds_version(cfg: DataConfig, name: str) -> str | None:
    """The tensorflow-datasets builder version prepared in the cache (None: read from jaxmlp's array cache only)."""
    from jaxmlp.data import cache_folder

    found = sorted((cache_folder(cfg) / "tfds" / name).glob("*/dataset_info.json"))
    return found[-1].parent.name if found else None


def data_source(cfg: DataConfig) -> tuple[str, dict[str, Any]]:
    """(source type, source) of a dataset: where its examples come from and how they were split."""
    from jaxmlp.data import MNIST_FAMILY

    split = {k: getattr(cfg, k) for k in _SPLIT_OPTIONS if getattr(cfg, k) is not None}
    if cfg.digest:  # a user's file: its path and content digest
        return "local", {"path": cfg.path, "digest": cfg.digest, "format": cfg.name,
                         **{k: getattr(cfg, k) for k in ("target", "features", "task") if getattr(cfg, k)}, **split}
    if cfg.name == "tfds":
        return "tensorflow-datasets", {"name": cfg.dataset, "version": _tfds_version(cfg, cfg.dataset),
                                       "tensorflow_datasets": _package_version("tensorflow-datasets"), **split}
    if cfg.name in MNIST_FAMILY:
        return "tensorflow-datasets", {"name": cfg.name, "version": _tfds_version(cfg, cfg.name),
                                       "tensorflow_datasets": _package_version("tensorflow-datasets"), **split}
    if cfg.name == "synthetic":
        return "jaxmlp", {"name": "jaxmlp.data.synthetic", **{k: getattr(cfg, k) for k in _SYNTHETIC_OPTIONS},
                          **split}
    return "scikit-learn", {"name": f"sklearn.datasets.load_{cfg.name}",
                            "scikit_learn": _package_version("scikit-learn"), **split}


def _schema(x: np.ndarray, y: np.ndarray, columns: list[str] | None) -> str:
    """The split's schema: a table's named columns as MLflow's pandas datasets write them, or
    features and targets as tensor specs, as its numpy datasets do."""
    from mlflow.types import ColSpec, Schema, TensorSpec

    if columns:
        return json.dumps({"mlflow_colspec": Schema([ColSpec("double", c) for c in columns]).to_dict()})

    spec = lambda a: Schema([TensorSpec(a.dtype, (-1, *a.shape[1:]))]).to_json()  # noqa: E731
    return json.dumps({"mlflow_tensorspec": {"features": spec(x), "targets": spec(y)}})


def _profile(x: np.ndarray, y: np.ndarray) -> str:
    return json.dumps({"num_rows": int(x.shape[0]), "features_shape": list(x.shape), "features_size": int(x.size),
                       "features_nbytes": int(x.nbytes), "targets_shape": list(y.shape),
                       "targets_size": int(y.size), "targets_nbytes": int(y.nbytes)})


def dataset_inputs(dataset, cfg: DataConfig) -> list:
    """MLflow `DatasetInput`s of a loaded `jaxmlp.data.Dataset`, one per split that holds examples."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source_type, source = data_source(cfg)
    inputs = []
    for split_name, context in CONTEXTS:
        x, y = (np.asarray(a) for a in getattr(dataset, split_name))
        if not len(x):
            continue  # no validation split (data.val_size 0)
        entity = Dataset(name=dataset.name, digest=array_digest(x, y), source_type=source_type,
                         source=json.dumps(source), schema=_schema(x, y, dataset.info.get("columns")),
                         profile=_profile(x, y))
        inputs.append(DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, context)]))
    return inputs


class DatasetInputs:
    """The inputs of each dataset, described once: loaded on first request and kept."""

    def __init__(self) -> None:
        self._by_config: dict[str, list] = {}

    def __call__(self, cfg: DataConfig) -> list:
        key = dataset_key(cfg)
        if key not in self._by_config:
            self._by_config[key] = dataset_inputs(load_dataset(cfg), cfg)
        return self._by_config[key]
