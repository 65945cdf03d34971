"""Configuration: defaults, dotted keys, and errors that name the key path, the value and the fix."""
from __future__ import annotations

import pydantic
import pytest

from jaxmlp import config
from jaxmlp.config import ConfigError, RunConfig, did_you_mean, flatten, load_config, set_dotted


def error_of(raw, source="configuration") -> str:
    with pytest.raises(ConfigError) as info:
        load_config(raw, source=source)
    return str(info.value)


def test_empty_config_gives_documented_defaults():
    cfg = load_config({})
    assert cfg == RunConfig()
    assert cfg.data.name == "digits"
    assert cfg.model.hidden == (64, 64)
    assert cfg.model.activation == "relu"
    assert cfg.optimizer.name == "adam" and cfg.optimizer.learning_rate == 1e-3
    assert cfg.training.early_stopping.patience == 10
    assert load_config(None) == cfg


def test_values_are_coerced_to_their_types():
    cfg = load_config({"model": {"hidden": [32, "16"]}, "training": {"epochs": "7"},
                       "optimizer": {"learning_rate": "0.5"}})
    assert cfg.model.hidden == (32, 16)
    assert cfg.training.epochs == 7
    assert cfg.optimizer.learning_rate == 0.5


def test_config_is_frozen():
    cfg = load_config({})
    with pytest.raises(pydantic.ValidationError):
        cfg.model.dropout = 0.5  # type: ignore[misc]


def test_to_dict_round_trips():
    cfg = load_config({"model": {"hidden": [8, 4], "activation": "elu", "dropout": 0.25},
                       "optimizer": {"max_norm": 3.0}, "training": {"early_stopping": {"patience": None}}})
    assert load_config(cfg.to_dict()) == cfg


def test_flat_uses_dotted_key_paths():
    flat = load_config({"model": {"activation": "tanh"}}).flat()
    assert flat["model.activation"] == "tanh"
    assert flat["training.early_stopping.patience"] == 10
    assert flat["model.hidden"] == [64, 64]
    assert not any(isinstance(v, dict) for v in flat.values())
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


def test_set_dotted_copies_and_sets_nested_values():
    tree = {"model": {"hidden": [8]}}
    out = set_dotted(tree, "training.early_stopping.patience", 3)
    out = set_dotted(out, "model.activation", "elu")
    assert out == {"model": {"hidden": [8], "activation": "elu"},
                   "training": {"early_stopping": {"patience": 3}}}
    assert tree == {"model": {"hidden": [8]}}
    assert load_config(out).training.early_stopping.patience == 3


def test_set_dotted_below_a_value_raises():
    with pytest.raises(ConfigError, match=r"'model' is a value, not a section: cannot set 'model.dropout'"):
        set_dotted({"model": 3}, "model.dropout", 0.1)


def test_did_you_mean_picks_the_closest_option():
    assert did_you_mean("adamm", list(config.OPTIMIZERS)) == " (did you mean 'adam'?)"
    assert did_you_mean("zzzz", list(config.OPTIMIZERS)) == ""


def test_unknown_activation_names_path_value_allowed_and_suggestion():
    msg = error_of({"model": {"activation": "relux"}}, source="sweep.yaml")
    assert msg.startswith("sweep.yaml: 1 invalid value(s)")
    assert "model.activation: 'relux' is not allowed" in msg
    assert "(did you mean 'relu'?)" in msg
    assert "allowed values: " + ", ".join(config.ACTIVATIONS) in msg


@pytest.mark.parametrize("section, key, typo, suggestion", [
    ("data", "name", "digit", "digits"),
    ("optimizer", "name", "adamm", "adam"),
    ("optimizer", "schedule", "cosin", "cosine"),
    ("training", "loss", "cross_entropie", "cross_entropy"),
])
def test_misspelled_choices_get_a_suggestion(section, key, typo, suggestion):
    msg = error_of({section: {key: typo}})
    assert f"{section}.{key}: '{typo}' is not allowed (did you mean '{suggestion}'?)" in msg


def test_non_string_choice_lists_allowed_values_without_suggestion():
    msg = error_of({"optimizer": {"name": 3}})
    assert "optimizer.name: 3 is not allowed; allowed values: sgd, adam, adamw, rmsprop" in msg
    assert "did you mean" not in msg


