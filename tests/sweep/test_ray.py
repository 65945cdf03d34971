"""`--executor ray` on a real Ray cluster (a head on loopback, started and stopped here) with a
real `mlflow server`: runs logged as on one machine, equal to the local executor's; a worker
killed mid-chunk and retried; Ctrl-C; --resume; the plan's requests; Ray missing."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxmlp.config import load_config
from jaxmlp.engine import plan_chunks
from jaxmlp.sweep.spec import RaySpec, load_sweep

from tests.helpers.ray import CHUNK_TITLE, LOOPBACK_ENV, ray_head, session_processes, sweep_driver
from tests.helpers.sweep import TINY_BASE, run_sweep_cli, store_client, sweep_runs, wait_until, write_sweep
from tests.sweep.test_sweep_server import _api, _metrics, _tags

os.environ.update(LOOPBACK_ENV)  # before Ray is imported: this process joins the loopback head as 127.0.0.1
ray = pytest.importorskip("ray")
from jaxmlp.sweep.ray_executor import GIB, WORKER_MEMORY, request  # noqa: E402 - needs Ray

#: A chunk long enough to be interrupted: one variant stops early, the other trains 300 epochs.
LONG = {"base": {**TINY_BASE, "training": {"epochs": 300, "batch_size": 64}},
        "grid": {"training.early_stopping.patience": [2, None]}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head of 4 CPUs on loopback, this process joined to it as a driver (the in-process
    sweeps use that connection); left and stopped after the module, even on failure."""
    with ray_head(tmp_path_factory.mktemp("ray"), num_cpus=4) as (address, head):
        ray.init(address=address, log_to_driver=False)
        try:
            yield address, head
        finally:
            ray.shutdown()


def _children(client, name: str) -> list:
    return sweep_runs(client, name)[1]


