"""Helpers shared by the tests, imported as `tests.helpers.<module>`.

Where the tests find the original MNIST files, in this one place: `$JAXMLP_DATA_DIR/mnist/`,
else `shared/data/mnist/` beside the repository (its parent folder's `shared/data`), where a
checkout made for development keeps them. They are never committed (55 MB of data that is not
ours to redistribute); the tests that need them skip, naming the folder, when they are absent.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[2]

#: The four original MNIST files, as `data_root() / "mnist"` holds them.
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def data_root() -> Path:
    """$JAXMLP_DATA_DIR, else the `shared/data` folder beside the repository."""
    root = os.environ.get("JAXMLP_DATA_DIR")
    return Path(root) if root else ROOT.parent / "shared" / "data"
