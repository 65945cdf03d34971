"""MNIST end to end through the sweep: the shared IDX files -> tensorflow-datasets (offline)
-> the .npz cache -> a 50k/10k/10k split -> a short training (the session fixture `mnist_sweep` of conftest.py). Skipped when the files
are absent."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_mnist_sweep_json_output_is_one_object_while_it_prepares_the_data(mnist_sweep):
    json.loads(mnist_sweep.result.out)


@pytest.mark.slow
def test_mnist_sweep_prepares_caches_splits_and_trains(mnist_sweep):
    result, tmp_path, cache, data = mnist_sweep.result, mnist_sweep.tmp_path, mnist_sweep.cache, mnist_sweep.data
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
