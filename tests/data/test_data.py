"""Datasets: split sizes, disjointness, determinism, normalisation, device placement."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxmlp import config
from jaxmlp.config import DataConfig
from jaxmlp.data import REGISTRY, Dataset, data_folder, dataset_key, load_dataset

SYNTHETIC = dict(name="synthetic", n_samples=300, n_features=6, n_classes=4)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataConfig(name="digits"))


@pytest.fixture(scope="module")
def diabetes() -> Dataset:
    return load_dataset(DataConfig(name="diabetes"))


def rows(split) -> set[bytes]:
    return {np.asarray(r).tobytes() for r in split.x}


def test_every_configurable_dataset_is_registered():
    assert set(REGISTRY) == set(config.DATASETS)


def test_dataset_key_is_one_for_the_same_data_and_differs_with_any_field():
    base = DataConfig(**SYNTHETIC)
    assert dataset_key(base) == dataset_key(DataConfig(**SYNTHETIC, test_size=0.2, split_seed=0, val_size=None))
    assert dataset_key(base) == dataset_key(DataConfig.model_validate(base.model_dump(mode="json")))
    changed = [base.model_copy(update={"split_seed": 1}), base.model_copy(update={"n_samples": 301}),
               base.model_copy(update={"val_size": 0.1}), base.model_copy(update={"features": ("a", "b")}),
               base.model_copy(update={"features": ("b", "a")}), DataConfig(name="digits")]
    keys = {dataset_key(c) for c in changed}
    assert dataset_key(base) not in keys and len(keys) == len(changed)


def test_digits_split_sizes_follow_the_fractions(digits):
    # 1797 images: 20% test (359), then 15% of the remaining 1438 for validation (216).
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1222, 216, 359)
    assert digits.task == "classification" and digits.num_classes == 10 and digits.n_outputs == 10
    assert digits.input_shape == (64,)


def test_digits_splits_partition_the_dataset(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, val, test = rows(digits.train), rows(digits.val), rows(digits.test)
    assert not (train & val) and not (train & test) and not (val & test)
    everything = {(row / 16.0).astype(np.float32).tobytes(): label for row, label in zip(bunch.data, bunch.target)}
    assert train | val | test == set(everything)
    for split in (digits.train, digits.val, digits.test):
        assert [everything[np.asarray(r).tobytes()] for r in split.x] == split.y.tolist()


def test_images_are_scaled_to_unit_interval(digits):
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int32
        assert split.x.min() == 0.0 and split.x.max() == 1.0


def test_split_is_deterministic_for_a_seed_and_changes_with_it(digits):
    again = load_dataset(DataConfig(name="digits"))
    for a, b in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    other = load_dataset(DataConfig(name="digits", split_seed=1))
    assert len(other.test) == len(digits.test)
    assert rows(other.test) != rows(digits.test)


def test_val_size_as_count_test_size_and_train_limit():
    data = load_dataset(DataConfig(name="digits", val_size=100, test_size=0.5, train_limit=300))
    assert len(data.test) == round(1797 * 0.5)
    assert len(data.val) == 100
    assert len(data.train) == 300


def test_val_size_that_leaves_no_training_data_is_rejected():
    with pytest.raises(ValueError, match=r"data.val_size: 5000(\.0)? leaves no training data out of 1438 samples"):
        load_dataset(DataConfig(name="digits", val_size=5000))


def test_synthetic_data_is_deterministic_and_shaped_as_configured():
    a = load_dataset(DataConfig(**SYNTHETIC))
    b = load_dataset(DataConfig(**SYNTHETIC))
    assert sum(len(s) for s in (a.train, a.val, a.test)) == 300
    assert a.input_shape == (6,) and a.num_classes == 4
    assert set(np.unique(np.concatenate([a.train.y, a.val.y, a.test.y]))) == {0, 1, 2, 3}
    for s, t in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        np.testing.assert_array_equal(s.x, t.x)
        np.testing.assert_array_equal(s.y, t.y)
    assert not (rows(a.train) & rows(a.val)) and not (rows(a.train) & rows(a.test)) and not (rows(a.val) & rows(a.test))
    c = load_dataset(DataConfig(**{**SYNTHETIC, "split_seed": 1}))
    assert not np.array_equal(a.train.x, c.train.x)


def test_tabular_features_are_standardised_with_training_statistics():
    data = load_dataset(DataConfig(**SYNTHETIC))
    np.testing.assert_allclose(data.train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.train.x.std(axis=0), 1.0, rtol=1e-4)
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int32


def test_validation_and_test_features_are_standardised_with_the_training_splits_statistics(diabetes):
    """One affine map per feature takes the raw table to all three splits (their own statistics
    would give each split its own map), and it is the training split's (mean 0, std 1 there)."""
    from sklearn.datasets import load_diabetes

    raw = load_diabetes().data
    standardised = np.concatenate([diabetes.train.x, diabetes.val.x, diabetes.test.x]).astype(np.float64)
    assert standardised.shape == raw.shape
    for j in range(raw.shape[1]):
        a, b = np.sort(raw[:, j]), np.sort(standardised[:, j])
        slope, intercept = np.polyfit(a, b, 1)
        np.testing.assert_allclose(slope * a + intercept, b, atol=1e-4, err_msg=f"feature {j}")
    np.testing.assert_allclose(diabetes.train.x.mean(axis=0), 0.0, atol=1e-5)
    assert np.abs(diabetes.val.x.mean(axis=0)).max() > 1e-3  # held-out splits are not centred on their own


