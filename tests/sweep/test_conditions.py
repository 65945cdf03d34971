"""Conditional parameters (`when:`) in a sweep's `random:` section: proposed only where their
condition holds, the base value elsewhere; bad conditions refused naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from jaxmlp.sweep.spec import SweepError, load_sweep

from tests.helpers.sweep import TINY_BASE, write_sweep

MOMENTUM_WHEN_SGD = {"uniform": [0.5, 0.99], "when": {"optimizer.name": "sgd"}}


def _load(tmp_path: Path, **spec):
    return load_sweep(write_sweep(tmp_path, {"name": "s", "base": TINY_BASE, **spec}))


def _random(params: dict, samples: int = 6, seed: int = 0) -> dict:
    return {"samples": samples, "seed": seed, "params": params}


def test_a_parameter_is_proposed_only_where_its_condition_on_a_grid_key_holds(tmp_path):
    sweep = _load(tmp_path, grid={"optimizer.name": ["sgd", "adam"]},
                  random=_random({"optimizer.learning_rate": {"loguniform": [1e-3, 1e-1]},
                                  "optimizer.momentum": MOMENTUM_WHEN_SGD}))
    by_optimizer = {name: [v for v in sweep.variants if v.config.optimizer.name == name] for name in ("sgd", "adam")}
    assert len(by_optimizer["sgd"]) == len(by_optimizer["adam"]) == 6
    for v in by_optimizer["sgd"]:
        setting = dict(v.setting)
        assert 0.5 <= setting["optimizer.momentum"] <= 0.99
        assert v.config.optimizer.momentum == setting["optimizer.momentum"]
    for v in by_optimizer["adam"]:
        assert "optimizer.momentum" not in dict(v.setting)  # the setting never carries an inactive parameter
        assert v.config.optimizer.momentum == TINY_BASE["optimizer"]["momentum"]  # the base value
    # a condition changes no other draw: the learning rates are those of the unconditional sweep
    plain = _load(tmp_path, grid={"optimizer.name": ["sgd", "adam"]},
                  random=_random({"optimizer.learning_rate": {"loguniform": [1e-3, 1e-1]},
                                  "optimizer.momentum": {"uniform": [0.5, 0.99]}}))
    assert [v.config.optimizer.learning_rate for v in sweep.variants] == [
        v.config.optimizer.learning_rate for v in plain.variants]


def test_samples_alike_but_for_an_inactive_parameter_train_once(tmp_path):
    sweep = _load(tmp_path, grid={"optimizer.name": ["sgd", "adam"]},
                  random=_random({"model.activation": {"choice": ["relu", "tanh"]},
                                  "optimizer.momentum": MOMENTUM_WHEN_SGD}, samples=8))
    labels = [v.label for v in sweep.variants]
    assert len([label for label in labels if "sgd" in label]) == 8  # momentum differs: all eight
    assert sorted(label for label in labels if "adam" in label) == [  # momentum inactive: once per activation
        "optimizer.name=adam, model.activation=relu", "optimizer.name=adam, model.activation=tanh"]


def test_conditions_read_other_parameters_in_dependency_order_and_lists_mean_any_of(tmp_path):
    params = {"model.leaky_slope": {"uniform": [0.01, 0.3], "when": {"model.activation": ["leaky_relu", "elu"]}},
              "model.activation": {"choice": ["relu", "leaky_relu", "elu"]},
              "model.elu_alpha": {"uniform": [0.5, 2.0], "when": {"model.activation": "elu",
                                                                  "optimizer.name": "sgd"}}}
    sweep = _load(tmp_path, random=_random(params, samples=30))
    seen = set()
    for v in sweep.variants:
        setting = dict(v.setting)
        activation = setting["model.activation"]
        seen.add(activation)
        assert ("model.leaky_slope" in setting) == (activation in ("leaky_relu", "elu"))
        assert ("model.elu_alpha" in setting) == (activation == "elu")
        assert list(setting) == [k for k in params if k in setting]  # file order kept
    assert seen == {"relu", "leaky_relu", "elu"}


def test_a_condition_on_an_inactive_parameter_reads_its_base_value(tmp_path):
    params = {"optimizer.name": {"choice": ["sgd", "adam"], "when": {"model.activation": "tanh"}},
              "optimizer.momentum": MOMENTUM_WHEN_SGD}
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "tanh"]}, random=_random(params, samples=10))
    for v in sweep.variants:
        setting = dict(v.setting)
        if setting["model.activation"] == "relu":  # optimizer.name keeps its base value, sgd
            assert "optimizer.name" not in setting and "optimizer.momentum" in setting
        else:
            assert ("optimizer.momentum" in setting) == (setting["optimizer.name"] == "sgd")


@pytest.mark.parametrize("params, message", [
    ({"optimizer.momentum": {"uniform": [0.5, 0.9], "when": {"optimizer.nme": "sgd"}}},
     r"random.params.optimizer.momentum.when.optimizer.nme: optimizer.nme is never set: not a parameter of "
     r"random.params, a grid or zip key, nor a configuration key \(did you mean 'optimizer.name'\?\)"),
    ({"optimizer.momentum": {"uniform": [0.5, 0.9], "when": {"optimizer.name": "adam"}}},
     r"random.params.optimizer.momentum.when.optimizer.name: 'adam' never holds; optimizer.name takes 'sgd'"),
    ({"optimizer.momentum": {"uniform": [0.5, 0.9], "when": {"model.dropout": 0.1}},
      "model.dropout": {"uniform": [0.0, 0.5]}},
     r"random.params.optimizer.momentum.when.model.dropout: model.dropout is drawn from a continuous range"),
    ({"model.activation": {"choice": ["relu", "elu"], "when": {"optimizer.name": ["sgd"]}},
      "optimizer.name": {"choice": ["sgd", "adam"], "when": {"model.activation": "relu"}}},
     r"random.params.(model.activation|optimizer.name).when: circular conditions "
     r"\((model.activation -> optimizer.name -> model.activation|optimizer.name -> model.activation -> "
     r"optimizer.name): each reads the next\)"),
    ({"optimizer.name": {"choice": ["sgd", "adam"], "when": {"optimizer.name": "sgd"}}},
     r"random.params.optimizer.name.when: circular conditions \(optimizer.name -> optimizer.name: each reads "
     r"the next\)"),
])
def test_bad_conditions_are_refused_naming_the_file_and_key(tmp_path, params, message):
    with pytest.raises(SweepError, match=message) as err:
        _load(tmp_path, random=_random(params))
    assert str(err.value).startswith(str(tmp_path))


def test_the_figures_draw_settings_that_carry_different_parameters():
    from jaxmlp.records import VariantRecord
    from jaxmlp.report import sweep_figures, summarize

    def record(seed: int, activation: str, slope: float | None) -> VariantRecord:
        setting = {"model.activation": activation, **({"model.leaky_slope": slope} if slope is not None else {})}
        return VariantRecord(setting, seed, "FINISHED", metrics={"test_accuracy": 0.9 + seed / 100},
                             config={"model.activation": activation, "model.leaky_slope": slope or 0.01,
                                     "model.dropout": 0.0})

    records = [record(s, "leaky_relu", 0.2) for s in (0, 1)] + [record(s, "relu", None) for s in (0, 1)]
    figures = sweep_figures(records, summarize(records))
    assert {"test_metric.png", "activations.png"} <= set(figures)
    assert all(png.startswith(b"\x89PNG") for png in figures.values())
