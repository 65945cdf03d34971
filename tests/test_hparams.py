"""The vmapped numbers' one declaration (`jaxmlp.config.HParams`) against the configuration:
keys, bounds, None values and dtypes; stacking; the seed kept out of the numbers."""
from __future__ import annotations

import math
import typing

import numpy as np
import pytest
from pydantic import BaseModel

from jaxmlp import config, engine
from jaxmlp.config import HParams, Number, RunConfig, numeric_fields

#: The configuration's numbers and flags that are structure (a program of their own per value) or data.
STRUCTURAL_NUMBERS = {"data.val_size", "data.test_size", "data.split_seed", "data.train_limit", "data.n_samples",
                      "data.n_features", "data.n_classes", "training.epochs", "training.batch_size",
                      "optimizer.nesterov", "evaluation.temperature_scaling"}


def _leaf_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, typing.Any]:
    """Dotted key -> pydantic FieldInfo of every leaf field of the configuration."""
    out = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(_leaf_fields(field.annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field
    return out


def _constraints(field) -> dict[str, float]:
    """The bounds pydantic enforces on a field, by name (ge, gt, le, lt)."""
    return {name: getattr(item, name) for item in field.metadata for name in ("ge", "gt", "le", "lt")
            if getattr(item, name, None) is not None}


def _is_number(field) -> bool:
    """Whether a field holds one number (int, float or bool, maybe None), not a tuple or a name."""
    kinds = set(typing.get_args(field.annotation)) - {type(None)} or {field.annotation}
    return kinds <= {int, float, bool}


@pytest.mark.parametrize("number", numeric_fields(), ids=lambda n: n.name)
def test_each_declared_number_states_its_configuration_fields_bounds(number):
    field = _leaf_fields()[number.key]
    stated = {k: getattr(number, k) for k in ("ge", "gt", "le", "lt") if getattr(number, k) is not None}
    assert stated == _constraints(field)
    optional = type(None) in typing.get_args(field.annotation)
    assert (number.none is not None) == optional, "a None value exactly where the field may be None"
    assert _is_number(field) and (number.dtype == "bool") == (field.annotation is bool)


def test_every_configuration_number_is_declared_structural_or_the_seed():
    numbers = {k for k, field in _leaf_fields().items() if _is_number(field) and k != config.SEED_KEY}
    declared = {n.key for n in numeric_fields()}
    assert numbers - declared == STRUCTURAL_NUMBERS
    assert declared <= numbers
    assert config.SEED_KEY not in declared and "seed" not in HParams._fields


def test_numbers_are_named_by_their_fields_in_order():
    assert [n.name for n in numeric_fields()] == list(HParams._fields)
    assert len({n.key for n in numeric_fields()}) == len(HParams._fields)
    assert config.switched_keys() == ("model.activation", "model.init")


def test_bounds_are_the_closed_range_the_configuration_allows():
    assert Number("x", ge=0, lt=1).bounds == (0, math.nextafter(1.0, 0.0))
    assert Number("x", gt=1).bounds == (math.nextafter(1.0, 2.0), math.inf)
    assert Number("x").bounds == (-math.inf, math.inf)
    assert config.bounds("optimizer.decay_rate") == (math.nextafter(0.0, 1.0), 1)
    low, high = config.bounds("model.dropout")
    for value, valid in [(low, True), (high, True), (math.nextafter(low, -1.0), False), (1.0, False)]:
        try:
            config.load_config({"model": {"dropout": value}})
        except config.ConfigError:
            assert not valid, value
        else:
            assert valid, value


def test_hparams_are_stacked_along_the_variant_axis(make_config):
    hp = engine.hparams_of([make_config({"training.seed": 4, "optimizer.max_norm": 2.0}),
                           make_config({"optimizer.learning_rate": 0.1, "training.early_stopping.patience": None})])
    assert isinstance(hp, HParams) and all(np.shape(v) == (2,) for v in hp)
    np.testing.assert_allclose(hp.learning_rate, [1e-3, 0.1])
    np.testing.assert_array_equal(hp.max_norm, [2.0, np.inf])
    np.testing.assert_array_equal(hp.clip_norm, [np.inf, np.inf])
    np.testing.assert_array_equal(hp.patience, [10, engine.NO_PATIENCE])
    assert [np.asarray(v).dtype.name for v in hp] == [n.dtype for n in numeric_fields()]


def test_the_seed_is_neither_structure_nor_a_number(make_config):
    a, b = make_config({"training.seed": 0}), make_config({"training.seed": 7})
    assert engine.structure_key(a) == engine.structure_key(b)
    assert all(np.array_equal(x, y) for x, y in zip(engine.hparams_of([a]), engine.hparams_of([b])))


@pytest.mark.parametrize("seeds, where, listed", [(3, "seeds", [0, 1, 2]), ([5, 0], "--seeds", [5, 0])])
def test_a_seed_count_or_list_is_read_by_one_rule(seeds, where, listed):
    assert config.seed_list(seeds, where) == listed


@pytest.mark.parametrize("seeds", [0, -1, [], [1, 1], [0, -2], [2**32], [True], "3"])
def test_bad_seeds_are_refused_by_one_rule(seeds):
    with pytest.raises(config.ConfigError, match=r"^here: .*; give a positive count or a list of distinct integers "
                                                 r"in 0\.\.4294967295$"):
        config.seed_list(seeds, "here")
