"""Opening an MLflow store (the client, with a new SQLite file created and migrated by one
process at a time) and reading a run by its id."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from jaxmlp.tracking.logs import one_line_records
from jaxmlp.tracking.uri import sqlite_path


class RunNotFound(LookupError):
    """The store has no run of the id asked for."""


def read_run(client: Any, tracking_uri: str, run_id: str) -> Any:
    """The MLflow run with this id; `RunNotFound` where the store `tracking_uri` has none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # none, or a malformed id
            raise RunNotFound(f"no run with the id {run_id!r} in {tracking_uri}") from None
        raise


def open_client(tracking_uri: str):
    """A client with its store open: a new SQLite file is created and migrated now. MLflow's
    records print as one line each from now on (`jaxmlp.tracking.logs`)."""
    from mlflow.tracking import MlflowClient

    one_line_records()
    with _store_creation_lock(tracking_uri):
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)
    return client


@contextlib.contextmanager
def _store_creation_lock(tracking_uri: str) -> Iterator[None]:
    """Processes opening SQLite stores in one folder take turns (a lock on the folder):
    MLflow's schema migrations, run by two processes at once on a new file, fail and can
    leave the file unusable."""
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    import fcntl

    folder = os.open(database.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock
