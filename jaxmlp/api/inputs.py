"""What the library takes: configurations (dicts, dotted keys, RunConfigs, YAML paths) and data
(arrays, a DataFrame, given splits, a Dataset), validated with the files' messages."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxmlp.config import ConfigError, DataConfig, RunConfig, load_config, seed_list, set_dotted
from jaxmlp.data import Dataset, load_dataset
from jaxmlp.data.errors import DataError
from jaxmlp.data.tables import arrays_config, resolve_file
from jaxmlp.bounded_yaml import YamlError, load_bounded_yaml

#: Where a dict given in Python stands in messages, as a file's name would.
DICT_SOURCE = "<dict>"


def nested(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration dict with dotted keys ('model.hidden') set into their sections."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        out = set_dotted(out, str(key), value)
    return out


def _one_config(item: Any) -> RunConfig:
    if isinstance(item, RunConfig):
        return item.model_copy(update={"data": resolve_file(item.data, Path.cwd())})
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        try:
            raw = load_bounded_yaml(path) if path.is_file() else None
        except YamlError as err:
            raise ConfigError(str(err)) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: not a YAML file of configuration sections (data, model, optimizer, training)")
        config = load_config(raw, source=str(path))
        return config.model_copy(update={"data": resolve_file(config.data, path.parent)})
    if isinstance(item, Mapping):
        config = load_config(nested(item), source=DICT_SOURCE)
        return config.model_copy(update={"data": resolve_file(config.data, Path.cwd())})
    raise ConfigError(f"{DICT_SOURCE}: a configuration must be a dict, a RunConfig or a YAML path, not "
                      f"{type(item).__name__}")


def run_configs(config: Any, seeds: int | Sequence[int] | None = None) -> list[RunConfig]:
    """The configurations to train: each given one (or a list of them), once per seed (`seeds`:
    a count or a list, checked as a sweep file's seeds are)."""
    items = list(config) if isinstance(config, (list, tuple)) else [config]
    configs = [_one_config(c) for c in items]
    if seeds is not None:
        seeds = seed_list(list(seeds) if isinstance(seeds, (list, tuple, range)) else seeds, "seeds")
        configs = [c.model_copy(update={"training": c.training.model_copy(update={"seed": s})})
                   for c in configs for s in seeds]
    keys = [c.model_dump_json() for c in configs]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{DICT_SOURCE}: two configurations are the same (same seed too); give each once")
    return configs


def dataset_of(data: Any, target: str | None = None) -> Dataset | None:
    """The user's data as a Dataset: None (the configuration's `data`), (X, y), a DataFrame
    with `target`, given splits {'train': (X, y), 'test': (X, y)[, 'val': (X, y)]}, or a Dataset."""
    if data is None or isinstance(data, Dataset):
        return data
    if hasattr(data, "columns"):
        if target is None:
            raise DataError("data: a DataFrame needs target='column' (the column to predict)")
        return Dataset.from_frame(data, target)
    if isinstance(data, Mapping):
        unknown = set(data) - {"train", "val", "test"}
        if unknown or not {"train", "test"} <= set(data):
            raise DataError(f"data: splits {sorted(map(str, data))}; give 'train' and 'test' (and optionally 'val'), "
                            "each (X, y)")
        arrays = {f"{letter}_{split}": np.asarray(a) for split, pair in data.items() for letter, a in zip("xy", pair)}
        return load_dataset(arrays_config(arrays, "arrays"))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return Dataset.from_arrays(*data)
    raise DataError(f"data: {type(data).__name__}; give (X, y), a DataFrame with target=..., "
                    "{'train': (X, y), 'test': (X, y)} or a jaxmlp.Dataset")


def data_section(data: Dataset) -> DataConfig:
    """The data section that loads `data` again (a Dataset loaded by jaxmlp always has one)."""
    if data.config is None:
        raise DataError("data: this Dataset has no data section; build it with Dataset.from_arrays or from_frame")
    return data.config
