"""Shared fixtures: tiny configurations and a small synthetic dataset placed on the device once;
one persistent compilation cache and one migrated MLflow store per test session, copied for
each test that needs an empty store; tests that share a module's fixture kept in one
pytest-xdist worker."""
from __future__ import annotations

import functools
import gc
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from typing import Any, Callable, Mapping

import pytest

from jaxmlp.config import RunConfig, load_config, set_dotted
from jaxmlp.data import Dataset, load_dataset
from jaxmlp.runtime import enable_compilation_cache

from tests.helpers import MNIST_FILES, data_root
from tests.helpers.sweep import compile_cache, free_port, run_sweep_cli, write_sweep

def pytest_configure(config) -> None:
    """Two XLA CPU devices, as the sweep command sets up, so the engine's sharded programs are
    tested too (read when JAX starts its backend, at the first computation, after this).

    And programs compiled without LLVM's optimisations, as JAX's own tests compile them
    (`jax_disable_most_optimizations`, set by its environment variable so that the processes
    the tests start compile the same way): compiling is most of the suite's time (its tests
    build hundreds of small programs), and it takes about 40 % less. The numbers differ from
    an optimised program's by float rounding only; the tests compare programs compiled alike,
    or allow for rounding. `JAXMLP_TEST_OPTIMIZED=1` compiles as the commands do."""
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    if os.environ.get("JAXMLP_TEST_OPTIMIZED") != "1":
        import jax

        os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
        jax.config.update("jax_disable_most_optimizations", True)


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
def cache(session_compile_cache) -> str:
    """The session's compilation cache, for the sweeps the tests start in their own processes."""
    return session_compile_cache


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


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, created and migrated once per session: migrating a new
    file costs 1.7 s of CPU, copying a migrated one 0.03 s (as the benchmarks make theirs)."""
    from jaxmlp.bench.common import migrated_store

    return migrated_store(tmp_path_factory.mktemp("migrated-store"))


def copy_store(template: Path, folder: Path, name: str = "mlflow.db") -> str:
    """The URI of a copy of the migrated store `template` at FOLDER/NAME (the folder made if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / name)
    return f"sqlite:///{folder / name}"


@pytest.fixture(scope="session")
def new_store(migrated_store) -> Callable[..., str]:
    """`new_store(folder, name="mlflow.db")`: the URI of an empty, migrated store made there, for
    tests whose store is not in their own tmp_path or not named mlflow.db (module fixtures, two
    stores). Tests of a store's creation itself keep making new files."""
    return functools.partial(copy_store, migrated_store)


@pytest.fixture
def store_uri(new_store, tmp_path) -> str:
    """The URI of an empty, migrated store at tmp_path/mlflow.db."""
    return new_store(tmp_path)


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """After each test module, the programs it compiled in this process are let go (they stay in
    the session's persistent cache): every XLA CPU executable keeps memory mappings, and a
    session that kept them all ran out of them (LLVM: "Cannot allocate memory") half-way."""
    yield
    from jaxmlp.engine import release_compiled

    release_compiled()
    gc.collect()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, a module's tests that use one of its module-scoped fixtures
    (a sweep run once, a Ray cluster) go to one worker, which sets the fixture up once.

    The tests keep the order they are collected in: with the modules that have slow tests
    first (so that the workers would end on unit tests) the whole suite took 1,114 s against
    868-913 s, the tests that mostly wait (processes killed, bounded retries) then waiting
    side by side rather than beside tests that compute."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures and any(defs[-1].scope == "module" for defs in fixtures.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The four original MNIST files' folder; the test is skipped when they are absent."""
    folder = data_root() / "mnist"
    missing = [f for f in MNIST_FILES if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"MNIST files {missing} not in {folder}; set JAXMLP_DATA_DIR (with mnist/)")
    return folder


@pytest.fixture(scope="session")
def mnist_sweep(mnist_dir, tmp_path_factory) -> SimpleNamespace:
    """A short sweep run once on MNIST from the original files, with a fresh data cache (which
    it prepares through tensorflow-datasets): MNIST is prepared once per test session."""
    tmp_path = tmp_path_factory.mktemp("mnist")
    cache = tmp_path / "cache"
    data = {"name": "mnist", "train_limit": 512, "cache_dir": str(cache)}
    path = write_sweep(tmp_path, {"name": "mnist-e2e", "base": {
        "data": data, "model": {"hidden": [16]}, "optimizer": {"name": "adam", "learning_rate": 3e-3},
        "training": {"epochs": 3, "batch_size": 64}}, "seeds": [0, 1]})
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("JAXMLP_DATA_DIR", str(mnist_dir.parent))
        monkeypatch.setenv("JAXMLP_CACHE_DIR", str(tmp_path / "not-this-cache"))  # data.cache_dir comes first
        result = run_sweep_cli(path, "--no-tracking", "--no-progress", "--json",
                               "--compile-cache", compile_cache(tmp_path_factory))
    return SimpleNamespace(result=result, tmp_path=tmp_path, cache=cache, data=data)


@pytest.fixture
def mlflow_server(tmp_path, new_store):
    """A real `mlflow server` on a free loopback port, on a copy of the migrated store, its whole
    process group stopped after the test.

    Server-side job execution is off: it starts seven more processes that outlive a
    terminated `mlflow server` for half a minute.
    """
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "server",
               "--backend-store-uri", new_store(tmp_path, "server.db"),
               "--artifacts-destination", str(tmp_path / "mlartifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
