"""Tests for the offline tensorflow-datasets loader of the MNIST family."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxmlp.data.tfds import (
    TFDS_DATASETS,
    DataUnavailableError,
    expected_files,
    load_tfds,
)

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _data_root() -> Path:
    """$JAXMLP_DATA_DIR, else the shared data folder beside the repository."""
    root = os.environ.get("JAXMLP_DATA_DIR")
    return Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def mnist_dir() -> Path:
    folder = _data_root() / "mnist"
    missing = [f for f in MNIST_FILES if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"MNIST files {missing} not in {folder}; set JAXMLP_DATA_DIR (with mnist/)")
    return folder


@pytest.mark.parametrize("name", TFDS_DATASETS)
def test_expected_files_are_the_idx_files(name):
    assert expected_files(name) == MNIST_FILES


@pytest.mark.parametrize("name", TFDS_DATASETS)
def test_expected_files_match_tfds_registered_checksums(name):
    import tensorflow_datasets as tfds

    registered = {info.filename for info in tfds.builder_cls(name).url_infos.values()}
    assert registered == set(expected_files(name))


@pytest.mark.parametrize("call", [expected_files, lambda n: load_tfds(n, ".", ".")])
def test_unknown_name_lists_allowed_names(call):
    with pytest.raises(ValueError, match="'emnist'") as err:
        call("emnist")
    assert all(name in str(err.value) for name in TFDS_DATASETS)


def test_empty_manual_dir_fails_fast_with_fix(tmp_path):
    manual, cache = tmp_path / "manual", tmp_path / "cache"
    manual.mkdir()
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError) as err:
        load_tfds("mnist", manual, cache)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert str(manual) in message
    assert all(f"{f} (missing)" in message for f in MNIST_FILES)
    assert "JAXMLP_DATA_DIR" in message and "data.data_dir" in message
    assert not cache.exists()


def test_message_marks_only_the_missing_file(tmp_path):
    for f in MNIST_FILES[:3]:
        (tmp_path / f).touch()
    with pytest.raises(DataUnavailableError) as err:
        load_tfds("kmnist", tmp_path, tmp_path / "cache")
    message = str(err.value)
    assert f"{MNIST_FILES[3]} (missing)" in message
    assert not any(f"{f} (missing)" in message for f in MNIST_FILES[:3])
    assert "'kmnist'" in message and "$JAXMLP_DATA_DIR/kmnist/" in message


def test_missing_folder_is_named(tmp_path):
    manual = tmp_path / "nowhere" / "fashion_mnist"
    with pytest.raises(DataUnavailableError, match="does not exist"):
        load_tfds("fashion_mnist", manual, tmp_path / "cache")


def test_missing_tensorflow_says_how_to_install(tmp_path, monkeypatch):
    for f in MNIST_FILES:
        (tmp_path / f).touch()
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(DataUnavailableError, match=r"pip install 'jaxmlp\[tfds\]'"):
        load_tfds("mnist", tmp_path, tmp_path / "cache")


@pytest.mark.slow
def test_real_mnist_prepares_then_loads_from_cache(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    cache, empty = tmp_path / "cache", tmp_path / "empty"
    empty.mkdir()
    data = load_tfds("mnist", mnist_dir, cache)
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data[split]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int32
        assert set(np.unique(labels)) == set(range(10))
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    cached = load_tfds("mnist", empty, cache)
    for split in ("train", "test"):
        np.testing.assert_array_equal(cached[split][0], data[split][0])
        np.testing.assert_array_equal(cached[split][1], data[split][1])


def test_wrong_files_name_the_fix(tmp_path):
    for f in MNIST_FILES:
        (tmp_path / f).write_bytes(b"not the real file")
    with pytest.raises(DataUnavailableError, match="own subfolder") as err:
        load_tfds("fashion_mnist", tmp_path, tmp_path / "cache")
    assert str(tmp_path) in str(err.value) and "fashion-mnist" in str(err.value)
