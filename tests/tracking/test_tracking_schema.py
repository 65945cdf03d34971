"""The run schema without MLflow: a record through tags, params and metrics (as a store keeps
them: text cut to MLflow's lengths, numbers as floats) and back, and runs of older versions."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from jaxmlp.records import VariantRecord
from jaxmlp.tracking import schema
from jaxmlp.tracking.batches import MAX_PARAM_LENGTH, MAX_TAG_LENGTH, truncated

LONG_NAME = "ReLU + max-norm " * 60  # 960 characters


def stored(record: VariantRecord, config: dict, setting: dict) -> dict:
    """The child run a store holds for `record` once started and finished."""
    tags = schema.child_tags("parent", variant_key=record.variant_key, index=record.index, setting=setting,
                             seed=record.seed, group="g0", config=config)
    metrics, end_tags = schema.outcome(record)
    params = schema.child_params(config, variant_key=record.variant_key, group="g0")
    return {"run_id": "r1", "run_name": "v", "status": record.status,
            "tags": {k: truncated(v, MAX_TAG_LENGTH) for k, v in {**tags, **end_tags}.items()},
            "params": {k: truncated(v, MAX_PARAM_LENGTH) for k, v in params.items()},
            "metrics": {k: float(v) for k, v in metrics.items()}}


def same(a, b) -> bool:
    """Equal, NaN equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_record_with_awkward_values_comes_back_as_it_went():
    setting = {"name": LONG_NAME, "model.hidden": (128, 64), "optimizer.max_norm": None, "model.dropout": 0.2}
    config = {"model.hidden": (128, 64), "optimizer.max_norm": None, "model.activation": "relu",
              "data.features": ("a b", "it's", '"q"', "None", "0.5"), "data.target": "1e-3",
              "training.early_stopping.restore_best": True, "optimizer.learning_rate": 0.1,
              "data.path": "/d/" + "x" * 3000, "data.val_size": 0.0}
    record = VariantRecord(setting=setting, seed=4294967295, status="FAILED", variant_key="k" * 64, index=7,
                           diverged=True, best_epoch=None, stopped_epoch=3, n_params=10 ** 12, train_seconds=1.5,
                           compile_seconds=0.0, epochs_trained=3, pruned_at=2,
                           lineage=[{"epoch": 2, "source": 5}],
                           metrics={"test_loss": math.nan, "test_accuracy": math.inf, "best_val_loss": -0.0,
                                    "final_train_loss": 1e-300}, config=config,
                           reliability={"confidence": [0.1234567, 0.9], "accuracy": [0.0, 1.0],
                                        "count": [0.0, 8.0]})

    back = schema.variant_record(stored(record, config, setting), {"val_loss": ([1, 2], [math.nan, 0.5])})

    # JSON has one sequence type: tuples come back as lists; the reliability curve keeps 6 digits.
    as_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    expected = dataclasses.replace(record, run_id="r1", setting={**setting, "model.hidden": [128, 64]},
                                   config=as_lists, history={"val_loss": ([1, 2], [math.nan, 0.5])},
                                   reliability={**record.reliability, "confidence": [0.123457, 0.9]})
    assert same(dataclasses.asdict(back), dataclasses.asdict(expected))
    assert (type(back.n_params), type(back.seed), back.best_epoch, back.pruned_at) == (int, int, None, 2)
    assert back.config["data.features"][3] == "None" and back.config["data.target"] == "1e-3"
    assert back.label.startswith(LONG_NAME.strip()[:50])


def test_a_configuration_longer_than_a_tag_is_spread_over_tags_and_read_back_whole():
    config = {"data.features": [f"column_{i:04d}" for i in range(1500)], "model.hidden": [8, 8], "data.path": None}
    record = VariantRecord(setting={}, seed=0, status="FINISHED", variant_key="k", index=0, config=config)
    child = stored(record, config, {})
    assert len(json.dumps(config)) > 2 * MAX_TAG_LENGTH and f"{schema.CONFIG_JSON_TAG}.3" in child["tags"]
    assert len(child["params"]["data.features"]) == MAX_PARAM_LENGTH  # the params, for the UI, are cut
    assert schema.variant_record(child).config == config


@pytest.mark.parametrize("text, value", [
    ("0.5", 0.5), ("[128, 128]", [128, 128]), ("None", None), ("True", True), ("relu", "relu"),
    ("('a', 'b')", ("a", "b")), ("1e-05", 1e-05), ("nan", "nan"), ("sigmoid|tanh", "sigmoid|tanh"),
    ("[" * 5000, "[" * 5000), ("{'a': 1}", {"a": 1}),
])
def test_older_runs_params_read_as_the_python_text_they_were_written_as(text, value):
    assert schema.legacy_param_value(text) == value


def test_an_older_run_without_the_configuration_tag_reads_its_params():
    params = {"model.hidden": "[64, 64]", "optimizer.max_norm": "None", "model.activation": "relu",
              "optimizer.learning_rate": "0.001", "variant_key": "abc", "group": "g0"}
    child = {"run_id": "r", "run_name": "v", "status": "FINISHED", "params": params, "metrics": {"best_epoch": 4.0},
             "tags": {schema.SETTING_JSON_TAG: '{"model.hidden": [64, 64]}', schema.SEED_TAG: "3",
                      schema.VARIANT_KEY_TAG: "abc", schema.VARIANT_INDEX_TAG: "2"}}
    record = schema.variant_record(child)
    assert record.config == {"model.hidden": [64, 64], "optimizer.max_norm": None, "model.activation": "relu",
                             "optimizer.learning_rate": 0.001}
    assert (record.seed, record.index, record.best_epoch, record.setting) == (3, 2, 4, {"model.hidden": [64, 64]})


def test_a_parent_reads_back_from_the_tags_it_was_created_with():
    tags = schema.parent_tags(sweep_name="s", sweep_hash="h-1", sweep_file="s.yaml", note="n", git_commit=None,
                              environment={"jaxmlp.jax": "0.1"}, lease="L")
    assert schema.GIT_COMMIT_TAG not in tags and tags["jaxmlp.jax"] == "0.1"
    assert schema.parent_run("r", "e", "RUNNING", {**tags, schema.SUMMARY_TAG: "true"}) == schema.ParentRun(
        "r", "e", "s", "h-1", "s.yaml", "n", None, "RUNNING", "L", True)
