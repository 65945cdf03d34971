"""`jaxmlp.run_sweep`: a sweep from a dict, a YAML file or a `Sweep`, trained and tracked as
the sweep command does (parent run, one child per variant, models, datasets, histories, lease,
spool), from Python; the command (`jaxmlp.commands.sweep`) parses its arguments and calls it.

The library installs no signal handlers and prints nothing unless asked (`progress`): the
runner's notices, such as a resume's, are kept on the result (`SweepResult.notices`) and
logged to the `jaxmlp.sweep` logger, which the command prints. Ctrl-C in a notebook raises
KeyboardInterrupt where Python delivers it, after the runner has marked the unfinished runs
KILLED; `resume=True` continues them.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from jaxmlp.api.inputs import DICT_SOURCE, data_section, dataset_of
from jaxmlp.data import DataError
from jaxmlp.runtime import cache_root, compile_cache_dir, enable_compilation_cache
from jaxmlp.bounded_yaml import YamlError, load_bounded_yaml
from jaxmlp.sweep.signals import Interrupts
from jaxmlp.sweep.spec import Sweep, SweepError, load_sweep, sweep_of, unavailable_data

if TYPE_CHECKING:  # (both import JAX, which a command imports only after its tracking process started)
    from jaxmlp.sweep.plan import Group
    from jaxmlp.sweep.result import SweepResult

#: Default seconds of training between two snapshots of a chunk (the command's --snapshot-every).
SNAPSHOT_EVERY = 300.0
#: What `devices` takes (the command's --devices): shard by network size, on one device, on all.
DEVICES = ("auto", "one", "all")
#: What a count of slots or chunks must be (the command's --max-variants and --chunks say it too).
WHOLE_NUMBER = "give a whole number, 1 or more"


class NoSignals(Interrupts):
    """The runner's interrupts without handlers: Python's own KeyboardInterrupt stops the sweep."""

    def install(self) -> None:
        pass

    def restore(self) -> None:
        pass


def _with_data(raw: Mapping[str, Any], data: Any, target: str | None) -> dict[str, Any]:
    """A sweep mapping whose base trains on `data` (its data section replaced)."""
    given = dataset_of(data, target)
    base = {**(raw.get("base") or {}), "data": data_section(given).model_dump(mode="json", exclude_defaults=True)}
    return {**raw, "base": base}


def _dict_file(sweep: Sweep) -> Path:
    """A dict sweep written as YAML into the cache (`sweeps/<name>-<hash>.yaml`), so its parent
    run holds the sweep file as every tracked sweep does."""
    path = cache_root() / "sweeps" / f"{sweep.spec.name}-{sweep.hash}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(sweep.spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    return path


def sweep_from(spec: Any, data: Any = None, target: str | None = None) -> Sweep:
    """A validated, expanded sweep from a dict (named '<dict>' in errors; data files read
    from the working directory), a YAML path, or a `Sweep`, on `data` where given."""
    if isinstance(spec, Sweep):
        if data is None:
            return spec
        return sweep_of(_with_data(spec.spec.model_dump(mode="json", exclude_defaults=True), data, target),
                        spec.path, folder=spec.path.parent)
    if isinstance(spec, (str, os.PathLike)):
        if data is None:
            return load_sweep(spec)
        path = Path(spec)
        if not path.is_file():
            raise SweepError(f"{path}: no such sweep file")
        try:
            raw = load_bounded_yaml(path) or {}
        except YamlError as err:
            raise SweepError(str(err)) from None
        return sweep_of(_with_data(raw, data, target), path)
    if isinstance(spec, Mapping):
        raw = _with_data(spec, data, target) if data is not None else dict(spec)
        return sweep_of(raw, Path(DICT_SOURCE), DICT_SOURCE, Path.cwd())
    raise SweepError(f"{DICT_SOURCE}: a sweep must be a dict with the sweep file's keys, a YAML path or a Sweep, "
                     f"not {type(spec).__name__}")


def with_execution(sweep: Sweep, devices: str | None = None, max_variants: int | None = None,
                   chunks: int | None = None) -> Sweep:
    """`sweep` with the execution options given (None: the file's) in place of its file's:
    `devices` (one of DEVICES), `max_variants` (slots per program) and `chunks`; SweepError
    naming a bad value and what it takes."""
    if devices is not None and devices not in DEVICES:
        raise SweepError(f"devices={devices!r}: give one of {', '.join(DEVICES)}")
    for name, value in (("max_variants", max_variants), ("chunks", chunks)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SweepError(f"{name}={value!r}: {WHOLE_NUMBER}")
    given = {k: v for k, v in (("devices", devices), ("max_variants_per_program", max_variants),
                               ("chunks", chunks)) if v is not None}
    if not given:
        return sweep
    execution = sweep.spec.execution.model_copy(update=given)
    return dataclasses.replace(sweep, spec=sweep.spec.model_copy(update={"execution": execution}))


def checked(sweep: Sweep, executor: str = "local") -> Sweep:
    """`sweep` where it can train on `executor` ('local' or 'ray'): an optimised sweep's
    parameters and search checked (SweepError)."""
    if sweep.spec.optimize:
        from jaxmlp.sweep.optimize_run import check_optimizable

        check_optimizable(sweep)
        if executor != "local":
            raise SweepError(f"{sweep.path}: optimize: trains its proposals in this process (the sampler waits "
                             f"on each setting); --executor: {executor!r}, use local")
    return sweep


def ray_executor(sweep: Sweep, address: str | None, compile_cache: str):
    """The Ray executor of `sweep` (not connected yet); ImportError where Ray is missing."""
    if not address:  # Ray reads it on import: a local cluster then listens on loopback only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from jaxmlp.sweep.ray_executor import RayExecutor

    return RayExecutor(address, sweep.spec.execution, compile_cache)


def plan_sweep(sweep: Sweep, executor=None) -> list[Group]:
    """The sweep's groups on this process's devices (a study's one program), or on a chunk's
    devices of `executor`'s cluster."""
    import jax

    from jaxmlp.sweep.plan import plan_groups

    if sweep.spec.optimize:
        from jaxmlp.sweep.optimize_run import plan_study

        return [plan_study(sweep, len(jax.devices()))]
    return plan_groups(sweep, executor.plan_devices(len(jax.devices())) if executor else len(jax.devices()))


def run_sweep(spec: Any, *, data: Any = None, target: str | None = None, tracking_uri: str | None = None,
              tracking: bool = True, resume: bool = False, register: str | None = None,
              progress: bool = False, devices: str | None = None, max_variants: int | None = None,
              chunks: int | None = None, executor: str = "local", ray_address: str | None = None,
              compile_cache: str | None = None, snapshot_every: float = SNAPSHOT_EVERY,
              snapshot_dir: str | None = None, interrupts: Interrupts | None = None) -> SweepResult:
    """Train and track every variant of `spec` (a dict with the sweep file's keys, a YAML path,
    or a `Sweep`), on `data` where given (as `fit` takes it; it replaces `base.data`).
    `tracking_uri`: the MLflow store (default as the command's: MLFLOW_TRACKING_URI or
    sqlite:///mlflow.db); `tracking=False` trains and summarises without a store; `resume`
    continues the sweep's newest parent run; `register`: 'NAME' or 'NAME@ALIAS', the sweep's
    best in the Model Registry; `progress`: bars on stderr. `devices` ('auto': by network size,
    'one', 'all'), `max_variants` (at most this many variants training at once in a program,
    its slots; the others queue) and `chunks` (each program's queue split into this many, with
    slots of their own) replace the file's `execution` values where given. `executor`: 'local' (this
    process) or 'ray' (the cluster at `ray_address`, else a local one); `compile_cache`: a
    folder that persists compiled programs (default: JAX's setting); `snapshot_every` seconds
    of training between a chunk's snapshots in `snapshot_dir` (default: the cache's), so that
    a resume goes on from there (0: none). `interrupts`: the signal handlers a command
    installed (default none: Python's KeyboardInterrupt stops the sweep). Raises SweepError,
    DataError, StoreUnavailable or ImportError (Ray) before anything is trained, ResumeRefused
    where a resume would mix two sweeps."""
    sweep = checked(with_execution(sweep_from(spec, data, target), devices, max_variants, chunks), executor)
    interrupts = interrupts or NoSignals()
    interrupts.check()
    if problems := unavailable_data(sweep):  # before anything is logged or compiled
        raise DataError("\n".join(problems))
    if tracking and str(sweep.path) == DICT_SOURCE:
        sweep = dataclasses.replace(sweep, path=_dict_file(sweep))
    cluster = ray_executor(sweep, ray_address, compile_cache_dir(compile_cache)) if executor == "ray" else None
    if cluster is not None:
        cluster.connect()  # before JAX starts its threads: a local cluster's processes start from here
    tracker = None
    if tracking:
        from jaxmlp.tracking import TrackerProcess

        # With a tracking server, MLflow writes two "View run" lines per ended run to stdout; the
        # sweep prints its own links, and with --json its stdout must be one JSON object.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        tracker = TrackerProcess.for_sweep(tracking_uri)  # before JAX: its start overlaps JAX's
    interrupts.check()
    from jaxmlp.sweep.plan import oversized
    from jaxmlp.sweep.result import run_planned
    from jaxmlp.sweep.runner import Options

    groups = plan_sweep(sweep, cluster)
    too_large = None if cluster else oversized(groups)  # (a cluster's workers have their own memory)
    if too_large:
        if tracker is not None:
            tracker.close()
        raise SweepError(f"{sweep.path}: {too_large}")
    if compile_cache:
        enable_compilation_cache(compile_cache)
    options = Options(tracking=tracking, tracking_uri=tracking_uri, resume=resume, register=register,
                      progress=progress, snapshot_every=snapshot_every,
                      snapshot_dir=snapshot_dir or str(cache_root() / "snapshots"))
    interrupts.check()
    return run_planned(sweep, groups, options, tracker, cluster, interrupts)
