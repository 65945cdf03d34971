"""Saving one variant's selected parameters with its configuration, and predicting from them.

A checkpoint is a folder with `config.json` (the resolved configuration plus the head's
task and output size) and `params.msgpack` (Flax serialisation). Inputs to `predict` are
preprocessed like the dataset's splits (see `jaxmlp.data`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxmlp.config import RunConfig, load_config
from jaxmlp.models import activation_params, build_mlp


class Checkpoint(NamedTuple):
    config: RunConfig
    params: Any
    meta: dict[str, Any]  # task, n_outputs, input_shape, target_mean / target_std (regression)


def checkpoint_files(config: RunConfig, params: Any, meta: dict[str, Any]) -> dict[str, bytes]:
    """The checkpoint's files by name, as bytes (for a folder or a tracking store)."""
    return {
        "config.json": json.dumps({"config": config.to_dict(), "meta": meta}, indent=2).encode(),
        "params.msgpack": serialization.msgpack_serialize(jax.device_get(params)),
    }


def save_checkpoint(folder: str | Path, config: RunConfig, params: Any, meta: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in checkpoint_files(config, params, meta).items():
        (folder / name).write_bytes(data)
    return folder


def load_checkpoint(folder: str | Path) -> Checkpoint:
    folder = Path(folder)
    for name in ("config.json", "params.msgpack"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not a jaxmlp checkpoint (missing {name}); "
                                    "create one with `python -m jaxmlp.train --save FOLDER`")
    config_file, params_file = folder / "config.json", folder / "params.msgpack"
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{config_file}: unreadable ({type(err).__name__}: {err})") from None
    meta = raw.get("meta") if isinstance(raw, dict) else None
    if not isinstance(meta, dict) or meta.get("task") not in ("classification", "regression") \
            or not isinstance(meta.get("n_outputs"), int) or not isinstance(meta.get("input_shape"), list):
        raise ValueError(f"{config_file}: 'meta' with task, n_outputs and input_shape expected (a checkpoint "
                         "saved by python -m jaxmlp.train --save has them)")
    config = load_config(raw.get("config") or {}, source=str(config_file))
    try:
        params = serialization.msgpack_restore(params_file.read_bytes())
    except Exception as err:  # noqa: BLE001 - whatever a truncated or foreign file raises
        raise ValueError(f"{params_file}: unreadable ({type(err).__name__}: {err})") from None
    expected = jax.eval_shape(build_mlp(config.model, meta["n_outputs"]).init, jax.random.key(0),
                              jnp.zeros((1, *meta["input_shape"]), jnp.float32))
    found, needed = (_shapes(tree) for tree in (params, expected))
    wrong = next((key for key in {**needed, **found} if found.get(key) != needed.get(key)), None)
    if wrong is not None:
        raise ValueError(f"{params_file}: {wrong}: shape {found.get(wrong)}, but the model of {config_file} "
                         f"needs {needed.get(wrong)}; save the parameters and configuration together")
    return Checkpoint(config, params, meta)


def _shapes(tree: Any) -> dict[str, tuple[int, ...] | None]:
    """Each leaf's shape by its path ('params/hidden_0/kernel')."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(leaf)) for path, leaf in leaves}


def checkpoint_meta(data) -> dict[str, Any]:
    """What a checkpoint needs to know about the dataset it was trained on."""
    return {"dataset": data.name, "task": data.task, "n_outputs": data.n_outputs,
            "input_shape": list(data.input_shape), **data.info}


def predict(checkpoint: Checkpoint, x: np.ndarray) -> np.ndarray:
    """Class probabilities [N, C], or regression outputs [N] in the target's original units."""
    cfg, params, meta = checkpoint
    x = np.asarray(x, np.float32)
    x = x[None] if x.ndim == 1 else x
    shape, width = tuple(meta["input_shape"]), int(np.prod(meta["input_shape"]))
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != width or not len(x):
        raise ValueError(f"inputs of shape {x.shape}: the model takes rows of {width} features "
                         f"(input shape {list(shape)}); give an array [n, {width}] of at least one row")
    x = jnp.asarray(x.reshape(-1, *shape))
    out = build_mlp(cfg.model, meta["n_outputs"]).apply(params, x, act_params=activation_params(cfg.model))
    if meta["task"] == "classification":
        return np.asarray(jax.nn.softmax(out))
    return np.asarray(out[:, 0]) * meta.get("target_std", 1.0) + meta.get("target_mean", 0.0)


def prepared_inputs(meta: dict[str, Any], x: Any) -> np.ndarray:
    """Inputs in the user's own units (an array, or a DataFrame holding the training columns)
    as the network saw them in training: standardised with the training split's statistics,
    or scaled (images), where the dataset was the user's; others are taken as they are."""
    columns = meta.get("columns")
    if columns and hasattr(x, "columns"):
        if missing := [c for c in columns if c not in x.columns]:
            raise ValueError(f"inputs lack the training column(s) {', '.join(missing)}; give the columns "
                             f"{', '.join(columns)} (a DataFrame, or a .csv file with a header row)")
        x = x[columns]
    x = np.asarray(x, np.float64)
    if "feature_mean" in meta:
        x = (x - np.asarray(meta["feature_mean"])) / np.asarray(meta["feature_std"])
    elif "input_scale" in meta:
        x = x / meta["input_scale"]
    return x.astype(np.float32)


def predict_labels(checkpoint: Checkpoint, x: Any) -> np.ndarray:
    """Predictions for inputs in the user's units: the most probable class as the user's own
    label (classification), or values in the targets' units (regression)."""
    out = predict(checkpoint, prepared_inputs(checkpoint.meta, x))
    if checkpoint.meta["task"] != "classification":
        return out
    classes = checkpoint.meta.get("classes")
    return np.asarray(classes)[out.argmax(1)] if classes else out.argmax(1)