def test_requests_come_from_the_footprint_and_the_files_overrides():
    config = load_config({"data": {"name": "digits"}, "model": {"hidden": [16]}})
    layout, _ = plan_chunks([config] * 4, 4, 4, 2)
    cpu = request(config, layout, 2, 1, RaySpec(), gpus=False)
    assert (cpu.num_cpus, cpu.num_gpus) == (2, 0) and WORKER_MEMORY < cpu.memory < WORKER_MEMORY + 2**23
    assert dict(cpu.env) == {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert request(config, layout, 2, 3, RaySpec(), gpus=False).memory > cpu.memory  # three chunks at once
    gpu = request(config, layout, 1, 1, RaySpec(), gpus=True)
    assert (gpu.num_cpus, gpu.num_gpus, gpu.env) == (1, 1, ())
    shared = request(config, layout, 1, 1, RaySpec(num_gpus=0.5, num_cpus=3, memory_gib=2), gpus=True)
    assert (shared.num_cpus, shared.num_gpus, shared.memory) == (3, 0.5, 2 * GIB)
    assert dict(shared.env) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.450"}
    assert shared.options(5)["max_retries"] == 5 and shared.options(5)["retry_exceptions"] is False


def test_without_ray_the_command_names_the_extra_and_logs_nothing(tmp_path):
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    path = write_sweep(tmp_path, {"name": "no-ray", "base": TINY_BASE})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "jaxmlp.sweep", str(path), "--executor", "ray",
                          "--tracking-uri", f"sqlite:///{tmp_path}/store.db"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "--executor ray needs Ray" in out.stderr and 'pip install -e ".[ray]"' in out.stderr
    assert not (tmp_path / "store.db").exists() and not (tmp_path / "mlruns").exists()


def test_dry_run_without_an_address_starts_no_cluster_and_shows_the_requests(tmp_path):
    path = write_sweep(tmp_path, {"name": "ray-local-plan", "base": TINY_BASE, "seeds": 2})
    result = run_sweep_cli(path, "--dry-run", "--executor", "ray")
    assert result.code == 0, result.err
    assert f"ray: a local cluster of {os.cpu_count()} CPUs is started when the sweep runs" in result.out
    assert "task" in result.out and "JAX_PLATFORMS=cpu" in result.out


@pytest.mark.slow
def test_dry_run_shows_each_task_its_request_and_the_cluster(cluster, tmp_path):
    address, _ = cluster
    path = write_sweep(tmp_path, {"name": "ray-plan", "base": TINY_BASE, "seeds": 4,
                                  "execution": {"ray": {"num_cpus": 2, "max_retries": 1}}})
    result = run_sweep_cli(path, "--dry-run", "--executor", "ray", "--ray-address", address, "--chunks", 2)
    assert result.code == 0, result.err
    plan, cluster_part = result.out.split(f"ray cluster at {address}: ")
    assert cluster_part.startswith("1 node(s), CPU 4, ")
    groups = [line.split()[0] for line in plan.splitlines() if line.startswith("g0")]
    tasks = [line.split() for line in cluster_part.splitlines() if line.startswith("g0")]
    assert len(groups) == 2 and [t[0] for t in tasks] == groups  # one task per chunk
    for t in tasks:  # variants, CPUs, GPUs, memory, retries, the worker's JAX set-up
        assert t[1:4] == ["2", "2", "0"] and t[4].endswith("GiB") and t[5:] == [
            "1", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2"]


@pytest.mark.slow
def test_sweep_on_ray_into_a_server_logs_as_on_one_machine(cluster, mlflow_server, tmp_path, cache):
    """Two chunks of one program train at once on the cluster; the driver logs to the server."""
    address, _ = cluster
    spec = {"base": TINY_BASE, "grid": {"model.activation": ["relu", "tanh"]}, "seeds": 2,
            "execution": {"ray": {"num_cpus": 2}}}
    common = ("--tracking-uri", mlflow_server, "--no-progress", "--json", "--compile-cache", cache,
              "--chunks", 2)
    on_ray = run_sweep_cli(write_sweep(tmp_path, {"name": "on-ray", **spec}), "--executor", "ray",
                           "--ray-address", address, *common)
    assert on_ray.code == 0, on_ray.err
    local = run_sweep_cli(write_sweep(tmp_path, {"name": "on-one-machine", **spec}), *common)
    assert local.code == 0, local.err
    assert json.loads(on_ray.out)["n_finished"] == 4

    def children(name: str) -> dict[str, dict]:
        experiment = _api(mlflow_server, "experiments/get-by-name", experiment_name=name)["experiment"]
        runs = _api(mlflow_server, "runs/search", {"experiment_ids": [experiment["experiment_id"]],
                                                   "max_results": 100})["runs"]
        parents = [r for r in runs if _tags(r).get("jaxmlp.role") == "parent"]
        assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED" and len(runs) == 5
        nested = [r for r in runs if _tags(r).get("mlflow.parentRunId") == parents[0]["info"]["run_id"]]
        assert len(nested) == 4 and {r["info"]["status"] for r in nested} == {"FINISHED"}
        return {r["info"]["run_name"]: r for r in nested}

    remote, alone = children("on-ray"), children("on-one-machine")
    assert remote.keys() == alone.keys()
    for name, run in remote.items():
        metrics, expected = _metrics(run), _metrics(alone[name])
        for key in ("test_accuracy", "test_loss", "best_val_loss", "best_epoch", "stopped_epoch"):
            assert math.isclose(metrics[key], expected[key], rel_tol=1e-5, abs_tol=1e-6), (name, key)
        for key in ("train_loss", "val_loss", "val_accuracy"):
            history = _api(mlflow_server, "metrics/get-history", run_id=run["info"]["run_id"],
                           metric_key=key)["metrics"]
            assert sorted(int(m["step"]) for m in history) == list(range(1, int(metrics["stopped_epoch"]) + 1))


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_is_retried_and_each_variant_finishes_once(cluster, tmp_path, store_uri, cache):
    address, head = cluster
    path = write_sweep(tmp_path, {"name": "ray-retry", **LONG})
    uri, log = store_uri, tmp_path / "sweep.log"
    client = store_client(uri)
    with sweep_driver(path, "--executor", "ray", "--ray-address", address, "--tracking-uri", uri,
                      "--compile-cache", cache, log=log) as driver:
        def one_ended_one_training() -> bool:
            statuses = [c.info.status for c in sweep_runs(client, "ray-retry", settled=False)[1]]
            return statuses.count("FINISHED") == 1 and statuses.count("RUNNING") == 1
        wait_until(one_ended_one_training, "the early-stopped variant FINISHED, the other RUNNING", driver, log)
        workers = session_processes(head.pid, CHUNK_TITLE)
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        assert driver.wait(timeout=180) == 0, log.read_text()[-3000:]
    assert "will be retried" in log.read_text()
    children = _children(client, "ray-retry")
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_loss")]
        assert steps == list(range(1, int(c.data.metrics["stopped_epoch"]) + 1)), "an epoch logged twice or lost"
    assert sorted(int(c.data.metrics["stopped_epoch"]) for c in children)[1] == 300


@pytest.mark.slow
def test_the_programs_of_a_sweep_train_at_once_on_a_cluster(cluster, tmp_path, store_uri, cache):
    """Two structures (two programs of one chunk) asking 2 CPUs each of a head of 4: both
    chunks train at the same time, and each variant still ends FINISHED once, its history whole."""
    address, head = cluster
    training = {"epochs": 600, "batch_size": 64, "early_stopping": {"patience": None}}
    path = write_sweep(tmp_path, {"name": "ray-programs", "base": {**TINY_BASE, "training": training},
                                  "grid": {"model.hidden": [[16], [24]]}, "execution": {"ray": {"num_cpus": 2}}})
    uri, log = store_uri, tmp_path / "sweep.log"
    with sweep_driver(path, "--executor", "ray", "--ray-address", address, "--tracking-uri", uri,
                      "--compile-cache", cache, log=log) as driver:
        wait_until(lambda: len(session_processes(head.pid, CHUNK_TITLE)) == 2,
                   "the chunks of both programs training at once", driver, log)
        assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
    client = store_client(uri)
    children = _children(client, "ray-programs")
    assert sorted((c.data.params["model.hidden"], c.info.status) for c in children) == [
        ("[16]", "FINISHED"), ("[24]", "FINISHED")]
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_loss")]
        assert steps == list(range(1, 601)) == list(range(1, int(c.data.metrics["stopped_epoch"]) + 1))


@pytest.mark.slow
def test_a_program_discarded_unread_stops_training_on_the_cluster(cluster, tmp_path, cache):
    """A submitted program the driver cannot read (its dataset failed to load there) is
    discarded: its chunk, training on the cluster, stops now rather than when the sweep ends."""
    from jaxmlp.sweep.executors import ProgramTask
    from jaxmlp.sweep.plan import plan_groups
    from jaxmlp.sweep.ray_executor import RayExecutor

    address, head = cluster
    endless = {**TINY_BASE, "training": {"epochs": 100_000, "batch_size": 64, "early_stopping": {"patience": None}}}
    sweep = load_sweep(write_sweep(tmp_path, {"name": "ray-discard", "base": endless}))
    (group,) = plan_groups(sweep)
    task = ProgramTask(chunks=(tuple(v.config for v in group.variants),), frozen=((False,) * len(group.variants),),
                       layout=group.layout, devices=group.devices)
    executor = RayExecutor(address, sweep.spec.execution, cache)
    executor.submit([task])

    def chunks_training() -> int:
        return len(session_processes(head.pid, CHUNK_TITLE))

    try:
        deadline = time.monotonic() + 120
        while not chunks_training():
            assert time.monotonic() < deadline, "the chunk never started on the cluster"
            time.sleep(0.1)
        executor.discard(task)
        deadline = time.monotonic() + 30
        while chunks_training():
            assert time.monotonic() < deadline, "the discarded chunk is still training"
            time.sleep(0.1)
        assert executor._submitted == {}
    finally:
        executor.close()


@pytest.mark.slow
def test_ctrl_c_cancels_the_local_cluster_and_resume_on_a_cluster_finishes(cluster, tmp_path, store_uri, cache):
    """Ctrl-C on a driver with its own local cluster (no --ray-address): exit 130, no run left
    RUNNING, no process of that cluster left; --resume on the shared cluster trains the rest."""
    address, _ = cluster
    path = write_sweep(tmp_path, {"name": "ray-interrupt", **LONG})
    uri, log = store_uri, tmp_path / "sweep.log"
    client = store_client(uri)
    with sweep_driver(path, "--executor", "ray", "--tracking-uri", uri, "--compile-cache", cache, log=log) as driver:
        wait_until(lambda: bool(session_processes(driver.pid, CHUNK_TITLE))
                   and any(c.info.status == "RUNNING" for c in sweep_runs(client, "ray-interrupt", settled=False)[1]),
                   "a chunk training on the local cluster", driver, log)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=60) == 130, log.read_text()[-3000:]
        assert "continue with --resume" in log.read_text()
        deadline = time.monotonic() + 20
        while session_processes(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session_processes(driver.pid) == [], "the local cluster outlived its driver"
    interrupted = _children(client, "ray-interrupt")
    assert "RUNNING" not in {c.info.status for c in interrupted}
    resumed = run_sweep_cli(path, "--resume", "--executor", "ray", "--ray-address", address, "--tracking-uri", uri,
                            "--no-progress", "--compile-cache", cache)
    assert resumed.code == 0, resumed.err
    children = _children(client, "ray-interrupt")
    finished = [c.data.tags["jaxmlp.variant_key"] for c in children if c.info.status == "FINISHED"]
    assert sorted(finished) == sorted(v.key for v in load_sweep(path).variants)
    assert "RUNNING" not in {c.info.status for c in children}
