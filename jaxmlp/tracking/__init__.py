"""Everything MLflow: where the store is (`uri`), the background writer (`writer`), the
tracking process that runs store calls beside the sweep (`process`), the store with its
runs (`store`, `batches`, `client`) and their models (`registry`), their tags and the
conversion of records to and from them (`schema`), the data's dataset inputs (`datasets`),
the logged pyfunc model with its signature (`model`), what MLflow prints (`logs`), a
tracked sweep read back for the report (`sweeps`), and `python -m jaxmlp.tracking model RUN_ID`.

No module outside this package imports MLflow or names its tags; callers pass and get
plain values and `VariantRecord`s. Importing the package does not import MLflow.
"""
from jaxmlp.tracking.model import _load_pyfunc  # noqa: F401 - models logged before the split name this package
from jaxmlp.tracking.model import registration_problem
from jaxmlp.tracking.histories import HistoryFileError
from jaxmlp.tracking.process import RemoteError, TrackerProcess, bound_http_requests, store_failure
from jaxmlp.tracking.schema import ParentRun
from jaxmlp.tracking.client import RunNotFound
from jaxmlp.tracking.store import Tracker, request_system_metrics
from jaxmlp.tracking.sweeps import SweepNotFound, TrackedSweep, find_sweep
from jaxmlp.tracking.uri import (DEFAULT_TRACKING_URI, DEFAULT_UI_BASE, TRACKING_URI_HELP, resolve_tracking_uri,
                                 run_page_url, runs_page_url, sqlite_path, store_fix, ui_base_url,
                                 ui_command, unsupported_scheme, unwritable_sqlite)
from jaxmlp.tracking.writer import AsyncWriter, TrackingError

__all__ = [
    "DEFAULT_TRACKING_URI", "DEFAULT_UI_BASE", "TRACKING_URI_HELP", "AsyncWriter", "ParentRun", "RemoteError", "RunNotFound",
    "HistoryFileError", "bound_http_requests", "registration_problem", "store_failure",
    "SweepNotFound", "TrackedSweep", "Tracker", "TrackerProcess", "TrackingError", "find_sweep",
    "request_system_metrics", "resolve_tracking_uri", "run_page_url", "runs_page_url", "sqlite_path", "store_fix", "ui_base_url",
    "ui_command", "unsupported_scheme", "unwritable_sqlite",
]
