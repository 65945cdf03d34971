"""Programs trained on a Ray cluster (`python -m jaxmlp.sweep FILE --executor ray`).

Design: workers train, the driver logs. Each chunk of a program (each chunk of a group;
under a search, the whole program, whose decisions need all its chunks) is one Ray
streaming-generator task with a resource request (`Request`): it yields the same events as
`train_program` in this process, and the runner consumes them exactly as from the local
executor, so every MLflow call stays in the driver's one tracking process (a sqlite store
works, and no run is ever written by two processes). Every program's chunks are submitted
at the start and run at once as far as the cluster's resources allow; the driver reads the
programs one after another, each program's chunk streams merged as their events arrive, so
a program that trained beside an earlier one is logged, from its buffered events, once the
driver reaches it.

Faults: a chunk whose worker (or node) dies is rerun by Ray (`execution.ray.max_retries`).
Ray hands the consumer each yielded index once: a retry replays the chunk from its start
(same seeds, the same events) and only the events past those already delivered reach the
runner. A variant's run is written at its end only (history, metrics and checkpoint in one
call), so the runs of a chunk whose worker died hold nothing but their parameters until the
retry delivers their end: they continue, FINISHED once, with no metric logged twice.
Ctrl-C (any exception in the driver) cancels the chunks still running.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterator

import ray

from jaxmlp.config import DataConfig, RunConfig
from jaxmlp.data import Dataset, load_dataset
from jaxmlp.engine import Layout
from jaxmlp.runtime import enable_compilation_cache
from jaxmlp.sweep.executors import Event, ProgramTask, train_program
from jaxmlp.sweep.plan import Footprint, Group
from jaxmlp.sweep.spec import ExecutionSpec, RaySpec

GIB = 2**30
#: Host memory of a worker with JAX and the engine loaded, before any program or data.
WORKER_MEMORY = GIB
#: The share of a fractional GPU's slice that JAX preallocates (the rest is the CUDA context's).
GPU_SLICE_USE = 0.9
#: How long the driver waits for the next event before it looks at Ctrl-C again.
WAIT_SECONDS = 1.0
#: The Ray task name of a chunk (`ray::jaxmlp-chunk` in `ps` while it trains).
TASK_NAME = "jaxmlp-chunk"


@dataclasses.dataclass(frozen=True)
class Request:
    """What one Ray task asks the cluster for, and the environment its worker starts JAX in:
    on CPUs one XLA device per requested core; on a fraction of a GPU, a preallocation of
    that fraction only."""

    num_cpus: float
    num_gpus: float
    memory: int
    env: tuple[tuple[str, str], ...]

    def options(self, max_retries: int) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.memory,
                "max_retries": max_retries, "retry_exceptions": False, "name": TASK_NAME,
                "runtime_env": {"env_vars": dict(self.env)}}


def request(config: RunConfig, layout: Layout, devices: int, n_chunks: int, spec: RaySpec, gpus: bool) -> Request:
    """The request of a task training `n_chunks` chunks of one layout at once: the file's
    `execution.ray` numbers, else one GPU where the cluster has GPUs (else a core per XLA
    device), and host memory for a worker, its data and, on CPUs, its programs' states."""
    num_gpus = spec.num_gpus if spec.num_gpus is not None else float(gpus)
    num_cpus = spec.num_cpus or (1.0 if num_gpus else float(devices))
    footprint = Footprint.of(config)
    programs = 0 if num_gpus else n_chunks * devices * footprint.layout_bytes(layout, devices)
    memory = int(spec.memory_gib * GIB) if spec.memory_gib else WORKER_MEMORY + footprint.data + programs
    return Request(num_cpus, num_gpus, memory, worker_env(devices, num_gpus))


def worker_env(devices: int, num_gpus: float) -> tuple[tuple[str, str], ...]:
    """JAX's set-up on the worker, fixed before it starts: the CPU platform with `devices`
    XLA devices, or a GPU (a fraction of one: preallocate only that share of its memory)."""
    if not num_gpus:
        return ("JAX_PLATFORMS", "cpu"), ("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices}")
    if num_gpus < 1:
        return (("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{GPU_SLICE_USE * num_gpus:.3f}"),)
    return ()


@ray.remote
def train_chunk(task: ProgramTask, compile_cache: str) -> Iterator[Event]:
    """On a worker: train the task's chunks on the worker's own copy of the data, yielding
    `train_program`'s events; compiled programs go to the node's persistent cache."""
    enable_compilation_cache(compile_cache)
    yield from train_program(task, _dataset(task.chunks[0][0].data))


@functools.cache
def _dataset(cfg: DataConfig) -> Dataset:
    """A worker's dataset, loaded and placed on its device once per process."""
    return load_dataset(cfg).on_device()


def split(task: ProgramTask) -> list[tuple[ProgramTask, tuple[int, ...]]]:
    """The Ray tasks of a program, each with the program's chunk index of its own chunks:
    one per chunk, or one for the whole program under a search (its decisions see all chunks)."""
    if task.search is not None:
        return [(task, tuple(range(len(task.chunks))))]
    return [(dataclasses.replace(task, chunks=task.chunks[k:k + 1], frozen=task.frozen[k:k + 1],
                                 settings=task.settings[k:k + 1], populations=task.populations[k:k + 1]), (k,))
            for k in range(len(task.chunks))]


def merged(streams: dict) -> Iterator[Event]:
    """The events of several running chunk tasks (generator -> the program's chunk indices of
    its chunks) as they arrive, each in its task's order; tasks still running when this
    stops (an error, Ctrl-C, the consumer gone) are cancelled, their workers ended."""
    pending = dict(streams)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
            for stream in ready:
                try:
                    kind, k, payload = _get(next(stream))
                except StopIteration:
                    del pending[stream]
                    continue
                yield kind, pending[stream][k], payload
    finally:
        for stream in pending:
            ray.cancel(stream, force=True)


