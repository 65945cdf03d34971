"""MNIST end to end through the sweep: the shared IDX files -> tensorflow-datasets (offline)
-> the .npz cache -> a 50k/10k/10k split -> a short training. Skipped when the files are absent."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sweep_helpers import compile_cache, run_sweep_cli, write_sweep

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _data_root() -> Path:
    """$JAXMLP_DATA_DIR, else the shared data folder beside the repository."""
    root = os.environ.get("JAXMLP_DATA_DIR")
    return Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> SimpleNamespace:
    """The sweep run once on MNIST from the shared files, with a fresh data cache."""
    root = _data_root()
    missing = [f for f in MNIST_FILES if not (root / "mnist" / f).is_file()]
    if missing:
        pytest.skip(f"MNIST files {missing} not in {root / 'mnist'}; set JAXMLP_DATA_DIR (with mnist/)")
    tmp_path = tmp_path_factory.mktemp("mnist")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("JAXMLP_DATA_DIR", str(root))
        monkeypatch.setenv("JAXMLP_CACHE_DIR", str(tmp_path / "not-this-cache"))  # data.cache_dir comes first
        yield from _run(tmp_path, tmp_path_factory)


def _run(tmp_path, tmp_path_factory):
    cache = tmp_path / "cache"
    data = {"name": "mnist", "train_limit": 512, "cache_dir": str(cache)}
    path = write_sweep(tmp_path, {"name": "mnist-e2e", "base": {
        "data": data, "model": {"hidden": [16]}, "optimizer": {"name": "adam", "learning_rate": 3e-3},
        "training": {"epochs": 3, "batch_size": 64}}, "seeds": [0, 1]})

    result = run_sweep_cli(path, "--no-tracking", "--no-progress", "--json",
                           "--compile-cache", compile_cache(tmp_path_factory))
    yield SimpleNamespace(result=result, tmp_path=tmp_path, cache=cache, data=data)


@pytest.mark.slow
def test_mnist_sweep_json_output_is_one_object_while_it_prepares_the_data(mnist):
    json.loads(mnist.result.out)


@pytest.mark.slow
def test_mnist_sweep_prepares_caches_splits_and_trains(mnist):
    result, tmp_path, cache, data = mnist.result, mnist.tmp_path, mnist.cache, mnist.data
    assert result.code == 0, result.err
    outcome = json.loads(result.out.splitlines()[-1])
    assert (outcome["n_variants"], outcome["n_finished"], outcome["failures"]) == (2, 2, [])
    (row,) = outcome["rows"]
    assert row["n_params"] == 784 * 16 + 16 + 16 * 10 + 10
    assert 0.3 < row["test_accuracy"] <= 1.0  # 512 images, three epochs: far above chance (0.1)

    # what the sweep left behind: tensorflow-datasets' prepared set and the arrays, in data.cache_dir only
    assert any((cache / "tfds" / "mnist").glob("*/dataset_info.json"))
    with np.load(cache / "arrays" / "mnist.npz") as arrays:
        shapes = {k: arrays[k].shape for k in arrays.files}
    assert shapes["x_train"][0] == shapes["y_train"][0] == 60_000 and shapes["x_test"][0] == 10_000
    assert not (tmp_path / "not-this-cache").exists()

    from jaxmlp.config import load_config
    from jaxmlp.data import load_dataset

    full = load_dataset(load_config({"data": {**data, "train_limit": None}}).data)  # from the cache
    assert (len(full.train.x), len(full.val.x), len(full.test.x)) == (50_000, 10_000, 10_000)
    assert full.train.x.shape[1] == 784 and 0.0 <= full.train.x.min() and full.train.x.max() <= 1.0
    assert set(np.unique(full.test.y)) == set(range(10))
    limited = load_dataset(load_config({"data": data}).data)
    assert len(limited.train.x) == 512 and len(limited.val.x) == 10_000
    np.testing.assert_array_equal(limited.train.x, full.train.x[:512])  # the limit cuts the same split
