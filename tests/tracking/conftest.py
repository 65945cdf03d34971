"""What the tracking tests share: one store per module, and modules that tracking processes
started from now on can import (their warm-up hooks)."""
from __future__ import annotations

from typing import Callable

import pytest


@pytest.fixture(scope="module")
def uri(tmp_path_factory, new_store) -> str:
    """One SQLite store for the module (each tracking process only opens it)."""
    return new_store(tmp_path_factory.mktemp("store"))


@pytest.fixture
def importable(tmp_path, monkeypatch) -> Callable[..., None]:
    """`importable(name=source, ...)`: modules written under tmp_path and put on the module path,
    so tracking processes started from now on import them."""
    folder = tmp_path / "importable"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))

    def write(**modules: str) -> None:
        for name, source in modules.items():
            (folder / f"{name}.py").write_text(source)

    return write