def test_regression_targets_are_standardised(diabetes):
    from sklearn.datasets import load_diabetes

    assert diabetes.task == "regression" and diabetes.n_outputs == 1 and diabetes.num_classes == 0
    assert diabetes.train.y.dtype == np.float32 and diabetes.train.y.ndim == 1
    assert float(diabetes.train.y.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(diabetes.train.y.std()) == pytest.approx(1.0, rel=1e-5)
    mean, std = diabetes.info["target_mean"], diabetes.info["target_std"]
    assert 100 < mean < 200 and 50 < std < 100  # disease progression is on a 25..346 scale
    original = set(load_diabetes().target.tolist())
    for split in (diabetes.train, diabetes.val, diabetes.test):
        restored = np.round(split.y.astype(np.float64) * std + mean)
        assert set(restored.tolist()) <= original
    np.testing.assert_allclose(diabetes.train.x.mean(axis=0), 0.0, atol=1e-5)


def test_on_device_places_every_split_once(digits, make_config):
    """Every split on the device unchanged, and trainers of the placed dataset use its buffers
    (no copy per trainer)."""
    from jaxmlp.engine import Trainer

    placed = digits.on_device()
    for host, device in zip((digits.train, digits.val, digits.test), (placed.train, placed.val, placed.test)):
        assert isinstance(device.x, jax.Array) and isinstance(device.y, jax.Array)
        np.testing.assert_array_equal(np.asarray(device.x), host.x)
        np.testing.assert_array_equal(np.asarray(device.y), host.y)
    assert isinstance(digits.train.x, np.ndarray)
    configs = [make_config({"data.name": "digits", "training.seed": s}) for s in (0, 1)]
    for trainer in (Trainer(configs, placed), Trainer(configs[:1], placed)):
        for split in ("train", "val", "test"):
            assert getattr(trainer.data, split).x is getattr(placed, split).x


def test_unknown_dataset_lists_registered_names():
    with pytest.raises(ValueError, match=r"data.name: unknown dataset 'nope'; allowed: .*digits"):
        load_dataset(DataConfig.model_construct(name="nope"))


def test_mnist_family_splits_validation_out_of_the_cached_training_set(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, size=(100, 28, 28, 1), dtype=np.uint8),
              "y_train": rng.integers(0, 10, size=100), "x_test": rng.integers(0, 256, size=(20, 28, 28, 1), dtype=np.uint8),
              "y_test": rng.integers(0, 10, size=20)}
    (tmp_path / "arrays").mkdir()
    np.savez(tmp_path / "arrays" / "mnist.npz", **arrays)
    data = load_dataset(DataConfig(name="mnist", cache_dir=str(tmp_path), val_size=30, train_limit=50))
    assert (len(data.train), len(data.val), len(data.test)) == (50, 30, 20)
    assert data.input_shape == (784,) and data.num_classes == 10
    np.testing.assert_allclose(data.test.x, arrays["x_test"].reshape(20, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.test.y, arrays["y_test"])
    train = {r.tobytes() for r in (arrays["x_train"].reshape(100, -1) / 255.0).astype(np.float32)}
    assert rows(data.train) <= train and rows(data.val) <= train and not (rows(data.train) & rows(data.val))


def test_missing_data_folder_says_what_to_set(monkeypatch, tmp_path):
    from jaxmlp.data.tfds import DataUnavailableError

    monkeypatch.delenv("JAXMLP_DATA_DIR", raising=False)
    with pytest.raises(DataUnavailableError, match=r"mnist: no data folder given. Set data.data_dir .* JAXMLP_DATA_DIR"):
        data_folder(DataConfig(name="mnist"))
    monkeypatch.setenv("JAXMLP_DATA_DIR", str(tmp_path))
    assert data_folder(DataConfig(name="kmnist")) == tmp_path / "kmnist"
    assert data_folder(DataConfig(name="kmnist", data_dir=str(tmp_path / "x"))) == tmp_path / "x"
