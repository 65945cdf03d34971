"""Training without a validation split (`data.val_size: 0`): every training sample trains, for
a number of epochs chosen on validation before, as a paper's final fit."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxmlp.config import ConfigError
from jaxmlp.data import Split, load_dataset, split_sizes
from jaxmlp.report.cli import main as report_main
from jaxmlp.sweep.spec import SweepError, load_sweep

from tests.helpers.engine import fit
from tests.helpers.sweep import run_sweep_cli, store_client, sweep_runs, write_sweep

FINAL_FIT = {"data.val_size": 0, "training.early_stopping.patience": None,
             "training.early_stopping.restore_best": False}


def test_no_validation_split_needs_no_early_stopping_and_the_last_parameters(make_config):
    with pytest.raises(ConfigError) as err:
        make_config({"data.val_size": 0})
    message = str(err.value)
    assert "data.val_size: 0" in message
    assert "training.early_stopping.patience is 10, it must be null" in message
    assert "training.early_stopping.restore_best is true, it must be false" in message
    with pytest.raises(ConfigError, match="restore_best is true"):
        make_config({"data.val_size": 0, "training.early_stopping.patience": None})
    assert make_config(FINAL_FIT).data.val_size == 0


def test_without_validation_every_training_sample_trains(make_config):
    digits = {"data.name": "digits"}  # scaled by a constant, so a row's values do not depend on the split
    held_out = load_dataset(make_config(digits).data)
    final_fit = load_dataset(make_config({**FINAL_FIT, **digits}).data)
    assert len(final_fit.val) == 0 and final_fit.val.x.shape[1:] == held_out.val.x.shape[1:]
    assert len(final_fit.train) == len(held_out.train) + len(held_out.val)
    rows = lambda *splits: sorted(map(bytes, np.concatenate([s.x for s in splits])))  # noqa: E731
    assert rows(final_fit.train) == rows(held_out.train, held_out.val)
    np.testing.assert_array_equal(final_fit.test.x, held_out.test.x)
    assert split_sizes(make_config({**FINAL_FIT, **digits}).data) == (len(final_fit.train), 0, len(final_fit.test))
    mnist = make_config({**FINAL_FIT, "data.name": "mnist"}).data
    assert split_sizes(mnist) == (60_000, 0, 10_000)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_variant_without_validation_trains_as_one_whose_validation_is_ignored(make_config, synthetic_data):
    """Validation only observes a variant that neither stops early nor restores its best epoch:
    with the same training data, no validation split gives the same parameters and test metrics."""
    configs = [make_config({**FINAL_FIT, "training.seed": seed, "model.dropout": rate, "training.epochs": 8,
                            "optimizer.learning_rate": 0.02})
               for seed, rate in ((0, 0.0), (1, 0.3))]
    no_val = dataclasses.replace(synthetic_data, val=Split(synthetic_data.val.x[:0], synthetic_data.val.y[:0]))
    without, observed = fit(configs, no_val), fit(configs, synthetic_data)
    for a, b in zip(without.variants, observed.variants):
        assert (a.best_epoch, a.stopped_epoch, a.epochs_trained, a.diverged) == (0, 8, 8, False)
        assert b.best_epoch > 0  # the observed run did measure validation
        for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
        assert a.test == pytest.approx(b.test, rel=1e-5)
        assert [r["train_loss"] for r in a.history] == pytest.approx([r["train_loss"] for r in b.history], rel=1e-5)
        assert not any(k.startswith(("val_", "dead_fraction")) for r in a.history for k in r)
        assert len(a.test_dead_fraction) == 1 and 0 <= a.test_dead_fraction[0] <= 1  # measured on the test split
        assert a.test_dead_fraction == pytest.approx(b.test_dead_fraction)
        assert a.record({}).metrics["test_dead_fraction_0"] == a.test_dead_fraction[0]
        assert a.record({}).best_epoch is None  # nothing selected an epoch
        assert a.history[-1]["train_loss"] < 0.8 * a.history[0]["train_loss"]
        assert a.test["accuracy"] > 0.6  # 3 classes; about 0.75 is what this noisy problem allows


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
@pytest.mark.parametrize("optimizer, lr", [("sgd", 1e4), ("adam", 1e9)])
def test_without_validation_the_training_loss_alone_tells_divergence(make_config, synthetic_data, optimizer, lr):
    """SGD at 1e4 blows up to NaN; Adam at 1e9 to a finite loss far above divergence_factor x its
    initial loss, which only the bound on the training loss catches."""
    no_val = dataclasses.replace(synthetic_data, val=Split(synthetic_data.val.x[:0], synthetic_data.val.y[:0]))
    configs = [make_config({**FINAL_FIT, "optimizer.name": optimizer, "optimizer.learning_rate": rate,
                            "training.seed": 0}) for rate in (1e-3 if optimizer == "adam" else 0.1, lr)]
    sane, blown = fit(configs, no_val).variants
    assert not sane.diverged and sane.stopped_epoch == 5
    assert blown.diverged and blown.stopped_epoch < 5


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_sweep_without_validation_logs_no_validation_dataset_and_refuses_search(tmp_path, store_uri):
    spec = {"name": "final_fit",
            "base": {"data": {"name": "digits", "val_size": 0}, "model": {"hidden": [16]},
                     "training": {"epochs": 3, "batch_size": 64,
                                  "early_stopping": {"patience": None, "restore_best": False}}},
            "grid": {"optimizer.learning_rate": [0.01, 0.03]}}
    uri = store_uri
    result = run_sweep_cli(write_sweep(tmp_path, spec), "--tracking-uri", uri, "--no-progress")
    assert result.code == 0, result.err
    _, children = sweep_runs(store_client(uri), "final_fit")
    assert len(children) == 2
    for child in children:
        contexts = [d.tags[0].value for d in child.inputs.dataset_inputs]
        assert contexts == ["training", "test"]
        assert 0 < child.data.metrics["test_accuracy"] <= 1
        assert not any(k.startswith("val_") or k.startswith("best_") for k in child.data.metrics)
        assert child.data.metrics["stopped_epoch"] == 3
    assert "settings in the sweep's order (no validation split" in result.err + result.out
    (runs_page,) = [line for line in result.out.splitlines() if "runs page:" in line]
    assert "parentRunId" in runs_page and "orderByKey" not in runs_page  # no validation loss to order by
    assert report_main(["final_fit", "--tracking-uri", uri, "--out", str(tmp_path / "report"), "--no-log"]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| setting | test error (%) | seeds | stopped epoch |" in table  # no best epoch: nothing selected one
    assert "of the last epoch's parameters (trained on every training sample, without a validation split)" in table
    assert "dead units (%) |" in table
    assert "zero on the whole test split for the tested parameters (there is no validation split)" in table
    searched = write_sweep(tmp_path, {**spec, "name": "searched",
                                      "search": {"scheduler": "successive_halving", "rungs": [1]}})
    with pytest.raises(SweepError, match=r"search: .*data.val_size is 0"):
        load_sweep(searched)


@pytest.mark.slow  # the only unit test that needed MNIST prepared (the session's MNIST sweep: about a minute)
def test_mnist_without_validation_trains_on_all_60000_images(mnist_sweep):
    from jaxmlp.config import DataConfig

    data = load_dataset(DataConfig(name="mnist", val_size=0, cache_dir=str(mnist_sweep.cache)))
    held_out = load_dataset(DataConfig(name="mnist", cache_dir=str(mnist_sweep.cache)))
    assert (len(data.train), len(data.test)) == (60_000, 10_000)
    assert data.val.x.shape == (0, 784) and data.val.y.shape == (0,)
    rows = lambda *splits: sorted(map(bytes, np.concatenate([s.x for s in splits])))  # noqa: E731
    assert rows(data.train) == rows(held_out.train, held_out.val)
