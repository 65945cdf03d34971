"""`jaxmlp.run_sweep`: a sweep from a dict, a YAML file or a `Sweep`, trained and tracked as
the sweep command does (parent run, one child per variant, models, datasets, histories, lease,
spool), from Python.

The library installs no signal handlers and prints nothing unless asked (`progress`): Ctrl-C
in a notebook raises KeyboardInterrupt where Python delivers it, after the runner has marked
the unfinished runs KILLED; `resume=True` continues them.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from jaxmlp.api.frames import frame, history_frame, points_history, variant_row
from jaxmlp.api.inputs import DICT_SOURCE, data_section, dataset_of
from jaxmlp.data import DataError, check_available
from jaxmlp.records import VariantRecord
from jaxmlp.runtime import cache_root
from jaxmlp.sweep.best import selection_score
from jaxmlp.sweep.bounded_yaml import load_bounded_yaml
from jaxmlp.sweep.signals import Interrupts
from jaxmlp.sweep.spec import Sweep, SweepError, load_sweep, sweep_of

#: The per-epoch metrics a child run's history holds (its final numbers are logged as metrics too).
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "momentum",
                 "epoch_seconds", "dead_fraction_*", "hp/*")
#: Seconds of training between two snapshots of a chunk, as the sweep command's default.
SNAPSHOT_EVERY = 300.0


class NoSignals(Interrupts):
    """The runner's interrupts without handlers: Python's own KeyboardInterrupt stops the sweep."""

    def install(self) -> None:
        pass

    def restore(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A finished (or resumed) sweep: one record per variant, its summary rows and where it is tracked."""

    sweep: Sweep
    records: list[VariantRecord]
    rows: list[dict[str, Any]]
    failures: list[str]
    tracking_errors: list[str]
    seconds: float
    compile_seconds: float
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None
    registered_model_uri: str | None = None

    @property
    def monitor(self) -> str:
        """The validation metric that selects models (e.g. val_loss)."""
        return self.sweep.variants[0].config.training.early_stopping.monitor

    def frame(self):
        """One row per variant, in sweep order: setting label, run id, swept values, seed, how it
        ended, best validation and test metrics, parameters and seconds."""
        return frame({"setting": r.label, "run_id": r.run_id, **variant_row(r)} for r in self._ordered())

    def summary(self):
        """One row per setting, best first by the mean validation metric that selects models:
        mean and std over seeds of the test metric (the table the sweep command prints)."""
        from jaxmlp import report

        return frame(report.best_first(self.records, self.rows, self.monitor)[1])

    def histories(self):
        """A long frame of every variant's per-epoch metrics (setting, run id, seed, epoch,
        metrics), read back from the tracking store (sweeps of up to
        `execution.metric_histories_up_to` variants keep them as metrics)."""
        if self.parent_run_id is None:
            raise ValueError("histories are read from the tracking store; run the sweep with tracking=True")
        from jaxmlp.tracking import Tracker

        records = Tracker(self.tracking_uri).variant_records(self.parent_run_id, EPOCH_METRICS)
        index = {v.key: v.index for v in self.sweep.variants}
        records = sorted((r for r in records if r.variant_key in index), key=lambda r: index[r.variant_key])
        return history_frame([({"setting": r.label, "run_id": r.run_id, "seed": r.seed},
                                points_history(r.history)) for r in records])

    @property
    def best(self) -> dict[str, Any] | None:
        """The row of the variant with the best validation metric at its selected epoch (never a
        test metric); None when none finished with one."""
        by_key = {v.key: v for v in self.sweep.variants}
        scored = [(selection_score(by_key[r.variant_key], r), r.index, r) for r in self.records
                  if r.variant_key in by_key]
        scored = [s for s in scored if s[0] < float("inf")]
        if not scored:
            return None
        record = min(scored, key=lambda s: s[:2])[2]
        return {"setting": record.label, "run_id": record.run_id, **variant_row(record)}

    @property
    def ok(self) -> bool:
        return not self.failures and not self.tracking_errors

    def _ordered(self) -> list[VariantRecord]:
        return sorted(self.records, key=lambda r: (r.index is None, r.index or 0))


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
        return sweep_of(_with_data(load_bounded_yaml(path) or {}, data, target), path)
    if isinstance(spec, Mapping):
        raw = _with_data(spec, data, target) if data is not None else dict(spec)
        return sweep_of(raw, Path(DICT_SOURCE), DICT_SOURCE, Path.cwd())
    raise SweepError(f"{DICT_SOURCE}: a sweep must be a dict with the sweep file's keys, a YAML path or a Sweep, "
                     f"not {type(spec).__name__}")


def check_data(sweep: Sweep) -> None:
    """Raise DataError, naming the sweep and its data section, when a dataset cannot be loaded
    here (before anything is logged or compiled)."""
    for cfg in {v.config.data.model_dump_json(): v.config.data for v in sweep.variants}.values():
        try:
            check_available(cfg)
        except DataError as err:
            raise type(err)(f"{sweep.path}: base.data ({cfg.name}): {err}") from None


def _resolved(future) -> str | None:
    """A child run's id where its run was started (None where the store failed)."""
    try:
        return future.result(timeout=0) if future is not None else None
    except Exception:  # noqa: BLE001 - a run the store never started has no id
        return None


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
    check_data(sweep)
    if tracking and str(sweep.path) == DICT_SOURCE:
        sweep = dataclasses.replace(sweep, path=_dict_file(sweep))
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    import jax

    from jaxmlp.sweep.plan import plan_groups
    from jaxmlp.sweep.runner import Options, SweepRunner

    groups = plan_groups(sweep, len(jax.devices()))
    options = Options(tracking=tracking, tracking_uri=tracking_uri, resume=resume, register=register,
                      progress=progress, snapshot_every=SNAPSHOT_EVERY, snapshot_dir=str(cache_root() / "snapshots"))
    runner = SweepRunner(sweep, groups, options, interrupts=NoSignals())
    outcome = runner.run()
    run_ids = runner.runs.run_ids if runner.runs else {}
    records = [dataclasses.replace(r, run_id=r.run_id or _resolved(run_ids.get(r.variant_key)))
               for r in outcome.records]
    return SweepResult(sweep, records, outcome.rows, outcome.failures, outcome.tracking_errors,
                       outcome.seconds, outcome.compile_seconds,
                       runner.tracker.tracking_uri if runner.tracker else None, outcome.experiment_id,
                       outcome.parent_run_id, runner.runs.registered_uri if runner.runs else None)