def _get(ref) -> Event:
    """An event; a chunk's own error is raised as itself (Ray wraps it with the worker's traceback)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        raise (err.cause if isinstance(err.cause, Exception) else err) from None


class RayExecutor:
    """Chunks train as Ray tasks on the cluster at `address` (None: a local cluster of this
    machine's cores, started at the first program and only on loopback), with the requests of
    `execution.ray`; `compile_cache`: the persistent compilation cache folder of each node."""

    name = "ray"

    def __init__(self, address: str | None, execution: ExecutionSpec, compile_cache: str):
        self.address, self.spec, self.compile_cache = address, execution.ray, compile_cache
        self._started = False
        self._submitted: dict[int, tuple[ProgramTask, dict]] = {}  # id(task) -> (task, its streams), not yet read

    def connect(self) -> None:
        """Join the cluster, or start the local one (no dashboard)."""
        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=True)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=True)
            self._started = True

    def plan_devices(self, local_devices: int) -> int:
        """XLA devices per chunk for the plan: one GPU where the cluster (for the local one,
        this machine) has GPUs; else this machine's devices for the local cluster, a node's
        cores for a joined one (`execution.ray.num_cpus`, or the smallest worker node's)."""
        if self.address:
            self.connect()
        if self._gpus():
            return 1
        if not self.address:
            return local_devices
        if self.spec.num_cpus:
            return max(1, int(self.spec.num_cpus))
        return max(1, int(min(n["Resources"]["CPU"] for n in ray.nodes()
                              if n["Alive"] and n["Resources"].get("CPU", 0) > 0)))

    def _gpus(self) -> bool:
        """Whether chunks get GPUs: the cluster has some (before the local one starts: JAX here runs on GPUs)."""
        if ray.is_initialized():
            return ray.cluster_resources().get("GPU", 0) > 0
        import jax

        return jax.default_backend() == "gpu"

    def submit(self, tasks: list[ProgramTask]) -> None:
        """Start the chunks of every program at once: the cluster trains as many as its resources
        hold, and each program's events wait in its streams until `run` reads them."""
        self.connect()
        gpus = self._gpus()
        for task in tasks:
            self._submitted[id(task)] = task, self._start(task, gpus)

    def run(self, task: ProgramTask, data: Dataset) -> Iterator[Event]:
        """The events of the program's chunks on the cluster (started by `submit`, or now);
        `data` stays here (workers load their own)."""
        if id(task) not in self._submitted:
            self.submit([task])
        return merged(self._submitted.pop(id(task))[1])

    def _start(self, task: ProgramTask, gpus: bool) -> dict:
        """One running Ray task per chunk of the program (generator -> its chunk indices)."""
        streams = {}
        for part, chunks in split(task):
            config = part.chunks[0][0]
            req = request(config, part.layout, part.devices, len(part.chunks), self.spec, gpus)
            streams[train_chunk.options(**req.options(self.spec.max_retries)).remote(part, self.compile_cache)] = chunks
        return streams

    def describe(self, groups: list[Group], search: bool) -> str:
        """The --dry-run text: the cluster (a joined one's resources; the local one is not
        started for it) and each task's request."""
        gpus = self._gpus()
        if self.address:
            resources = ray.cluster_resources()
            cluster = (f"ray cluster at {self.address}: {len(ray.nodes())} node(s), "
                       + ", ".join(f"{k} {_amount(k, v)}" for k, v in sorted(resources.items())
                                   if k in ("CPU", "GPU", "memory", "object_store_memory")))
        else:
            cluster = f"ray: a local cluster of {os.cpu_count()} CPUs is started when the sweep runs"
        lines = [cluster, f"{'task':<14}{'variants':>9}{'CPUs':>6}{'GPUs':>6}{'memory':>10}{'retries':>8}  env"]
        for ids, chunks in _tasks(groups, search):
            g = chunks[0]
            req = request(g.config, g.layout, g.devices, len(chunks), self.spec, gpus)
            env = " ".join(f"{k}={v}" for k, v in req.env)
            lines.append(f"{ids:<14}{sum(len(c.variants) for c in chunks):>9}{req.num_cpus:>6g}{req.num_gpus:>6g}"
                         f"{req.memory / GIB:>7.2f}GiB{self.spec.max_retries:>8}  {env}")
        return "\n".join(lines)

    def discard(self, task: ProgramTask) -> None:
        """Cancel a program submitted and not read (the driver could not take its events, e.g.
        its dataset failed to load here): its chunks stop now, not when the sweep ends."""
        _, streams = self._submitted.pop(id(task), (task, {}))
        for stream in streams:
            ray.cancel(stream, force=True)

    def close(self) -> None:
        """Cancel the programs submitted and never read (Ctrl-C, an error in the driver); stop the
        local cluster (a joined one keeps running)."""
        for task, _ in list(self._submitted.values()):
            self.discard(task)
        if self._started and ray.is_initialized():
            ray.shutdown()


def _tasks(groups: list[Group], search: bool) -> list[tuple[str, list[Group]]]:
    """The Ray tasks of a plan, named by their groups: one per group, one per program under a search."""
    if not search:
        return [(g.id, [g]) for g in groups]
    programs = [[g for g in groups if g.program == p] for p in dict.fromkeys(g.program for g in groups)]
    return [(chunks[0].program, chunks) for chunks in programs]


def _amount(resource: str, value: float) -> str:
    return f"{value / GIB:.1f} GiB" if "memory" in resource else f"{value:g}"
