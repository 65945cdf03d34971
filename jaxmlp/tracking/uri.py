"""Where a tracking store is and where its UI shows it: the URI a command resolves, the
`mlflow ui` command to open it, and the runs page of an experiment."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_UI_BASE = "http://127.0.0.1:5000"
#: The `--tracking-uri` option's help, for every command that takes it (see `resolve_tracking_uri`).
TRACKING_URI_HELP = ("MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                     f"{DEFAULT_TRACKING_URI} in the working directory)")

_SQLITE = "sqlite:///"
#: The URI schemes MLflow's tracking stores accept ('' is a local folder; a database scheme
#: may name its driver, e.g. postgresql+psycopg2).
STORE_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks",
                 "databricks-uc", "uc")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else ./mlflow.db; SQLite paths made absolute."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith(_SQLITE) and not uri[len(_SQLITE):].startswith("/"):
        uri = _SQLITE + os.path.abspath(uri[len(_SQLITE):])
    return uri


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a SQLite store (without the URI's query, e.g. ?timeout=20); None
    for any other store."""
    return Path(tracking_uri[len(_SQLITE):].split("?", 1)[0]) if tracking_uri.startswith(_SQLITE) else None


def unsupported_scheme(tracking_uri: str) -> str | None:
    """Why this URI names no tracking store that keeps runs: it does not parse, its scheme has
    no MLflow store (MLflow itself fails on it with an error about its model registry), or it
    is SQLite in memory (`sqlite://`: everything logged is gone when the process ends); None
    where the scheme is one of `STORE_SCHEMES`."""
    try:
        parsed = urlparse(tracking_uri)
        parsed.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as err:
        return f"it is not a valid URI ({err}); give e.g. {DEFAULT_TRACKING_URI} or http://HOST:PORT"
    scheme = parsed.scheme.lower().split("+", 1)[0]
    if scheme not in STORE_SCHEMES:
        return (f"its scheme {scheme + '://'!r} is not a tracking store; the schemes MLflow stores take are "
                f"{', '.join(s + ':' for s in STORE_SCHEMES if s)} or a local folder's path")
    if scheme == "sqlite" and not parsed.path.strip("/"):
        return (f"it names no database file, so SQLite would keep everything in memory and lose it when the "
                f"process ends; give a file, e.g. {DEFAULT_TRACKING_URI}")
    return None


def unwritable_sqlite(tracking_uri: str) -> str | None:
    """Why a SQLite store in an existing folder cannot be written, found by trying (a file
    created and removed in the folder, or the database opened for writing); None where it can,
    or for other stores. MLflow itself retries such a store for a minute and more."""
    database = sqlite_path(tracking_uri)
    if database is None or not database.parent.is_dir():
        return None
    try:
        if database.exists():
            with open(database, "r+b"):
                pass
        else:
            import tempfile

            with tempfile.TemporaryFile(dir=database.parent):
                pass
    except OSError as err:
        return f"{database if database.exists() else database.parent} is not writable ({err.strerror})"
    return None


def _is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ui_command(tracking_uri: str) -> str:
    """The shell command that shows a local store in the MLflow UI (a server: its URI)."""
    if _is_server(tracking_uri):
        return tracking_uri
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"


def ui_base_url(tracking_uri: str) -> str:
    """Where the UI of this store is: the server itself, or what `mlflow ui` serves by default."""
    return tracking_uri.rstrip("/") if _is_server(tracking_uri) else DEFAULT_UI_BASE


def runs_page_url(ui_base: str, experiment_id: str, parent_run_id: str | None = None,
                  monitor: str | None = "val_loss") -> str:
    """The classic runs page of one experiment: parent runs, their children nested. With
    `parent_run_id`: that parent's children listed, best first by the validation metric that
    selected their parameters (`monitor`: val_loss lowest first, val_accuracy highest first;
    MLflow's UI keeps which parents are expanded in the browser, not in its address; a
    search filter lists children on their own); children trained without a validation split
    (`monitor` None) have none, and are listed in the UI's default order."""
    url = f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if parent_run_id is None:
        return url
    query = {"searchFilter": f"tags.mlflow.parentRunId = '{parent_run_id}'"}
    if monitor:
        query.update(orderByKey=f"metrics.`best_{monitor}`", orderByAsc=str(monitor == "val_loss").lower())
    return f"{url}&{urlencode(query, quote_via=quote)}"


def run_page_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """One run's page (overview, metric charts, datasets, artifacts), in the UI's model-training
    view (without the parameter it shows the run among GenAI evaluations)."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def store_fix(tracking_uri: str, reason: str = "") -> str:
    """What to do when the store at this URI cannot be opened or written (`reason`: why not)."""
    database = sqlite_path(tracking_uri)
    if database is not None:
        folder, other = database.parent, (f"pass another --tracking-uri such as {DEFAULT_TRACKING_URI}, or train "
                                          "without logging with --no-tracking")
        if "database is locked" in reason:
            return (f"another process holds a lock on {database} (a sweep, a replay or an MLflow server writing "
                    f"to it); wait for it to finish, or {other}")
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file, not a folder: {other}"
        if folder.is_dir():
            return f"make {database if database.exists() else folder} writable, or {other}"
        return f"create the folder {folder}, or {other}"
    if _is_server(tracking_uri):
        return ("start the tracking server (mlflow server --backend-store-uri sqlite:///mlflow.db --port PORT) "
                f"or correct the address; or log locally with --tracking-uri {DEFAULT_TRACKING_URI}, "
                "or train without logging with --no-tracking")
    return f"check the URI, or pass --tracking-uri {DEFAULT_TRACKING_URI}, or train without logging with --no-tracking"
