"""A training step's random draws (`engine.step_draws`): 16-bit uniforms for dropout, two per
32-bit word, and float32 uniforms where activation noise needs the normal's inverse CDF."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import engine
from jaxmlp.engine.step import uniform16

KEY = jax.random.key(7)


def test_uniform16_takes_each_words_low_half_then_its_high_half():
    n = 7  # odd: the last word's high half is dropped
    u = np.asarray(uniform16(KEY, (3, n)))
    words = np.asarray(jax.random.bits(KEY, (3, 4), jnp.uint32)).astype(np.int64)
    expected = np.concatenate([words % 65536, words // 65536], axis=1)[:, :n]
    assert u.shape == (3, n) and u.dtype == np.float32
    np.testing.assert_array_equal(u * 65536 - 0.5, expected)
    assert u.min() > 0 and u.max() < 1


def test_uniform16_is_uniform_and_its_halves_are_uncorrelated():
    u = np.asarray(uniform16(KEY, (2000, 500)), np.float64)
    n = u.size
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 0.002
    for keep in (0.8, 0.5, 0.2):  # the dropout comparison's kept share
        assert abs((u < keep).mean() - keep) < 4 * np.sqrt(keep * (1 - keep) / n)
    low, high = u[:, :250].ravel(), u[:, 250:].ravel()  # the two halves of the same words
    assert abs(np.corrcoef(low, high)[0, 1]) < 4 / np.sqrt(low.size)
    counts = np.bincount(np.floor(u.ravel() * 16).astype(int), minlength=16)
    expected = n / 16
    assert ((counts - expected) ** 2 / expected).sum() < 45  # chi-square, 15 dof: p < 1e-4


def test_dropout_draws_are_16_bit_and_noise_draws_float32(make_config, synthetic_data):
    dropout = engine.structure_of([make_config({"model.dropout": 0.5})], synthetic_data)
    noisy = engine.structure_of([make_config({"model.activation": "noisy_relu"})], synthetic_data)
    for s in (dropout, noisy):
        u = np.asarray(engine.step_draws(s, KEY))
        assert u.shape == (s.batch_size, s.random_width) and u.min() > 0 and u.max() < 1
    def on_grid(u):
        scaled = np.asarray(u) * 65536 - 0.5
        return np.all(scaled == np.round(scaled))

    assert on_grid(engine.step_draws(dropout, KEY))
    assert not on_grid(engine.step_draws(noisy, KEY))
