"""The logged model: a checkpoint folder saved as an MLflow pyfunc model whose loader is
this module, so nothing is pickled and loading it needs only jaxmlp importable."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def import_model_flavour() -> None:
    """Import what `save_pyfunc` needs (done ahead by an idle tracking process)."""
    import mlflow.pyfunc  # noqa: F401


def _pip_requirements() -> list[str]:
    """Pinned requirements of the model, given so MLflow skips inferring them (seconds per model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "jax", "flax", "numpy")]


def save_pyfunc(folder: str | os.PathLike, checkpoint_dir: str | os.PathLike) -> None:
    """Write the pyfunc model of a checkpoint folder to `folder`. Requirements are given,
    not inferred (that would load the model in a subprocess, seconds per model)."""
    import mlflow.pyfunc

    mlflow.pyfunc.save_model(Path(folder), loader_module=__name__, data_path=os.fspath(checkpoint_dir),
                             pip_requirements=_pip_requirements())


class JaxMLPModel:
    """The pyfunc model MLflow loads from a logged checkpoint folder."""

    def __init__(self, checkpoint_dir: str | os.PathLike):
        from jaxmlp.checkpoint import load_checkpoint

        self.checkpoint = load_checkpoint(checkpoint_dir)

    def predict(self, model_input: Any, params: dict | None = None) -> Any:
        """Class probabilities [N, C] or regression outputs [N] for an array or DataFrame of features."""
        import numpy as np
        from jaxmlp.checkpoint import predict

        return predict(self.checkpoint, np.asarray(model_input, dtype=np.float32))


def _load_pyfunc(data_path: str) -> JaxMLPModel:
    """MLflow's loader-module hook: `data_path` is the checkpoint folder inside the model."""
    return JaxMLPModel(data_path)
