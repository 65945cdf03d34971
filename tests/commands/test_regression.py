"""A regression model end to end (diabetes, through `python -m jaxmlp.train`): the checkpoint
keeps the training targets' statistics, `predict` answers in the target's original units,
`--evaluate` reports the MSE in those units, and a reloaded checkpoint predicts the same."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxmlp.checkpoint import load_checkpoint, predict, save_checkpoint
from jaxmlp.data import load_dataset
from jaxmlp.models import activation_params, build_mlp

from tests.helpers.reference_mlp import forward
from tests.helpers.train import jax_cache_settings_restored, run_main

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One diabetes regressor (10-8-1, 5 epochs) trained and saved: (summary row, folder)."""
    folder = tmp_path_factory.mktemp("regressor")
    with jax_cache_settings_restored():
        code, out, err = run_main(["--dataset", "diabetes", "--hidden", "8", "--epochs", "5", "--lr", "0.01",
                                   "--save", folder, "--json", "--no-progress",
                                   "--compile-cache", tmp_path_factory.mktemp("xla")])
        assert code == 0, err
        (row,) = json.loads(out)["variants"]
        yield row, folder


@pytest.fixture(scope="module")
def data(trained):
    return load_dataset(load_checkpoint(trained[1]).config.data)


@pytest.fixture(scope="module")
def raw_targets():
    """Diabetes targets as scikit-learn ships them: whole numbers of disease progression."""
    from sklearn.datasets import load_diabetes

    return load_diabetes().target


def original_units(standardised, meta: dict, raw: np.ndarray) -> np.ndarray:
    """A split's standardised targets in original units by the checkpoint's statistics;
    the raw targets are whole numbers, so a wrong mean or std shows as fractions."""
    values = np.asarray(standardised, np.float64) * meta["target_std"] + meta["target_mean"]
    np.testing.assert_allclose(values, np.round(values), atol=1e-3)
    assert np.all(np.isin(np.round(values), raw))
    return np.round(values)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_checkpoint_keeps_the_training_targets_mean_and_std(trained, data, raw_targets):
    row, folder = trained
    meta = load_checkpoint(folder).meta
    assert (meta["task"], meta["n_outputs"], meta["input_shape"]) == ("regression", 1, [10])
    splits = [original_units(s.y, meta, raw_targets) for s in (data.train, data.val, data.test)]
    np.testing.assert_array_equal(np.sort(np.concatenate(splits)), np.sort(raw_targets))
    assert meta["target_mean"] == pytest.approx(splits[0].mean(), rel=1e-6)
    assert meta["target_std"] == pytest.approx(splits[0].std(), rel=1e-6)
    assert abs(splits[2].mean() - meta["target_mean"]) > 1e-3  # the training split's, not the test split's
    assert row["best_val_accuracy"] is None and "test_accuracy" not in row


def hand_predictions(folder, x: np.ndarray) -> np.ndarray:
    ckpt = load_checkpoint(folder)
    out, _ = forward(ckpt.params, x)
    return out[:, 0] * ckpt.meta["target_std"] + ckpt.meta["target_mean"]


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
@pytest.mark.parametrize("suffix", ["npy", "csv"])
def test_predict_answers_in_the_targets_original_units(trained, data, tmp_path, suffix):
    _, folder = trained
    x = np.asarray(data.test.x)
    path = tmp_path / f"x.{suffix}"
    np.save(path, x) if suffix == "npy" else np.savetxt(path, x, delimiter=",", fmt="%.9e")
    code, out, err = run_main(["--predict", folder, "--inputs", path, "--json"])
    assert code == 0, err
    predictions = np.asarray(json.loads(out)["predictions"])
    assert predictions.shape == (len(x),)
    np.testing.assert_allclose(predictions, hand_predictions(folder, x), rtol=1e-5)
    ckpt = load_checkpoint(folder)
    direct = build_mlp(ckpt.config.model, 1).apply(ckpt.params, x, act_params=activation_params(ckpt.config.model))
    np.testing.assert_allclose(predictions, np.asarray(direct)[:, 0] * ckpt.meta["target_std"] + ckpt.meta["target_mean"],
                               rtol=1e-6)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_evaluate_reports_the_test_mse_in_original_units_and_the_tables_test_loss(trained, data, raw_targets):
    row, folder = trained
    code, out, err = run_main(["--evaluate", folder])
    assert code == 0, err
    evaluated = json.loads(out)
    assert set(evaluated) == {"checkpoint", "test_loss", "test_mse"}
    ckpt = load_checkpoint(folder)
    y = original_units(data.test.y, ckpt.meta, raw_targets)
    by_hand = np.mean((hand_predictions(folder, data.test.x) - y) ** 2)
    assert evaluated["test_mse"] == pytest.approx(by_hand, rel=1e-5)
    # the engine's test loss is the same error in standardised units: the saved parameters are the selected ones
    assert evaluated["test_mse"] == pytest.approx(row["test_loss"] * ckpt.meta["target_std"] ** 2, rel=1e-4)
    assert evaluated["test_mse"] > 100  # original units (standardised MSE is about 1)
    assert evaluated["test_loss"] == pytest.approx(row["test_loss"], rel=1e-4)  # what the sweep's table shows


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_reloaded_regression_checkpoint_predicts_identically(trained, data, tmp_path):
    _, folder = trained
    first = load_checkpoint(folder)
    again = load_checkpoint(save_checkpoint(tmp_path / "copy", *first))
    assert again.config == first.config and again.meta == first.meta
    for a, b in zip(jax.tree_util.tree_leaves(first.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(a, b)
    x = np.asarray(data.test.x)
    np.testing.assert_array_equal(predict(again, x), predict(first, x))
    np.testing.assert_array_equal(predict(load_checkpoint(folder), x), predict(first, x))


@pytest.mark.slow
def test_the_pyfunc_model_of_a_regression_checkpoint_answers_in_original_units(trained, data, tmp_path):
    import mlflow.pyfunc
    from mlflow.models import Model

    from jaxmlp.tracking.model import save_pyfunc

    _, folder = trained
    save_pyfunc(tmp_path / "model", folder)
    (outputs,) = Model.load(tmp_path / "model" / "MLmodel").signature.outputs.to_dict()
    assert (outputs["tensor-spec"]["dtype"], list(outputs["tensor-spec"]["shape"])) == ("float32", [-1])
    x = np.asarray(data.test.x, np.float32)
    predictions = np.asarray(mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(x))
    assert predictions.shape == (len(x),)
    np.testing.assert_allclose(predictions, hand_predictions(folder, x), rtol=1e-5)
    assert predictions.std() > 1.0  # original units (standardised outputs have a std below 1)
