"""One variant's forward pass as the engine runs it (`engine.step.apply_model`): the numbers of
its configuration reach the network where they belong, against a float64 NumPy forward pass
(tests/helpers/reference_mlp.py's layers) with the same dropout masks."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxmlp.engine.step import apply_model
from jaxmlp.engine.structure import hparams_of, structure_of
from jaxmlp.models import build_mlp

from tests.helpers.reference_mlp import layers

#: NumPy activations with their numbers given explicitly.
NUMPY = {"leaky_relu": lambda z, slope, alpha: np.where(z > 0, z, slope * z),
         "elu": lambda z, slope, alpha: np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0))),
         "relu": lambda z, slope, alpha: np.maximum(z, 0.0)}


def _engine_forward(config, data, draws=None):
    """apply_model's outputs for one variant of `config`, and its parameters."""
    s = structure_of([config], data)
    hp = jax.tree_util.tree_map(lambda a: a[0], hparams_of([config]))
    params = build_mlp(config.model, data.n_outputs).init(jax.random.key(1), np.zeros((1, 8), np.float32))
    x = np.asarray(data.train.x[:16])
    out = apply_model(s, params, x, hp, draws=None if draws is None else draws(s.random_width))
    return np.asarray(out, np.float64), params, x


def _numpy_forward(params, x, activation, slope=0.01, alpha=1.0, masks=()):
    """Outputs in float64; `masks`: (keep mask, keep probability) of the inputs, then of each hidden layer."""
    h = np.asarray(x, np.float64)
    masks = list(masks)
    if masks and masks[0] is not None:
        keep, p = masks[0]
        h = np.where(keep, h / p, 0.0)
    *inner, (w_out, b_out) = layers(params)
    for i, (w, b) in enumerate(inner):
        h = NUMPY[activation](h @ w + b, slope, alpha)
        if len(masks) > i + 1:
            keep, p = masks[i + 1]
            h = np.where(keep, h / p, 0.0)
    return h @ w_out + b_out


@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
def test_leaky_slope_and_elu_alpha_reach_their_own_activation(make_config, synthetic_data, activation):
    """Non-default numbers (slope 0.3, alpha 0.7): swapped, each activation would take the other's."""
    config = make_config({"model.activation": activation, "model.leaky_slope": 0.3, "model.elu_alpha": 0.7,
                          "model.init": "glorot_normal"})
    out, params, x = _engine_forward(config, synthetic_data)
    np.testing.assert_allclose(out, _numpy_forward(params, x, activation, slope=0.3, alpha=0.7), rtol=1e-5,
                               atol=1e-6)


def test_input_and_hidden_dropout_take_their_own_rates(make_config, synthetic_data):
    """A 0.2 input / 0.5 hidden net: the inputs' mask keeps draws below 0.8, the hidden layer's
    below 0.5, each scaled by its own keep probability."""
    config = make_config({"model.input_dropout": 0.2, "model.dropout": 0.5})
    u = {}

    def draws(width):
        u["draws"] = np.asarray(jax.random.uniform(jax.random.key(2), (16, width)))
        return u["draws"]

    out, params, x = _engine_forward(config, synthetic_data, draws)
    n_in = x.shape[1]
    masks = [(u["draws"][:, :n_in] < 0.8, 0.8), (u["draws"][:, n_in:n_in + 16] < 0.5, 0.5)]
    assert u["draws"].shape[1] == n_in + 16
    np.testing.assert_allclose(out, _numpy_forward(params, x, "relu", masks=masks), rtol=1e-5, atol=1e-6)
