"""The models of a store's runs: a child's checkpoint logged as an MLflow pyfunc model, the
sweep's best model on its parent, and registered models with an alias.

`Registry` is a base of `Tracker` (`jaxmlp.tracking.store`), which gives it its `client` and
its `tracking_uri`; callers use these methods on a tracker (or, by name, on a
`TrackerProcess`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from jaxmlp.tracking.batches import log_batches, run_tags
from jaxmlp.tracking.client import read_run
from jaxmlp.tracking.model import save_pyfunc
from jaxmlp.tracking.schema import (BEST_MODEL_TAG, BEST_RUN_TAG, BEST_SETTING_TAG, REGISTERED_MODEL_TAG,
                                    REGISTERED_MODEL_URI_TAG)


class Registry:
    """Logged and registered models of the runs in `self.client`'s store."""

    client: Any
    tracking_uri: str

    def _tag(self, run_id: str, tags: dict[str, Any]) -> None:
        log_batches(self.client, run_id, tags=run_tags(tags))

    def download_checkpoint(self, run_id: str, folder: str | os.PathLike) -> str:
        """Copy a child run's checkpoint (logged by `finish_child`) into `folder`; return its path."""
        return self.client.download_artifacts(run_id, "checkpoint", os.fspath(folder))

    def model_uris(self, run_id: str) -> list[str]:
        """The models:/ URIs of the READY models logged on a run, oldest first."""
        return [f"models:/{m.model_id}" for m in self._logged_models(run_id)]

    def _logged_models(self, run_id: str, name: str | None = None) -> list:
        """The run's READY logged models (named `name`, where given), oldest first. Searched,
        not read from the run's outputs: those keep a model that was deleted (a replaced best_model)."""
        query = f"source_run_id = '{run_id}'" + (f" AND name = '{name}'" if name else "")
        experiment_id = self.client.get_run(run_id).info.experiment_id
        found = self.client.search_logged_models([experiment_id], filter_string=query, max_results=100)
        return sorted((m for m in found if str(m.status) == "READY"), key=lambda m: m.creation_timestamp)

    def log_model_from_run(self, run_id: str) -> str:
        """Turn a child run's checkpoint artifact into an MLflow model on that run; return its URI.
        `RunNotFound` where the store has no run of this id, `LookupError` where the run has no
        checkpoint (a sweep's parent run, or a child whose parameters were not saved)."""
        read_run(self.client, self.tracking_uri, run_id)  # RunNotFound before anything else
        if not self.client.list_artifacts(run_id, "checkpoint"):
            raise LookupError(f"run {run_id} in {self.tracking_uri} has no checkpoint artifact: it is not a "
                              "variant's child run, or its variant saved no parameters")
        with tempfile.TemporaryDirectory() as tmp:
            return self.log_model(run_id, self.download_checkpoint(run_id, tmp))

    def log_model(self, run_id: str, checkpoint_dir: str | os.PathLike, artifact_path: str = "model") -> str:
        """Log a checkpoint folder as the run's MLflow pyfunc model (`jaxmlp.tracking.model`);
        return its models:/ URI."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        run = self.client.get_run(run_id)
        model = self.client.create_logged_model(
            run.info.experiment_id, artifact_path, source_run_id=run_id, params=run.data.params)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                save_pyfunc(Path(tmp, "model"), checkpoint_dir)
                self.client.log_model_artifacts(model.model_id, Path(tmp, "model"))
            self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        except BaseException:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return f"models:/{model.model_id}"

    def mark_best(self, parent_run_id: str, checkpoint_dir: str | os.PathLike, *, run_id: str, setting: str,
                  model_uri: str) -> None:
        """The sweep's best variant on its parent: its model (as best_model), run, setting and model URI.
        A parent marked before (a resumed sweep) keeps its best_model where the best run is the
        same, and has it replaced (the earlier one deleted) where another run is now the best."""
        previous = self._logged_models(parent_run_id, "best_model")
        if previous and self.client.get_run(parent_run_id).data.tags.get(BEST_RUN_TAG) == run_id:
            previous = previous[:-1]  # the newest stays: the same best, nothing to log
        else:
            self.log_model(parent_run_id, checkpoint_dir, "best_model")
        for model in previous:
            self.client.delete_logged_model(model.model_id)
        self._tag(parent_run_id, {BEST_RUN_TAG: run_id, BEST_SETTING_TAG: setting, BEST_MODEL_TAG: model_uri})

    def register_model(self, model_uri: str, name: str):
        """Register a model logged by `log_model` under `name` (created if new); return the ModelVersion."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        model = self.client.get_logged_model(model_uri.removeprefix("models:/"))
        # The artifact location, not the models:/ URI: MLflow would resolve that through the
        # process-wide tracking URI instead of this client's.
        return self.client.create_model_version(name, model.artifact_location,
                                                run_id=model.source_run_id, model_id=model.model_id)

    def register_best(self, parent_run_id: str, model_uri: str, name: str, alias: str = "champion") -> str:
        """Register the sweep's best model under `name`, point `alias` at the new version, note
        both on the parent; return the alias's URI (models:/NAME@ALIAS), which
        `mlflow.pyfunc.load_model` loads."""
        version = self.register_model(model_uri, name)
        self.client.set_registered_model_alias(name, alias, version.version)
        uri = f"models:/{name}@{alias}"
        self._tag(parent_run_id, {REGISTERED_MODEL_TAG: f"{name} v{version.version}",
                                       REGISTERED_MODEL_URI_TAG: uri})
        return uri
