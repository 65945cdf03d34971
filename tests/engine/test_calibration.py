"""Calibration, input noise and temperature scaling in the compiled evaluation: hand-computed
ECE, a calibrated sample, the fitted temperature against validation NLL, noisy test copies."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import engine
from jaxmlp.config import ConfigError, load_config
from jaxmlp.data import Split, load_dataset
from jaxmlp.engine import evaluation
from jaxmlp.engine.evaluation import (CALIBRATION_BINS, calibration_metrics, calibration_sums, fit_temperature,
                                      input_noise)
from jaxmlp.losses import cross_entropy_per_example

from tests.helpers.engine import fit, one_variant


def calibration(probs, labels, mask=None) -> dict[str, float]:
    probs, labels = jnp.asarray(probs, jnp.float32), jnp.asarray(labels)
    mask = jnp.ones(len(labels), bool) if mask is None else jnp.asarray(mask)
    metrics = calibration_metrics(calibration_sums(probs, labels, mask), int(mask.sum()))
    return jax.tree_util.tree_map(np.asarray, metrics)


def test_ece_mce_brier_of_hand_made_predictions_equal_the_hand_computation():
    # confidences 0.9, 0.88, 0.87 share bin 13 ((13/15, 14/15]); 0.7 is in bin 10, 0.62 in bin 9
    probs = [[0.9, 0.1], [0.88, 0.12], [0.13, 0.87], [0.3, 0.7], [0.62, 0.38], [0.99, 0.01]]
    labels = [0, 0, 0, 1, 1, 0]
    mask = [True, True, True, True, True, False]  # the last one is padding: ignored
    m = calibration(probs, labels, mask)
    bin13 = abs(2 / 3 - (0.9 + 0.88 + 0.87) / 3)  # two of three right
    bin10, bin9 = abs(1 - 0.7), abs(0 - 0.62)
    assert m["ece"] == pytest.approx((3 * bin13 + bin10 + bin9) / 5, abs=1e-6)
    assert m["mce"] == pytest.approx(max(bin13, bin10, bin9), abs=1e-6)
    brier = [0.1**2 * 2, 0.12**2 * 2, 0.87**2 * 2, 0.3**2 * 2, 0.62**2 * 2]
    assert m["brier"] == pytest.approx(sum(brier) / 5, abs=1e-6)
    confidence, accuracy, count = m["reliability"]
    assert count.tolist() == [0] * 9 + [1, 1, 0, 0, 3, 0]
    assert confidence[[9, 10, 13]] == pytest.approx([0.62, 0.7, (0.9 + 0.88 + 0.87) / 3], abs=1e-6)
    assert accuracy[[9, 10, 13]] == pytest.approx([0.0, 1.0, 2 / 3], abs=1e-6)
    assert len(confidence) == CALIBRATION_BINS


def test_a_perfectly_calibrated_sample_has_ece_near_zero_and_an_overconfident_one_does_not():
    rng = np.random.default_rng(0)
    n = 200_000
    confidence = rng.uniform(0.5, 1.0, n)
    predicted = rng.integers(0, 2, n)
    right = rng.uniform(size=n) < confidence  # right with probability equal to the confidence
    probs = np.where(predicted[:, None] == np.arange(2), confidence[:, None], 1 - confidence[:, None])
    labels = np.where(right, predicted, 1 - predicted)
    assert calibration(probs, labels)["ece"] < 0.005
    sharpened = probs**4 / (probs**4).sum(-1, keepdims=True)  # the same predictions, overconfident
    assert calibration(sharpened, labels)["ece"] > 0.1


@pytest.mark.parametrize("scale", [0.2, 1.0, 5.0])
def test_the_fitted_temperature_minimises_and_never_raises_the_validation_nll(scale):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 3000)
    logits = rng.normal(size=(3000, 10)) + 3.0 * np.eye(10)[labels] * (rng.uniform(size=3000) < 0.7)[:, None]
    logits, labels = jnp.asarray(scale * logits, jnp.float32), jnp.asarray(labels)
    mask = jnp.arange(3000) < 2900  # padding ignored

    def nll(t):
        return float(jnp.where(mask, cross_entropy_per_example(logits / t, labels), 0.0).sum())

    t = float(fit_temperature(logits, labels, mask))
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    assert nll(t) <= nll(1.0)
    assert nll(t) <= min(map(nll, grid)) * (1 + 1e-5)
    assert (t > 1) if scale == 5.0 else (t < 1) if scale == 0.2 else True


@pytest.fixture(scope="module")
def noisy_group(make_config):
    configs = [make_config({"training.seed": seed, "evaluation.input_noise": [0.0, 0.5],
                            "evaluation.temperature_scaling": True}) for seed in (0, 1)]
    data = load_dataset(configs[0].data).on_device()
    return fit(configs, data), data


@pytest.mark.slow
def test_noise_level_zero_equals_the_clean_test_metrics_exactly(noisy_group):
    group, _ = noisy_group
    for v in group.variants:
        assert (v.test["accuracy_noise_0"], v.test["loss_noise_0"]) == (v.test["accuracy"], v.test["loss"])
        assert v.test["loss_noise_0.5"] != v.test["loss"]


def test_each_noise_level_is_the_documented_noisy_copy_and_reproducible(noisy_group, monkeypatch):
    group, data = noisy_group
    monkeypatch.setattr(evaluation, "EVAL_CHUNK", 32)  # several chunks, the last one padded
    evaluate = jax.jit(partial(engine.evaluate, group.structures[0]), static_argnames="noise")
    test = data.test
    chunks = [test.x[i:i + 32] + input_noise(i // 32, test.x[i:i + 32].shape, 0.5) for i in range(0, len(test), 32)]
    noisy_copy = Split(jnp.concatenate(chunks), test.y)
    for v in group.variants:
        hp = one_variant(v.config)
        first, again = evaluate(v.params, hp, test, noise=0.5), evaluate(v.params, hp, test, noise=0.5)
        assert float(first["loss"]) == float(again["loss"])
        clean_on_copy = evaluate(v.params, hp, noisy_copy)
        assert float(first["loss"]) == pytest.approx(float(clean_on_copy["loss"]), rel=1e-6)
        assert float(first["accuracy"]) == float(clean_on_copy["accuracy"])


def test_temperature_scaling_is_logged_and_lowers_validation_nll(noisy_group):
    group, data = noisy_group
    evaluate = jax.jit(partial(engine.evaluate, group.structures[0]))
    for v in group.variants:
        hp, t = one_variant(v.config), v.test["temperature"]
        assert {"temperature", "ece_temperature", "mce_temperature", "brier_temperature", "nll_temperature"} <= set(v.test)
        assert float(evaluate(v.params, hp, data.val, temperature=t)["nll"]) <= float(evaluate(v.params, hp, data.val)["nll"])
        assert v.test["nll_temperature"] == pytest.approx(float(evaluate(v.params, hp, data.test, temperature=t)["nll"]),
                                                          rel=1e-5)


def test_chunked_calibration_equals_the_whole_split_at_once(noisy_group, monkeypatch):
    group, data = noisy_group
    monkeypatch.setattr(evaluation, "EVAL_CHUNK", 32)
    v = group.variants[0]
    chunked = engine.evaluate(group.structures[0], v.params, one_variant(v.config), data.test)
    logits = engine.apply_model(group.structures[0], v.params, data.test.x, one_variant(v.config))
    whole = calibration(jax.nn.softmax(logits), data.test.y)
    for key in ("ece", "mce", "brier"):
        assert float(chunked[key]) == pytest.approx(float(whole[key]), abs=1e-6)
    assert v.reliability[2] == pytest.approx(whole["reliability"][2].tolist())  # counts, as the trainer hands them over


def config_error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(raw, source="run.yaml")
    return str(info.value)


def test_bad_evaluation_values_name_the_key_and_what_is_allowed(make_config):
    assert "evaluation.input_noise.1: bad value -0.1: Input should be greater than or equal to 0" in \
        config_error({"evaluation": {"input_noise": [0.1, -0.1]}})
    assert "evaluation.input_noise: bad value [0.1, 0.1]: the noise levels must be distinct" in \
        config_error({"evaluation": {"input_noise": [0.1, 0.1]}})
    assert "evaluation.temperature_scaling is true, it must be false" in config_error(
        {"data": {"val_size": 0}, "evaluation": {"temperature_scaling": True},
         "training": {"early_stopping": {"patience": None, "restore_best": False}}})
    with pytest.raises(ValueError, match="evaluation.temperature_scaling: true needs class labels; diabetes"):
        engine.structure_of([make_config({"data.name": "diabetes", "evaluation.temperature_scaling": True})],
                            load_dataset(load_config({"data": {"name": "diabetes"}}).data))
