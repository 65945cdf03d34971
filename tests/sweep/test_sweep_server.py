"""A sweep logged to a real `mlflow server` on loopback, read back through the REST API the UI uses."""
from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request

import numpy as np
import pytest

import jaxmlp

from tests.helpers.sweep import TINY_BASE, compile_cache, write_sweep

pytestmark = pytest.mark.slow


def _api(server: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """GET (query) or POST (body) one REST endpoint of the server, as the UI does."""
    request = urllib.request.Request(f"{server}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _metrics(run: dict) -> dict[str, float]:
    return {m["key"]: float(m["value"]) for m in run["data"].get("metrics", [])}


def _params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def test_sweep_through_a_real_mlflow_server_shows_nested_runs_and_curves(mlflow_server, tmp_path,
                                                                           tmp_path_factory, monkeypatch):
    assert mlflow_server.startswith("http://127.0.0.1:")
    path = write_sweep(tmp_path, {"name": "served-sweep", "base": TINY_BASE,
                                  "grid": {"model.activation": ["relu", "tanh"]}, "seeds": 2})
    result = jaxmlp.run_sweep(path, tracking_uri=mlflow_server, compile_cache=compile_cache(tmp_path_factory))
    assert result.ok, result.failures + result.tracking_errors
    assert result.tracking_uri == mlflow_server and list(result.frame()["status"]) == ["FINISHED"] * 4

    experiment = _api(mlflow_server, "experiments/get-by-name",
                       experiment_name="served-sweep")["experiment"]
    assert experiment["experiment_id"] == result.experiment_id
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]

    runs = _api(mlflow_server, "runs/search",
                 {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    parents = [r for r in runs if _tags(r).get("jaxmlp.role") == "parent"]
    assert len(runs) == 5 and len(parents) == 1
    parent_id = parents[0]["info"]["run_id"]
    assert parent_id == result.parent_run_id and parents[0]["info"]["status"] == "FINISHED"

    # the UI nests runs by this tag: asking for it returns exactly the four variants
    children = _api(mlflow_server, "runs/search", {
        "experiment_ids": [experiment["experiment_id"]], "max_results": 100,
        "filter": f"tags.mlflow.parentRunId = '{parent_id}'"})["runs"]
    assert len(children) == 4
    assert sorted((_params(c)["model.activation"], _params(c)["training.seed"]) for c in children) == [
        ("relu", "0"), ("relu", "1"), ("tanh", "0"), ("tanh", "1")]
    for child in children:
        run_id = child["info"]["run_id"]
        assert child["info"]["status"] == "FINISHED" and _tags(child)["mlflow.parentRunId"] == parent_id
        metrics = _metrics(child)
        stopped = int(metrics["stopped_epoch"])
        for key in ("train_loss", "val_loss", "val_accuracy"):
            history = _api(mlflow_server, "metrics/get-history", run_id=run_id,
                            metric_key=key)["metrics"]
            assert sorted(int(m["step"]) for m in history) == list(range(1, stopped + 1)), key
            assert all(math.isfinite(float(m["value"])) for m in history)
        assert 0.5 < metrics["test_accuracy"] <= 1.0
        files = _api(mlflow_server, "artifacts/list", run_id=run_id, path="checkpoint")["files"]
        assert sorted(f["path"] for f in files) == ["checkpoint/config.json", "checkpoint/params.msgpack"]
    summary = _api(mlflow_server, "artifacts/list", run_id=parent_id, path="summary")["files"]
    assert sorted(f["path"] for f in summary) == ["summary/summary.csv", "summary/summary.md"]

    import mlflow.pyfunc

    from jaxmlp.checkpoint import load_checkpoint, predict
    from jaxmlp.tracking import Tracker

    tags = _tags(parents[0])
    checkpoint = Tracker(mlflow_server).client.download_artifacts(tags["jaxmlp.best_run_id"], "checkpoint",
                                                                  str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    x = np.random.default_rng(0).normal(size=(6, 64)).astype(np.float32)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(tags["jaxmlp.best_model_uri"]).predict(x),
                               predict(load_checkpoint(checkpoint), x), rtol=1e-6, atol=1e-7)
