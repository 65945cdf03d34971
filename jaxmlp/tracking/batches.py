"""MLflow's batch limits: metrics, params and tags as MLflow entities, values truncated to
the lengths MLflow accepts, sent in as few `log_batch` calls as fit."""
from __future__ import annotations

import time
from typing import Any, Iterator

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_OR_TAGS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000


def _chunks(items: list, size: int) -> Iterator[list]:
    return (items[i:i + size] for i in range(0, len(items), size))


def truncated(value: Any, limit: int) -> str:
    """A param's or tag's value as MLflow keeps it: its text, cut to `limit` characters."""
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def history_metrics(history: list[dict[str, float]], step_key: str = "epoch") -> list:
    """MLflow `Metric`s of per-step records ({step_key: n, name: value, ...})."""
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    return [Metric(key, float(value), timestamp, int(record[step_key]))
            for record in history for key, value in record.items() if key != step_key]


def step_metrics(metrics: dict[str, float], step: int = 0) -> list:
    """MLflow `Metric`s of one value per name at one step."""
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    return [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]


def run_params(params: dict[str, Any]) -> list:
    """MLflow `Param`s, values truncated to MLflow's length."""
    from mlflow.entities import Param

    return [Param(key, truncated(value, MAX_PARAM_LENGTH)) for key, value in params.items()]


def run_tags(tags: dict[str, Any]) -> list:
    """MLflow `RunTag`s, values truncated to MLflow's length."""
    from mlflow.entities import RunTag

    return [RunTag(key, truncated(value, MAX_TAG_LENGTH)) for key, value in tags.items()]


def log_batches(client, run_id: str, metrics: list = (), params: list = (), tags: list = ()) -> None:
    """`log_batch` within MLflow's limits: 1000 metrics, 100 params, 100 tags per call; one
    call when everything fits."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    if (len(metrics) <= MAX_METRICS_PER_BATCH and len(params) <= MAX_PARAMS_OR_TAGS_PER_BATCH
            and len(tags) <= MAX_PARAMS_OR_TAGS_PER_BATCH):
        if metrics or params or tags:
            client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        return
    for chunk in _chunks(params, MAX_PARAMS_OR_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(tags, MAX_PARAMS_OR_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk)
    for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
