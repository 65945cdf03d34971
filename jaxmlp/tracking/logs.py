"""What MLflow prints: its INFO lines hidden, its warnings and errors one line each.

A store that fails (a full disk, a locked database) makes MLflow log each failed call with
its traceback, a hundred lines and more; the sweep catches the failure itself, spools what
could not be logged and says so in its summary, so a line per failure is what helps."""
from __future__ import annotations

import logging
import os


def quiet_mlflow_logging() -> None:
    """MLflow's and its database migrations' INFO lines ("Creating initial MLflow database
    tables...") are not shown; warnings and errors are (`one_line_records`)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when MLflow configures its loggers
    logging.getLogger("alembic").setLevel(logging.WARNING)


class OneLine(logging.Filter):
    """A record as one line: its message's first line and, where it carries an exception, the
    type and first line of the exception it started from (its innermost cause); no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = record.getMessage().splitlines() or [""]
        text = lines[0]
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            while error.__cause__ is not None:
                error = error.__cause__
            text = f"{text} {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = text, (), None, None, None
        return True


def one_line_records() -> None:
    """Every record MLflow's own handlers print (those of the `mlflow` logger, set up when
    MLflow is imported) as one line (`OneLine`)."""
    for handler in logging.getLogger("mlflow").handlers:
        if not any(isinstance(f, OneLine) for f in handler.filters):
            handler.addFilter(OneLine())
