"""Tests for the offline tensorflow-datasets loader of the MNIST family."""

from __future__ import annotations

import gzip
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

from tests.helpers import MNIST_FILES


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


def _idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic, then one int32 per dimension), read with numpy."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.mark.slow
def test_real_mnist_prepared_once_loads_from_its_cache_as_the_original_files(mnist_sweep, mnist_dir, tmp_path,
                                                                            monkeypatch):
    """The tensorflow-datasets cache the sweep prepared (conftest's `mnist_sweep`) is read back
    without the original files, and holds exactly their images and labels (in its own order)."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    data = load_tfds("mnist", empty, mnist_sweep.cache / "tfds")
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    for split, prefix, n in (("train", "train", 60000), ("test", "t10k", 10000)):
        images, labels = data[split]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int32
        want_images = _idx(mnist_dir / f"{prefix}-images-idx3-ubyte.gz")
        want_labels = _idx(mnist_dir / f"{prefix}-labels-idx1-ubyte.gz")
        assert want_images.shape == (n, 28, 28)

        def pairs(x, y):  # each (image, label) as bytes, sorted: equal as multisets, whatever the order
            return sorted(xi.tobytes() + bytes([yi]) for xi, yi in zip(x, y.astype(np.uint8)))
        assert pairs(images, labels) == pairs(want_images, want_labels)


def test_wrong_files_name_the_fix(tmp_path):
    for f in MNIST_FILES:
        (tmp_path / f).write_bytes(b"not the real file")
    with pytest.raises(DataUnavailableError, match="own subfolder") as err:
        load_tfds("fashion_mnist", tmp_path, tmp_path / "cache")
    assert str(tmp_path) in str(err.value) and "fashion-mnist" in str(err.value)
