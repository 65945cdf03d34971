"""Dataset registry: named datasets split into train / validation / test; the user's own
files (csv, parquet, npz) and any tensorflow-datasets set (tfds) through `tables`.

Every loader returns host arrays; `Dataset.on_device()` places each split on the device
once. Inputs are normalised (images to [0, 1], tabular features standardised with
training statistics); regression targets are standardised the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from jaxmlp.config import DataConfig
from jaxmlp.data.errors import DataError  # noqa: F401 - part of the package's surface
from jaxmlp.runtime import cache_root

DEFAULT_VAL_FRACTION = 0.15
MNIST_VAL_SIZE = 10_000


class Split(NamedTuple):
    """Inputs and targets of one split (a pytree, so it can be passed to jitted code)."""

    x: Any
    y: Any

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str  # "classification" or "regression"
    train: Split
    val: Split
    test: Split
    num_classes: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    config: DataConfig | None = None  # the data section it was loaded from (set by `load_dataset`)

    @classmethod
    def from_arrays(cls, x: Any, y: Any, *, task: str = "auto", val_size: float | None = None,
                    test_size: float = 0.2, split_seed: int = 0, feature_names: list[str] | None = None,
                    name: str | None = None, cache_dir: str | None = None) -> "Dataset":
        """Your own inputs `x` [n, ...] and targets `y` [n] (class labels of any type, or
        numbers), split and standardised like the built-in tables. The arrays are kept in
        the cache by their digest (an .npz file that `config` names), so sweeps, checkpoints
        and `--resume` find the same data again."""
        from jaxmlp.data.tables import arrays_config

        arrays = {"x": np.asarray(x), "y": np.asarray(y)}
        if feature_names is not None:
            arrays["columns"] = np.asarray(feature_names, dtype=str)
        return load_dataset(arrays_config(arrays, name or "arrays", task=task, val_size=val_size,
                                          test_size=test_size, split_seed=split_seed, cache_dir=cache_dir))

    @classmethod
    def from_frame(cls, frame: Any, target: str, *, features: list[str] | None = None, task: str = "auto",
                   val_size: float | None = None, test_size: float = 0.2, split_seed: int = 0,
                   name: str | None = None, cache_dir: str | None = None) -> "Dataset":
        """A pandas DataFrame's `features` (default: every column but `target`) and `target`,
        checked as a CSV file is (numeric features, no missing values), then as `from_arrays`."""
        from jaxmlp.data.tables import frame_arrays

        arrays = frame_arrays(frame, target, tuple(features) if features else None, "<DataFrame>")
        return cls.from_arrays(arrays["x"], arrays["y"], task=task, val_size=val_size, test_size=test_size,
                               split_seed=split_seed, feature_names=arrays["columns"].tolist(), name=name,
                               cache_dir=cache_dir)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def n_outputs(self) -> int:
        return self.num_classes if self.task == "classification" else 1

    def on_device(self) -> "Dataset":
        """The same dataset with every split as device arrays (placed once, reused by all variants)."""
        import jax

        put = lambda s: Split(jax.device_put(s.x), jax.device_put(s.y))  # noqa: E731
        return replace(self, train=put(self.train), val=put(self.val), test=put(self.test))


#: The datasets of the user's (a file, or any tensorflow-datasets set), read by `tables`.
USER_DATASETS = ("csv", "parquet", "npz", "tfds")


def dataset_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """(input features, outputs, total examples) of a dataset, known without loading it (a
    user's file is read and checked, once)."""
    if cfg.name in USER_DATASETS:
        from jaxmlp.data.tables import table_facts

        facts = table_facts(cfg)
        return (facts["features"], 1 if facts["classes"] is None else len(facts["classes"]),
                sum(map(len, facts["splits"])))
    if cfg.name == "synthetic":
        return cfg.n_features, cfg.n_classes, cfg.n_samples
    return {"digits": (64, 10, 1797), "diabetes": (10, 1, 442)}.get(cfg.name, (784, 10, 70_000))


Loader = Callable[[DataConfig], Dataset]
REGISTRY: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        REGISTRY[name] = fn
        return fn
    return wrap


def dataset_key(cfg: DataConfig) -> str:
    """The one identity of the data a section names, for keeping a loaded dataset (or anything
    derived from it) once per process: its fields as JSON, defaults included, so two sections
    that load the same data share a key."""
    return cfg.model_dump_json()


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load, split and normalise the dataset that `cfg` names (host arrays)."""
    if cfg.name not in REGISTRY:
        raise ValueError(f"data.name: unknown dataset {cfg.name!r}; allowed: {', '.join(REGISTRY)}")
    return replace(REGISTRY[cfg.name](cfg), config=cfg)


def _held_out(n: int, size: float | None, default: float) -> int:
    size = default if size is None else size
    if size == 0:
        return 0  # no validation split: every training sample trains
    count = int(round(n * size)) if size < 1 else int(size)
    if not 0 < count < n:
        raise ValueError(f"data.val_size: {size} leaves no training data out of {n} samples; "
                         "use a fraction in (0, 1) or a count below the number of samples")
    return count


def _split_indices(n: int, n_val: int, n_test: int, seed: int) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(n)
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _moments(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per column (1 where a column is constant)."""
    std = train.std(axis=0)
    return train.mean(axis=0), np.where(std > 0, std, 1.0)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = _moments(train)
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def split_indices(cfg: DataConfig, n: int) -> tuple[np.ndarray, ...]:
    """(train, validation, test) row indices of a table of n rows, as `cfg` splits it."""
    n_test = int(round(n * cfg.test_size))
    n_val = _held_out(n - n_test, cfg.val_size, DEFAULT_VAL_FRACTION)
    return _split_indices(n, n_val, n_test, cfg.split_seed)


def _tabular(cfg: DataConfig, name: str, x: np.ndarray, y: np.ndarray, task: str, *,
             scale: float | None = None, num_classes: int = 0, indices: tuple[np.ndarray, ...] | None = None,
             info: dict[str, Any] | None = None) -> Dataset:
    """Split a table three ways (or by given `indices`); scale by a constant (images) or
    standardise (features). With `info` (a user's table), the features' training mean and
    std are kept in it too, so predictions can take inputs in the user's units."""
    tr, va, te = split_indices(cfg, len(x)) if indices is None else indices
    tr = tr[: cfg.train_limit] if cfg.train_limit else tr
    keep = info is not None
    info = dict(info or {})
    if scale is not None:
        xs = [(x[i] / scale).astype(np.float32) for i in (tr, va, te)]
    else:
        mean, std = _moments(x[tr])
        xs = [((x[i] - mean) / std).astype(np.float32) for i in (tr, va, te)]
        if keep:
            info.update(feature_mean=mean.tolist(), feature_std=std.tolist())
    if task == "regression":
        ys = _standardise(y[tr], y[va], y[te])
        info.update(target_mean=float(y[tr].mean()), target_std=float(y[tr].std()))
    else:
        ys = [y[i].astype(np.int32) for i in (tr, va, te)]
    splits = [Split(a, b) for a, b in zip(xs, ys)]
    return Dataset(name, task, *splits, num_classes=num_classes, info=info)


def _sklearn_data_file(name: str) -> Path:
    """A data file shipped inside scikit-learn, found without importing it (about 1 s)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the embedded datasets come with scikit-learn: pip install scikit-learn")
    return Path(spec.origin).parent / "datasets" / "data" / name


@register("digits")
def digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits (embedded, no download): the rows of its
    `digits.csv.gz`, which `sklearn.datasets.load_digits` returns too, read directly."""
    table = np.loadtxt(_sklearn_data_file("digits.csv.gz"), delimiter=",")
    return _tabular(cfg, "digits", table[:, :-1], table[:, -1].astype(np.int64), "classification", scale=16.0,
                    num_classes=10)


@register("diabetes")
def diabetes(cfg: DataConfig) -> Dataset:
    """scikit-learn's diabetes regression set: 442 patients, 10 features (embedded)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return _tabular(cfg, "diabetes", bunch.data, bunch.target.astype(np.float64), "regression")


@register("synthetic")
def synthetic(cfg: DataConfig) -> Dataset:
    """Deterministic Gaussian clusters: any number of samples, features and classes."""
    rng = np.random.default_rng(cfg.split_seed)
    centers = rng.normal(size=(cfg.n_classes, cfg.n_features)).astype(np.float32)
    labels = rng.integers(cfg.n_classes, size=cfg.n_samples)
    x = centers[labels] + rng.normal(scale=1.5, size=(cfg.n_samples, cfg.n_features)).astype(np.float32)
    return _tabular(cfg, "synthetic", x, labels, "classification", num_classes=cfg.n_classes)


def data_folder(cfg: DataConfig) -> Path:
    """Folder with the original download files: data.data_dir, else $JAXMLP_DATA_DIR/<name>/."""
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    root = os.environ.get("JAXMLP_DATA_DIR")
    if not root:
        from jaxmlp.data.tfds import DataUnavailableError, expected_files

        raise DataUnavailableError(
            f"{cfg.name}: no data folder given. Set data.data_dir to a folder holding "
            f"{', '.join(expected_files(cfg.name))}, or set JAXMLP_DATA_DIR to a folder with a "
            f"'{cfg.name}/' subfolder holding them.")
    return Path(root).expanduser() / cfg.name


def cache_folder(cfg: DataConfig) -> Path:
    """Where prepared data is cached: data.cache_dir, $JAXMLP_CACHE_DIR, or ~/.cache/jaxmlp."""
    return cache_root(cfg.cache_dir)


def _tfds_arrays(cfg: DataConfig) -> dict[str, np.ndarray]:
    """The dataset's official train/test arrays, from a .npz cache or through tensorflow-datasets."""
    cached = cache_folder(cfg) / "arrays" / f"{cfg.name}.npz"
    if cached.exists():
        with np.load(cached) as npz:
            return dict(npz)
    from jaxmlp.data.tfds import load_tfds

    splits = load_tfds(cfg.name, data_folder(cfg), cache_folder(cfg) / "tfds")
    from jaxmlp.data.tables import save_arrays

    arrays = {"x_train": splits["train"][0], "y_train": splits["train"][1],
              "x_test": splits["test"][0], "y_test": splits["test"][1]}
    save_arrays(cached, arrays)
    return arrays


def _mnist_family(cfg: DataConfig) -> Dataset:
    """MNIST-style 28x28 images: validation held out of the official training set."""
    a = _tfds_arrays(cfg)
    n_val = _held_out(len(a["x_train"]), cfg.val_size, MNIST_VAL_SIZE)
    tr, va, _ = _split_indices(len(a["x_train"]), n_val, 0, cfg.split_seed)
    tr = tr[: cfg.train_limit] if cfg.train_limit else tr
    image = lambda x: (x.reshape(len(x), int(np.prod(x.shape[1:]))) / 255.0).astype(np.float32)  # noqa: E731
    label = lambda y: y.astype(np.int32)  # noqa: E731
    return Dataset(
        cfg.name, "classification",
        Split(image(a["x_train"][tr]), label(a["y_train"][tr])),
        Split(image(a["x_train"][va]), label(a["y_train"][va])),
        Split(image(a["x_test"]), label(a["y_test"])),
        num_classes=10,
    )


MNIST_FAMILY = ("mnist", "fashion_mnist", "kmnist")
for _name in MNIST_FAMILY:
    register(_name)(_mnist_family)


def _user_data(cfg: DataConfig) -> Dataset:
    from jaxmlp.data.tables import load_table

    return load_table(cfg)


for _name in USER_DATASETS:
    register(_name)(_user_data)


def split_sizes(cfg: DataConfig) -> tuple[int, int, int]:
    """(train, validation, test) examples of a dataset, known without loading it; raises the
    ValueError loading would raise for a split that leaves no training data."""
    if cfg.name in USER_DATASETS:
        from jaxmlp.data.tables import table_facts

        n_train, n_val, n_test = map(len, table_facts(cfg)["splits"])
        return (min(n_train, cfg.train_limit) if cfg.train_limit else n_train), n_val, n_test
    if cfg.name in MNIST_FAMILY:
        n, n_test = 60_000, 10_000
        n_val = _held_out(n, cfg.val_size, MNIST_VAL_SIZE)
    else:
        total = dataset_shape(cfg)[2]
        n_test = int(round(total * cfg.test_size))
        n, n_val = total - n_test, _held_out(total - n_test, cfg.val_size, DEFAULT_VAL_FRACTION)
    n_train = n - n_val
    return (min(n_train, cfg.train_limit) if cfg.train_limit else n_train), n_val, n_test


def check_available(cfg: DataConfig) -> None:
    """Raise DataUnavailableError, saying which files to put where, when the dataset cannot be
    loaded offline: an MNIST-family set with neither a prepared cache nor its original files.
    Cheap (no TensorFlow), so a sweep checks every dataset before it logs or trains anything.
    A user's file is read and checked (DataError), once."""
    if cfg.name in USER_DATASETS and cfg.name != "tfds":
        from jaxmlp.data.tables import table_facts

        table_facts(cfg)
        return
    if cfg.name not in MNIST_FAMILY or (cache_folder(cfg) / "arrays" / f"{cfg.name}.npz").exists():
        return
    from jaxmlp.data.tfds import DataUnavailableError, missing_files, unavailable_message

    if any((cache_folder(cfg) / "tfds" / cfg.name).glob("*/dataset_info.json")):
        return  # prepared by tensorflow-datasets earlier
    folder = data_folder(cfg).absolute()
    missing = missing_files(cfg.name, folder)
    if missing:
        raise DataUnavailableError(unavailable_message(cfg.name, folder, missing))
