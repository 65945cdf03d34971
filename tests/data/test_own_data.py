"""The user's own data: CSV, Parquet and .npz files in sweep files and in the library, each into a
real sqlite store; every bad-data case refused before anything is compiled or logged."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import jaxmlp
from jaxmlp.data import load_dataset
from jaxmlp.data.tables import file_digest
from jaxmlp.config import load_config

from tests.helpers.sweep import run_sweep_cli, store_client, sweep_runs, write_sweep

LABELS = np.array(["bird", "cat", "dog"])
SMALL = {"model": {"hidden": [8]}, "optimizer": {"learning_rate": 0.01},
         "training": {"epochs": 3, "batch_size": 32}}


def table(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Three numeric features and a string label that depends on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return pd.DataFrame({"size": x[:, 0], "weight": x[:, 1], "age": x[:, 2],
                         "kind": LABELS[np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])]})


def sweep_spec(data: dict, **extra) -> dict:
    return {"name": "own", "base": {"data": data, **SMALL}, "seeds": [0, 1], **extra}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_csv_with_string_labels_trains_tracks_its_digest_and_its_model_returns_labels(tmp_path, store_uri,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    csv = tmp_path / "data" / "animals.csv"
    table().to_csv(csv, index=False)
    path = write_sweep(tmp_path, sweep_spec({"name": "csv", "path": "data/animals.csv", "target": "kind"}))
    uri = store_uri
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--json", "--register", "animals")
    assert result.code == 0, result.err
    client = store_client(uri)
    (parent,), children = sweep_runs(client, "own")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    digest = file_digest(csv)
    assert parent.data.tags["jaxmlp.sweep_hash"].count("-") == 1
    inputs = client.get_run(children[0].info.run_id).inputs.dataset_inputs
    source = json.loads(inputs[0].dataset.source)
    assert (source["path"], source["digest"], source["format"], source["target"]) == (str(csv), digest, "csv", "kind")
    assert [c["name"] for c in json.loads(inputs[0].dataset.schema)["mlflow_colspec"]] == ["size", "weight", "age"]
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(json.loads(result.out)["registered_model_uri"])
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["size", "weight", "age"]
    rows = table(20, seed=1)
    predicted = model.predict(rows[["age", "weight", "size"]])  # columns by name, in any order
    assert len(predicted) == 20 and set(predicted) <= set(LABELS)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
@pytest.mark.parametrize("kind", ["parquet", "npz", "regression-csv"])
def test_parquet_npz_and_regression_files_train_into_sqlite(tmp_path, store_uri, kind):
    frame = table()
    if kind == "parquet":
        path = tmp_path / "animals.parquet"
        frame.to_parquet(path)
        data = {"name": "parquet", "path": str(path), "target": "kind"}
    elif kind == "npz":
        path = tmp_path / "animals.npz"
        np.savez(path, x=frame[["size", "weight", "age"]].to_numpy(), y=np.searchsorted(LABELS, frame["kind"]))
        data = {"name": "npz", "path": str(path)}
    else:
        path = tmp_path / "houses.csv"
        frame.assign(price=3.0 * frame["size"] + 100.0).drop(columns="kind").to_csv(path, index=False)
        data = {"name": "csv", "path": str(path), "target": "price"}
    result = jaxmlp.run_sweep(sweep_spec(data), tracking_uri=store_uri)
    rows = result.frame()
    assert result.ok and list(rows["status"]) == ["FINISHED", "FINISHED"] and rows["run_id"].notna().all()
    metric = "test_loss" if kind == "regression-csv" else "test_accuracy"
    assert np.isfinite(rows[metric]).all()
    client = store_client(result.tracking_uri)
    source = json.loads(client.get_run(rows["run_id"][0]).inputs.dataset_inputs[0].dataset.source)
    assert source["digest"] == file_digest(path)
    loaded = load_dataset(load_config({"data": {**data, "digest": file_digest(path)}}).data)
    assert loaded.task == ("regression" if kind == "regression-csv" else "classification")
    assert np.isclose(loaded.info.get("target_mean", 100.0), 100.0, atol=1.0)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_changed_data_file_is_refused_on_resume_naming_it(tmp_path, store_uri):
    csv = tmp_path / "animals.csv"
    table().to_csv(csv, index=False)
    path = write_sweep(tmp_path, sweep_spec({"name": "csv", "path": "animals.csv", "target": "kind"}, seeds=[0]))
    uri = store_uri
    assert jaxmlp.run_sweep(path, tracking_uri=uri).ok
    table(seed=2).to_csv(csv, index=False)
    with pytest.raises(jaxmlp.ResumeRefused, match=f"{path}: its data file {csv} changed since parent run"):
        jaxmlp.run_sweep(path, tracking_uri=uri, resume=True)
    assert len(sweep_runs(store_client(uri), "own")[1]) == 1  # nothing more was logged


def _bad_files(tmp_path) -> dict:
    """Each bad-data case: (data section, the message's expected parts)."""
    good = table()
    cases = {"missing file": ({"name": "csv", "path": "nowhere.csv", "target": "kind"},
                              ["data.path: nowhere.csv: no such file", str(tmp_path / "nowhere.csv")])}
    files = {
        "missing target": (good, {"target": "knd"}, ["data.target: no column 'knd' (did you mean 'kind'?)",
                                                     "columns: size, weight, age, kind"]),
        "text feature": (good.assign(colour="red"), {}, ["non-numeric feature column(s) colour",
                                                         "categorical features need encoding first"]),
        "missing values": (good.assign(size=good["size"].mask(good.index < 3), age=good["age"].mask(good.index == 5)),
                           {}, ["missing values in column(s) size (3), age (1)"]),
        "one class": (good.assign(kind="cat"), {}, ["data.target kind has one class only ('cat')",
                                                    "classification needs two or more"]),
        "too few rows": (good.head(4), {}, ["4 rows are too few for the splits (data.test_size 0.2, "
                                            "data.val_size None): no "]),
    }
    for name, (frame, extra, parts) in files.items():
        path = tmp_path / f"{name.replace(' ', '_')}.csv"
        frame.to_csv(path, index=False)
        cases[name] = ({"name": "csv", "path": path.name, "target": "kind", **extra}, [str(path), *parts])
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, x=np.zeros((10, 3)), y=np.zeros(9))
    cases["ragged npz"] = ({"name": "npz", "path": ragged.name}, [str(ragged), "x has 10 rows but y has 9"])
    return cases


