"""What a finished sweep leaves in a real MLflow store for browsing it: datasets on every child,
models with signatures, the registry alias, the parent's per-setting metrics, system metrics,
run names that lead with the swept values, and the printed table and address."""
from __future__ import annotations

import json
import math
import re
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from jaxmlp import report
from jaxmlp.config import DataConfig
from jaxmlp.data import load_dataset
from jaxmlp.records import VariantRecord
from jaxmlp.tracking import runs_page_url
from jaxmlp.tracking.datasets import array_digest, dataset_inputs

from tests.helpers.sweep import compile_cache, run_ui_sweep, store_client, sweep_runs


@pytest.fixture(scope="module")
def swept(tmp_path_factory, new_store):
    """The tiny UI sweep in a SQLite store: (sweep, client, parent run, child runs)."""
    folder = tmp_path_factory.mktemp("ui-store")
    with pytest.MonkeyPatch.context() as monkeypatch:
        sweep = run_ui_sweep(folder, new_store(folder), compile_cache(tmp_path_factory), monkeypatch, "ui-store")
    client = store_client(sweep.tracking_uri)
    (parent,), children = sweep_runs(client, "ui-store")
    return sweep, client, parent, children


def _contexts(run) -> list[tuple[str, str, str]]:
    return [(d.tags[0].value, d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs]


@pytest.mark.slow
def test_every_child_logs_its_three_splits_with_contexts_sizes_and_digests(swept):
    _, _, parent, children = swept
    data = load_dataset(DataConfig(name="digits"))
    expected = [(context, "digits", array_digest(split.x, split.y))
                for context, split in (("training", data.train), ("validation", data.val), ("test", data.test))]
    assert len(children) == 4 and not parent.inputs.dataset_inputs
    for child in children:
        assert _contexts(child) == expected
        sizes = [json.loads(d.dataset.profile)["num_rows"] for d in child.inputs.dataset_inputs]
        assert sizes == [len(data.train), len(data.val), len(data.test)]
        source = json.loads(child.inputs.dataset_inputs[0].dataset.source)
        assert child.inputs.dataset_inputs[0].dataset.source_type == "scikit-learn"
        assert source["name"] == "sklearn.datasets.load_digits" and source["split_seed"] == 0


def test_different_data_or_splits_get_different_digests_and_sources():
    configs = [DataConfig(name="digits"), DataConfig(name="digits", split_seed=1),
               DataConfig(name="synthetic", n_samples=300, n_features=8, n_classes=3)]
    described = [dataset_inputs(load_dataset(cfg), cfg) for cfg in configs]
    digests = [d.dataset.digest for inputs in described for d in inputs]
    assert len(set(digests)) == len(digests) == 9
    assert [inputs[0].dataset.source_type for inputs in described] == ["scikit-learn", "scikit-learn", "jaxmlp"]
    assert json.loads(described[1][0].dataset.source)["split_seed"] == 1
    schema = json.loads(described[2][0].dataset.schema)["mlflow_tensorspec"]
    assert json.loads(schema["features"])[0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 8]}


@pytest.mark.slow
def test_logged_models_carry_a_float32_signature_and_an_input_example(swept, tmp_path):
    import mlflow.artifacts
    from mlflow.models import Model

    _, client, parent, _ = swept
    models = client.search_logged_models([parent.info.experiment_id])
    assert len(models) == 3  # one per setting, the sweep's best on the parent
    for logged in models:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location,
                                                     dst_path=str(tmp_path / logged.model_id))
        model = Model.load(Path(folder, "MLmodel"))
        (inputs,), (outputs,) = model.signature.inputs.to_dict(), model.signature.outputs.to_dict()
        assert (inputs["tensor-spec"]["dtype"], list(inputs["tensor-spec"]["shape"])) == ("float32", [-1, 64])
        assert (outputs["tensor-spec"]["dtype"], list(outputs["tensor-spec"]["shape"])) == ("float32", [-1, 10])
        example = model.load_input_example(folder)
        assert example.shape == (2, 64) and example.dtype == np.float32


@pytest.mark.slow
def test_the_champion_alias_resolves_to_the_registered_best_model(swept, monkeypatch):
    import mlflow.pyfunc

    sweep, client, parent, _ = swept
    assert f"best model:   models:/{sweep.model_name}@champion" in sweep.out
    version = client.get_model_version_by_alias(sweep.model_name, "champion")
    assert int(version.version) == 1 and version.run_id == parent.data.tags["jaxmlp.best_run_id"]
    assert parent.data.tags["jaxmlp.registered_model_uri"] == f"models:/{sweep.model_name}@champion"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep.tracking_uri)  # models:/ URIs resolve through the global URI
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(f"models:/{sweep.model_name}@champion").predict(x),
                               mlflow.pyfunc.load_model(parent.data.tags["jaxmlp.best_model_uri"]).predict(x))


