"""`jaxmlp.run_sweep`: a sweep from a dict, a YAML file or a `Sweep`, trained and tracked as
the sweep command does (parent run, one child per variant, models, datasets, histories, lease,
spool), from Python.

The library installs no signal handlers and prints no table, links or progress unless asked
(`progress`; the runner's notices, such as a resume's, still go to stderr): Ctrl-C in a
notebook raises KeyboardInterrupt where Python delivers it, after the runner has marked the
unfinished runs KILLED; `resume=True` continues them.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from jaxmlp.api.inputs import DICT_SOURCE, data_section, dataset_of
from jaxmlp.data import DataError
from jaxmlp.runtime import cache_root
from jaxmlp.bounded_yaml import YamlError, load_bounded_yaml
from jaxmlp.sweep.cli import SNAPSHOT_EVERY
from jaxmlp.sweep.result import SweepResult
from jaxmlp.sweep.signals import Interrupts
from jaxmlp.sweep.spec import Sweep, SweepError, load_sweep, sweep_of, unavailable_data

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


def run_sweep(spec: Any, *, data: Any = None, target: str | None = None, tracking_uri: str | None = None,
              tracking: bool = True, resume: bool = False, register: str | None = None,
              progress: bool = False) -> SweepResult:
    """Train and track every variant of `spec` (a dict with the sweep file's keys, a YAML path,
    or a `Sweep`), on `data` where given (as `fit` takes it; it replaces `base.data`).
    `tracking_uri`: the MLflow store (default as the command's: MLFLOW_TRACKING_URI or
    sqlite:///mlflow.db); `tracking=False` trains and summarises without a store; `resume`
    continues the sweep's newest parent run; `register`: 'NAME' or 'NAME@ALIAS', the sweep's
    best in the Model Registry. Raises SweepError, DataError or StoreUnavailable before
    anything is trained, ResumeRefused where a resume would mix two sweeps."""
    sweep = sweep_from(spec, data, target)
    if problems := unavailable_data(sweep):  # before anything is logged or compiled
        raise DataError("\n".join(problems))
    if tracking and str(sweep.path) == DICT_SOURCE:
        sweep = dataclasses.replace(sweep, path=_dict_file(sweep))
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import jax

    from jaxmlp.sweep.plan import plan_groups
    from jaxmlp.sweep.result import run_planned
    from jaxmlp.sweep.runner import Options

    if sweep.spec.optimize:
        from jaxmlp.sweep.optimize_run import check_optimizable, plan_study

        check_optimizable(sweep)
        groups = [plan_study(sweep, len(jax.devices()))]
    else:
        groups = plan_groups(sweep, len(jax.devices()))
    options = Options(tracking=tracking, tracking_uri=tracking_uri, resume=resume, register=register,
                      progress=progress, snapshot_every=SNAPSHOT_EVERY, snapshot_dir=str(cache_root() / "snapshots"))
    return run_planned(sweep, groups, options, interrupts=NoSignals())