def test_every_bad_data_case_is_refused_before_anything_is_logged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, (data, parts) in _bad_files(tmp_path).items():
        path = write_sweep(tmp_path, sweep_spec(data), "bad.yaml")
        result = run_sweep_cli(path, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--no-progress")
        assert result.code == 2 and result.out == "", name
        assert result.err.startswith(f"error: {path}: ") and result.err.count("\n") == 1, (name, result.err)
        assert all(part in result.err for part in parts), (name, result.err)
        with pytest.raises(jaxmlp.DataError) as err:
            jaxmlp.run_sweep(sweep_spec(data), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
        assert str(err.value).startswith("<dict>: ") and all(part in str(err.value) for part in parts), name
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_an_unknown_tfds_name_says_what_tensorflow_datasets_has(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(jaxmlp.DataError, match=r"data.dataset: 'mnistt' is not a tensorflow-datasets name "
                                               r"\(did you mean 'mnist'"):
        jaxmlp.run_sweep(sweep_spec({"name": "tfds", "dataset": "mnistt", "cache_dir": str(tmp_path)}),
                         tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_table_is_read_once_and_cached_by_its_digest(tmp_path, monkeypatch):
    csv = tmp_path / "animals.csv"
    table().to_csv(csv, index=False)
    cfg = load_config({"data": {"name": "csv", "path": str(csv), "target": "kind",
                                "cache_dir": str(tmp_path / "cache")}}).data
    first = load_dataset(cfg)
    (cached,) = (tmp_path / "cache" / "arrays").glob("animals-*.npz")
    assert file_digest(csv) in cached.name
    from jaxmlp.data import tables

    tables._prepared.cache_clear()
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: pytest.fail("the cached arrays were not used"))
    again = load_dataset(cfg)
    assert np.array_equal(first.train.x, again.train.x) and first.info["classes"] == list(LABELS)


@pytest.mark.slow  # prepares MNIST through tensorflow-datasets (about half a minute)
def test_the_generic_tfds_path_reads_mnist_offline(mnist_dir, tmp_path, store_uri):
    data = {"name": "tfds", "dataset": "mnist", "manual_dir": str(mnist_dir), "cache_dir": str(tmp_path / "cache"),
            "train_limit": 512}
    result = jaxmlp.run_sweep({"name": "tfds-mnist", "base": {"data": data, **SMALL}}, tracking_uri=store_uri)
    (row,) = result.frame().to_dict("records")
    assert row["status"] == "FINISHED" and row["test_accuracy"] > 0.3  # chance: 0.1
    loaded = load_dataset(load_config({"data": data}).data)
    assert loaded.input_shape == (784,) and float(loaded.train.x.max()) == 1.0 and len(loaded.test) == 10_000


@pytest.mark.slow  # imports TensorFlow and prepares a tensorflow-datasets set (about 20 s)
def test_a_tfds_set_prepared_by_the_test_into_its_data_dir_trains(tmp_path, store_uri):
    tfds = pytest.importorskip("tensorflow_datasets")

    class TinyStripes(tfds.core.GeneratorBasedBuilder):
        """8x8 images of a horizontal, vertical or diagonal stripe; no download."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                                   "label": tfds.features.ClassLabel(num_classes=3)})
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(240, 0), "test": self._generate_examples(60, 1)}

        def _generate_examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                label, image = i % 3, rng.integers(0, 60, size=(8, 8, 1), dtype=np.uint8)
                line = rng.integers(8)
                image[(line, slice(None)) if label == 0 else (slice(None), line) if label == 1
                      else (np.arange(8), np.arange(8))] = 255
                yield i, {"image": image, "label": label}

    TinyStripes(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    data = {"name": "tfds", "dataset": "tiny_stripes", "data_dir": str(tmp_path / "tfds"),
            "cache_dir": str(tmp_path / "cache")}
    result = jaxmlp.run_sweep({"name": "stripes", "base": {"data": data, **SMALL, "training": {"epochs": 20}}},
                              tracking_uri=store_uri)
    (row,) = result.frame().to_dict("records")
    assert row["status"] == "FINISHED" and row["test_accuracy"] > 0.6  # chance: 1/3
    loaded = load_dataset(load_config({"data": data}).data)
    assert loaded.input_shape == (64,) and (len(loaded.train) + len(loaded.val), len(loaded.test)) == (240, 60)


def test_from_arrays_splits_and_standardises_as_the_built_in_sets(tmp_path):
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    mine = jaxmlp.Dataset.from_arrays(bunch.data, bunch.target, cache_dir=str(tmp_path))
    built_in = load_dataset(load_config({"data": {"name": "diabetes"}}).data)
    assert mine.task == built_in.task == "regression"
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(mine, split).x, getattr(built_in, split).x)
        assert np.array_equal(getattr(mine, split).y, getattr(built_in, split).y)
    assert (mine.info["target_mean"], mine.info["target_std"]) == (built_in.info["target_mean"],
                                                                    built_in.info["target_std"])


def test_labels_of_any_type_map_to_class_indices_and_back(tmp_path):
    x = np.random.default_rng(0).normal(size=(120, 2))
    labels = np.array([30, 10, 20])[np.arange(120) % 3]
    data = jaxmlp.Dataset.from_arrays(x, labels, cache_dir=str(tmp_path))
    assert data.task == "classification" and data.num_classes == 3 and data.info["classes"] == [10, 20, 30]
    ys = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert ys.dtype == np.int32 and sorted(np.bincount(ys)) == [40, 40, 40]
    assert abs(float(data.train.x.mean())) < 1e-6 and np.allclose(data.train.x.std(0), 1, atol=1e-5)
    forced = jaxmlp.Dataset.from_arrays(x, labels.astype(float), task="regression", cache_dir=str(tmp_path))
    assert forced.task == "regression" and forced.num_classes == 0


@pytest.mark.parametrize("data, message", [
    ({"name": "csv"}, "data.name csv needs data.path and data.target, e.g. {name: csv, path: data/wine.csv"),
    ({"name": "npz"}, "data.name npz needs data.path, e.g. {name: npz, path: data/arrays.npz}"),
    ({"name": "tfds"}, "data.name tfds needs data.dataset, e.g. {name: tfds, dataset: emnist/digits}")])
def test_each_source_names_the_keys_it_needs(data, message):
    with pytest.raises(jaxmlp.ConfigError, match=message.replace("{", r"\{").replace(".", r"\.")):
        load_config({"data": data})
