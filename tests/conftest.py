"""Shared fixtures: tiny configurations and a small synthetic dataset placed on the device once;
one persistent compilation cache per test session; tests that share a module's fixture kept
in one pytest-xdist worker."""
from __future__ import annotations

import os

# Two XLA CPU devices, as the sweep command sets up, so the engine's sharded programs are tested too.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()

from typing import Any, Callable, Mapping

import pytest

from jaxmlp.config import RunConfig, load_config, set_dotted
from jaxmlp.data import Dataset, load_dataset
from jaxmlp.runtime import enable_compilation_cache
from sweep_helpers import compile_cache

#: A 3-class problem small enough that one epoch is a handful of steps (272 training samples).
SYNTHETIC = {"name": "synthetic", "n_samples": 400, "n_features": 8, "n_classes": 3}
TINY = {"data": SYNTHETIC, "model": {"hidden": [16]}, "training": {"epochs": 5, "batch_size": 32}}


def tiny_config(overrides: Mapping[str, Any] | None = None, base: Mapping[str, Any] = TINY) -> RunConfig:
    """A validated RunConfig: `base` with dotted overrides, e.g. {'model.dropout': 0.2}."""
    raw = dict(base)
    for dotted, value in (overrides or {}).items():
        raw = set_dotted(raw, dotted, value)
    return load_config(raw)


@pytest.fixture(scope="session")
def make_config() -> Callable[..., RunConfig]:
    return tiny_config


@pytest.fixture(scope="session")
def synthetic_data() -> Dataset:
    """The TINY configuration's dataset, on the device (shared by every engine test)."""
    return load_dataset(tiny_config().data).on_device()


@pytest.fixture(scope="session", autouse=True)
def session_compile_cache(tmp_path_factory) -> str:
    """Every program compiled in the tests' own processes persisted in the session's cache
    (shared by the pytest-xdist workers and the sweeps the tests start), so a program that
    several tests build is compiled once. The folder is new each session: nothing stale."""
    folder = compile_cache(tmp_path_factory)
    enable_compilation_cache(folder)
    return folder


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, a module's tests that use one of its module-scoped fixtures
    (a sweep run once, a Ray cluster) go to one worker, which sets the fixture up once."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures and any(defs[-1].scope == "module" for defs in fixtures.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
