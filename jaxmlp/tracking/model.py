"""The logged model: a checkpoint folder saved as an MLflow pyfunc model whose loader is
this module, so nothing is pickled and loading it needs only jaxmlp importable. Its
signature (float32 rows of the input's width to class probabilities or regression
outputs; for a net trained on a table, its columns to the user's labels) and input example
come from the checkpoint's own facts."""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any


def import_model_flavour() -> None:
    """Import what `save_pyfunc` needs (done ahead by an idle tracking process)."""
    import mlflow.pyfunc  # noqa: F401


@functools.cache
def _pip_requirements() -> tuple[str, ...]:
    """Pinned requirements of the model, given so MLflow skips inferring them (seconds per model);
    read from the installed packages once per process."""
    from importlib.metadata import version

    return tuple(f"{name}=={version(name)}" for name in ("mlflow", "jax", "flax", "numpy"))


#: MLflow's own checks of a registered model's name and of an alias (the alias's characters and
#: length, then the reserved 'latest' and 'v<N>'), under the names they have had: private
#: functions, which MLflow 3.18 renamed. Where no naming is found, the registry checks at registration.
_CHECKS = {"--register": [("_validate_model_name",)],
           "--alias": [("_validate_alias_name", "_validate_alias_name_reserved"),  # MLflow >= 3.18
                       ("_validate_model_alias_name", "_validate_model_alias_name_reserved")]}


def _registry_checks(option: str) -> list:
    from mlflow.utils import validation

    for names in _CHECKS[option]:
        checks = [getattr(validation, name, None) for name in names]
        if all(checks):
            return checks
    return []


def registration_problem(name: str, alias: str) -> str | None:
    """Why the Model Registry would refuse this model name or alias (MLflow's own checks: the
    name's characters, the alias's characters and length, the reserved aliases 'latest' and
    'v<N>'), said before anything trains; None where both are fine."""
    from mlflow.exceptions import MlflowException

    for what, value in (("--register", name), ("--alias", alias)):
        for check in _registry_checks(what):
            try:
                check(value)
            except MlflowException as err:
                return f"{what} {value!r}: {err.message}"
    return None


def signature_and_example(checkpoint_dir: str | os.PathLike):
    """The model's signature and a two-row input example, from the checkpoint's meta (no
    parameters loaded, nothing predicted): inputs [-1, width] float32; outputs [-1, classes]
    probabilities, or [-1] regression values."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    meta = json.loads(Path(checkpoint_dir, "config.json").read_text())["meta"]
    if meta.get("columns"):
        return _table_signature(meta)
    width = int(np.prod(meta["input_shape"]))
    outputs = (-1, int(meta["n_outputs"])) if meta["task"] == "classification" else (-1,)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, width))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), outputs)]))
    return signature, np.zeros((2, width), np.float32)


def _table_signature(meta: dict[str, Any]):
    """A net trained on a table: a DataFrame of its training columns in, the user's labels
    (or values in the targets' units) out; the example is two rows of the columns' means."""
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    classes = meta.get("classes")
    kind = ("string" if isinstance(classes[0], str) else "boolean" if isinstance(classes[0], bool) else
            "long" if isinstance(classes[0], int) else "double") if classes else "double"
    signature = ModelSignature(inputs=Schema([ColSpec("double", c) for c in meta["columns"]]),
                               outputs=Schema([ColSpec(kind)]))
    return signature, pd.DataFrame([meta["feature_mean"]] * 2, columns=meta["columns"]).astype(np.float64)


def save_pyfunc(folder: str | os.PathLike, checkpoint_dir: str | os.PathLike) -> None:
    """Write the pyfunc model of a checkpoint folder to `folder`, with its signature and input
    example. Requirements are given, not inferred (that would load the model in a subprocess,
    seconds per model)."""
    import mlflow.pyfunc

    signature, example = signature_and_example(checkpoint_dir)
    mlflow.pyfunc.save_model(Path(folder), loader_module=__name__, data_path=os.fspath(checkpoint_dir),
                             pip_requirements=list(_pip_requirements()), signature=signature, input_example=example)


class JaxMLPModel:
    """The pyfunc model MLflow loads from a logged checkpoint folder."""

    def __init__(self, checkpoint_dir: str | os.PathLike):
        from jaxmlp.checkpoint import load_checkpoint

        self.checkpoint = load_checkpoint(checkpoint_dir)

    def predict(self, model_input: Any, params: dict | None = None) -> Any:
        """Class probabilities [N, C] or regression outputs [N] for an array or DataFrame of
        features; a net trained on a table takes its columns and returns the user's labels."""
        import numpy as np
        from jaxmlp.checkpoint import predict, predict_labels

        if self.checkpoint.meta.get("columns"):
            return predict_labels(self.checkpoint, model_input)
        return predict(self.checkpoint, np.asarray(model_input, dtype=np.float32))


def _load_pyfunc(data_path: str) -> JaxMLPModel:
    """MLflow's loader-module hook: `data_path` is the checkpoint folder inside the model."""
    return JaxMLPModel(data_path)