@pytest.mark.slow
def test_parent_metrics_per_setting_equal_its_summary_table(swept, tmp_path):
    _, client, parent, _ = swept
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "summary_table.json", str(tmp_path)))
                       .read_text())
    rows = [dict(zip(table["columns"], values)) for values in table["data"]]
    assert [r["setting"] for r in rows] == ["model.activation=relu", "model.activation=tanh"]
    assert json.loads(parent.data.tags["mlflow.loggedArtifacts"]) == [{"path": "summary_table.json", "type": "table"}]
    for row, name in zip(rows, ("relu", "tanh")):
        assert parent.data.metrics[f"test_accuracy_mean/{name}"] == pytest.approx(row["test_accuracy"], rel=1e-6)
        assert parent.data.metrics[f"test_accuracy_std/{name}"] == pytest.approx(row["test_accuracy_std"], rel=1e-6)


@pytest.mark.slow
def test_children_are_named_by_their_swept_values_and_only_the_parent_has_system_metrics(swept):
    _, _, parent, children = swept
    assert sorted(c.info.run_name for c in children) == ["relu · seed 0", "relu · seed 1", "tanh · seed 0",
                                                          "tanh · seed 1"]
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(parent.data.metrics)
    assert not any(k.startswith("system/") for c in children for k in c.data.metrics)


@pytest.mark.slow
def test_the_printed_table_ranks_settings_by_mean_validation_loss(swept):
    sweep, _, _, children = swept
    assert "settings best first: lowest mean best_val_loss over seeds" in sweep.out
    by_setting: dict[str, list[float]] = {}
    for c in children:
        by_setting.setdefault(c.data.tags["jaxmlp.setting"], []).append(c.data.metrics["best_val_loss"])
    expected = sorted(by_setting, key=lambda s: np.mean(by_setting[s]))
    printed = [line.split()[0] for line in sweep.out.splitlines() if line.startswith("model.activation=")]
    assert printed == expected


@pytest.mark.slow
def test_the_printed_runs_address_lists_the_parents_children(swept):
    sweep, _, _, _ = swept
    address = re.search(r"runs page:\s+(\S+)", sweep.out).group(1)
    fragment = urllib.parse.urlsplit(address).fragment
    path, _, query = fragment.partition("?")
    assert path == f"/experiments/{sweep.experiment_id}/runs"
    assert urllib.parse.parse_qs(query)["searchFilter"] == [f"tags.mlflow.parentRunId = '{sweep.parent_run_id}'"]
    assert address == runs_page_url("http://127.0.0.1:5000", sweep.experiment_id, sweep.parent_run_id)
    assert re.search(r"parent run:\s+(\S+)", sweep.out).group(1) == (
        f"http://127.0.0.1:5000/#/experiments/{sweep.experiment_id}/runs/{sweep.parent_run_id}"
        "?workflowType=machine_learning")


def _record(setting: dict, seed: int, val: float | None, status: str = "FINISHED") -> VariantRecord:
    metrics = {"test_accuracy": 0.9, "best_val_loss": val, "best_val_accuracy": None if val is None else 1 - val}
    return VariantRecord(setting=setting, seed=seed, status=status,
                         metrics={k: v for k, v in metrics.items() if v is not None})


def test_best_first_ranks_by_the_seeds_mean_validation_metric_unscored_last():
    records = [_record({"model.activation": "relu"}, 0, 0.5), _record({"model.activation": "relu"}, 1, 0.3),
               _record({"model.activation": "tanh"}, 0, 0.35), _record({"model.activation": "elu"}, 0, None, "FAILED"),
               _record({"model.activation": "gelu"}, 0, 0.2)]
    rows = report.summarize(records)
    header, ranked = report.best_first(records, rows)
    assert [r["setting"].split("=")[1] for r in ranked] == ["gelu", "tanh", "relu", "elu"]
    assert ranked[2]["best_val_loss"] == pytest.approx(0.4) and math.isnan(ranked[3]["best_val_loss"])
    assert "lowest mean best_val_loss" in header
    header, ranked = report.best_first(records, rows, "val_accuracy")
    assert [r["setting"].split("=")[1] for r in ranked] == ["gelu", "tanh", "relu", "elu"]
    assert "highest mean best_val_accuracy" in header


@pytest.mark.parametrize("setting, seed, name", [
    ({"model.activation": "relu"}, 4, "relu · seed 4"),
    ({"optimizer.learning_rate": 3e-4, "model.dropout": 0.2}, 1, "lr 3e-4 · drop 0.2 · seed 1"),
    ({"model.hidden": [64, 64], "optimizer.nesterov": True}, 0, "hidden 64x64 · nesterov true · seed 0"),
    ({"optimizer.learning_rate": 1e30, "training.batch_size": 32}, 2, "lr 1e30 · batch 32 · seed 2"),
    ({}, 0, "seed 0"),
])
def test_run_names_lead_with_the_swept_values(setting, seed, name):
    from mlflow.utils.validation import validate_param_and_metric_name

    assert report.run_name(setting, seed) == name
    assert validate_param_and_metric_name(f"test_accuracy_mean/{report.metric_label(setting)}")
