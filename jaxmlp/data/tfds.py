"""The MNIST family through tensorflow-datasets, strictly offline.

tensorflow-datasets prepares a dataset once from the original download files found in a
*manual folder* and caches the prepared records in a *cache folder* (its ``data_dir``).
We never let it reach the network: without a prepared cache and without every expected
file in the manual folder, we fail at once with an error that says what to put where.
TensorFlow and tensorflow-datasets are imported only when data is actually loaded.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxmlp.data.errors import DataError

TFDS_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "kmnist")

# File names registered in tensorflow_datasets/url_checksums/<name>.txt (last column);
# the download manager looks for exactly these names in the manual folder.
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# Where tensorflow-datasets downloads them from (image_classification/mnist.py).
_SOURCE_URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
}
# Silences TensorFlow's C++ start-up messages (INFO/WARNING and the oneDNN notice).
# oneDNN only changes float kernels, and we only decode uint8 images.
_QUIET_TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}

Split = tuple[np.ndarray, np.ndarray]


class DataUnavailableError(DataError, RuntimeError):
    """A dataset cannot be loaded offline; the message says which files to put where."""


def _check_name(name: str) -> None:
    if name not in TFDS_DATASETS:
        raise ValueError(
            f"Unknown tensorflow-datasets dataset {name!r}; allowed: {', '.join(TFDS_DATASETS)}."
        )


def expected_files(name: str) -> tuple[str, ...]:
    """Names of the original download files tfds expects in the manual folder for `name`."""
    _check_name(name)
    return _IDX_FILES


def missing_files(name: str, manual_dir: str | os.PathLike) -> tuple[str, ...]:
    """The expected files of `name` that are not in `manual_dir`."""
    folder = Path(manual_dir)
    return tuple(f for f in expected_files(name) if not (folder / f).is_file())


def unavailable_message(name: str, manual_dir: Path, missing: tuple[str, ...]) -> str:
    folder_state = "" if manual_dir.is_dir() else " (the folder does not exist)"
    listing = "\n".join(
        f"  {f}{' (missing)' if f in missing else ''}" for f in expected_files(name)
    )
    return (
        f"Dataset {name!r} is not prepared in the cache and its original files are not all "
        f"in {manual_dir}{folder_state}. tensorflow-datasets expects these files there:\n"
        f"{listing}\n"
        f"Fix: put the files in {manual_dir} (they are published at {_SOURCE_URLS[name]}), "
        "or point jaxmlp to a folder that has them with the `data.data_dir` option or the "
        "JAXMLP_DATA_DIR environment variable: a folder with one subfolder per dataset, "
        f"e.g. $JAXMLP_DATA_DIR/{name}/."
    )


@contextlib.contextmanager
def _quiet_tensorflow_env() -> Iterator[None]:
    """Set TensorFlow's logging variables while it loads, then restore them for JAX."""
    added = [k for k in _QUIET_TF_ENV if k not in os.environ]
    os.environ.update({k: _QUIET_TF_ENV[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _import_runtime(name: str) -> None:
    """Import what tensorflow-datasets needs to prepare and read data, TensorFlow quietly.

    tensorflow-datasets 4.9.10 imports importlib_resources when preparing but declares it
    only for Python < 3.9 (tensorflow/datasets#11212), so we check it here too.
    """
    try:
        import importlib_resources  # noqa: F401

        with _quiet_tensorflow_env():
            import tensorflow  # noqa: F401
    except ImportError as err:
        raise DataUnavailableError(
            f"Dataset {name!r} needs {err.name or 'TensorFlow'}, which is not importable "
            f"({err}). Fix: pip install 'jaxmlp[tfds]'"
        ) from err


def _is_prepared(builder: Any) -> bool:
    """Whether the cache holds the prepared dataset (checking the folder first keeps tfds quiet)."""
    return builder.data_path.exists() and builder.is_prepared()


def _prepare_offline(builder: Any, manual_dir: Path) -> None:
    """Prepare from the manual folder only; extracted copies go to a temporary folder."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    try:
        # tensorflow-datasets reports its progress on stdout, which belongs to the commands' output
        # (`--json` prints one object there): it goes to stderr instead.
        with tempfile.TemporaryDirectory(prefix="jaxmlp-tfds-") as downloads, \
                contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare(download_dir=downloads, download_config=config)
    except NonMatchingChecksumError as err:
        raise DataUnavailableError(
            f"The files in {manual_dir} are not the original {builder.name!r} files:\n{err}\n"
            f"Fix: replace them with the files published at {_SOURCE_URLS.get(builder.name, 'its source')} "
            "(the MNIST family shares file names: keep each set in its own subfolder, "
            f"e.g. $JAXMLP_DATA_DIR/{builder.name}/)."
        ) from err


def _as_arrays(builder: Any) -> dict[str, Split]:
    """Read the prepared train and test splits as uint8 [N, 28, 28] images and int32 labels."""
    import tensorflow_datasets as tfds

    splits = ("train", "test")
    datasets = builder.as_dataset(split=list(splits), batch_size=-1, as_supervised=True)
    arrays = {}
    for split, (images, labels) in zip(splits, tfds.as_numpy(datasets)):
        arrays[split] = (images[..., 0].astype(np.uint8), labels.astype(np.int32))
    return arrays


def load_tfds(
    name: str, manual_dir: str | os.PathLike, cache_dir: str | os.PathLike
) -> dict[str, Split]:
    """Return {'train': (images, labels), 'test': (images, labels)} for an MNIST-family set.

    Loads from the prepared cache in `cache_dir` when there is one; otherwise prepares it
    offline from the original files in `manual_dir`; otherwise raises DataUnavailableError
    at once, without any network attempt.
    """
    _check_name(name)
    import tensorflow_datasets as tfds

    manual_dir = Path(manual_dir).expanduser().absolute()
    builder = tfds.builder(name, data_dir=os.fspath(Path(cache_dir).expanduser()))
    prepared = _is_prepared(builder)
    if not prepared and (missing := missing_files(name, manual_dir)):
        raise DataUnavailableError(unavailable_message(name, manual_dir, missing))
    _import_runtime(name)
    if not prepared:
        _prepare_offline(builder, manual_dir)
    return _as_arrays(builder)


def _builder(name: str, cache_dir: str | os.PathLike) -> Any:
    """The tensorflow-datasets builder of `name` (or name/config); an unknown name is refused
    with the closest registered names."""
    import difflib

    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=os.fspath(Path(cache_dir).expanduser()))
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split("/")[0]
        close = difflib.get_close_matches(base, tfds.list_builders(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise DataError(f"data.dataset: {name!r} is not a tensorflow-datasets name{hint}; see "
                        "https://www.tensorflow.org/datasets/catalog/overview for the names") from None


def load_any(name: str, manual_dir: str | os.PathLike | None, cache_dir: str | os.PathLike) -> dict[str, Split]:
    """{'train': (inputs, labels), 'test': ...} of any tensorflow-datasets name or name/config
    (the splits it has of these two), prepared once into `cache_dir`; a dataset that needs
    manual files takes them from `manual_dir`."""
    _import_runtime(name)
    import tensorflow_datasets as tfds

    builder = _builder(name, cache_dir)
    if not _is_prepared(builder):
        try:
            _prepare_offline(builder, Path(manual_dir).expanduser().absolute() if manual_dir else None)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - a download that failed, files missing, ...
            raise DataError(f"data.dataset: {name!r} could not be prepared ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}); give its files with data.manual_dir, "
                            "or prepare it into the cache where the network can be reached") from None
    splits = [s for s in ("train", "test") if s in builder.info.splits]
    datasets = builder.as_dataset(split=splits, batch_size=-1, as_supervised=True)
    return {split: (np.asarray(x), np.asarray(y)) for split, (x, y) in zip(splits, tfds.as_numpy(datasets))}