def test_negative_width_names_the_layer_and_the_bound():
    msg = error_of({"model": {"hidden": [64, -3]}})
    assert "model.hidden.1: bad value -3" in msg
    assert "greater than 0" in msg


def test_dropout_of_one_or_more_is_rejected():
    msg = error_of({"model": {"dropout": 1.0}})
    assert "model.dropout: bad value 1.0" in msg and "less than 1" in msg
    msg = error_of({"model": {"input_dropout": -0.1}})
    assert "model.input_dropout: bad value -0.1" in msg and "greater than or equal to 0" in msg


@pytest.mark.parametrize("raw, path, typo, suggestion, allowed", [
    ({"model": {"dropuot": 0.1}}, "model.dropuot", "dropuot", "dropout",
     "hidden, activation, init, dropout, input_dropout, leaky_slope, elu_alpha, noise_std"),
    ({"training": {"early_stopping": {"patiense": 3}}}, "training.early_stopping.patiense", "patiense",
     "patience", "monitor, patience, min_delta, restore_best"),
    ({"trainng": {}}, "trainng", "trainng", "training", "data, model, optimizer, training"),
])
def test_unknown_key_names_path_suggestion_and_allowed_keys(raw, path, typo, suggestion, allowed):
    msg = error_of(raw)
    assert f"{path}: unknown key (did you mean '{suggestion}'?); allowed keys: {allowed}" in msg


@pytest.mark.parametrize("raw, expected", [
    ({"training": {"epochs": "ten"}}, "training.epochs: bad value 'ten': Input should be a valid integer"),
    ({"optimizer": {"nesterov": "maybe"}}, "optimizer.nesterov: bad value 'maybe': Input should be a valid boolean"),
    ({"model": {"hidden": "abc"}}, "model.hidden: bad value 'abc': Input should be a list"),
    ({"model": 5}, "model: bad value 5: Input should be a valid dictionary"),
    ({"optimizer": {"learning_rate": "fast"}}, "optimizer.learning_rate: bad value 'fast': Input should be a valid number"),
])
def test_wrong_type_names_path_value_and_expected_type(raw, expected):
    assert expected in error_of(raw)


def test_every_invalid_value_is_reported_at_once():
    msg = error_of({"model": {"activation": "relux", "dropout": -1}, "optimizer": {"learning_rate": 0}})
    assert msg.startswith("configuration: 3 invalid value(s)")
    for path in ("model.activation", "model.dropout", "optimizer.learning_rate"):
        assert f"  - {path}: " in msg


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("text, line", [
    ("seeds: 2\n", "  - name: missing; this key is required"),
    ("name: s\nseeds: two\n", "  - seeds: bad value 'two': Input should be a valid integer, unable to parse string "
                              "as an integer; or Input should be a valid list"),
])
def test_a_missing_key_and_a_value_of_no_allowed_form_take_one_line(tmp_path, text, line):
    """Not the whole file as the bad value of a missing key, nor one line per form of a union."""
    from jaxmlp.sweep.spec import SweepError, load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert str(err.value).splitlines() == [f"{path}: 1 invalid value(s)", line]


@pytest.mark.parametrize("raw, path", [
    ({"optimizer": {"learning_rate": float("inf")}}, "optimizer.learning_rate: bad value inf"),
    ({"model": {"dropout": float("nan")}}, "model.dropout: bad value nan"),
    ({"training": {"divergence_factor": float("inf")}}, "training.divergence_factor: bad value inf"),
    ({"training": {"early_stopping": {"min_delta": float("-inf")}}}, "training.early_stopping.min_delta: bad value -inf"),
])
def test_non_finite_numbers_are_refused(raw, path):
    assert f"{path}: Input should be a finite number" in error_of(raw)


@pytest.mark.parametrize("key", ["training.seed", "data.split_seed"])
def test_seeds_are_bounded_to_uint32(key):
    assert load_config(set_dotted({}, key, 2**32 - 1)).flat()[key] == 2**32 - 1
    assert f"{key}: bad value 4294967296: Input should be less than or equal to 4294967295" in \
        error_of(set_dotted({}, key, 2**32))
