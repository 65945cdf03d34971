"""A sweep run to its end, as the sweep command and `jaxmlp.run_sweep` both run it: the runner
on a planned sweep, and what it ended with (`SweepResult`): the records, the summary rows, the
failures and where the sweep is tracked, with its tables as pandas DataFrames."""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

import numpy as np

from jaxmlp import report
from jaxmlp.records import VariantRecord
from jaxmlp.report.frames import frame, history_frame, points_history, variant_row
from jaxmlp.sweep.best import selection_score
from jaxmlp.sweep.plan import Group
from jaxmlp.sweep.runner import Ended, Options, SweepRunner
from jaxmlp.sweep.signals import Interrupts
from jaxmlp.sweep.spec import Sweep

#: The per-epoch metrics a child run's history holds (its final numbers are logged as metrics too;
#: an epoch's wall time goes on the parent, once per group).
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_ece", "learning_rate", "momentum",
                 "dead_fraction_*", "hp/*")


@dataclasses.dataclass(frozen=True)
class SweepResult(Ended):
    """A finished (or resumed) sweep: one record per variant, its summary rows and where it is tracked."""

    sweep: Sweep
    records: list[VariantRecord]
    rows: list[dict[str, Any]]
    failures: list[str]
    tracking_errors: list[str]
    seconds: float
    compile_seconds: float
    n_programs: int
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None
    registered_model_uri: str | None = None
    slot_epochs: int = 0  # epochs of all slots of the parts that ran (this invocation)
    variant_epochs: int = 0  # epochs that trained a variant (this invocation)
    study: Any = None  # an optimised sweep's Optuna study (`optuna.Study`), for the user's own plots
    notices: list[str] = dataclasses.field(default_factory=list)  # what the runner told (the command prints it)
    epoch_histories: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def monitor(self) -> str:
        """The validation metric that selects models (e.g. val_loss)."""
        return self.sweep.variants[0].config.training.early_stopping.monitor

    def frame(self):
        """One row per variant, in sweep order: setting label, run id, swept values, seed, how it
        ended, best validation and test metrics, parameters and seconds."""
        ordered = sorted(self.records, key=lambda r: (r.index is None, r.index or 0))
        return frame({"setting": r.label, "run_id": r.run_id, **variant_row(r)} for r in ordered)

    def ranked(self) -> tuple[str, list[dict[str, Any]]]:
        """The summary rows best first by the seeds' mean validation metric that selects models,
        and the header that says so (`report.best_first`)."""
        return report.best_first(self.records, self.rows, self.monitor)

    def summary(self):
        """One row per setting, best first: mean and std over seeds of the test metric (the
        table the sweep command prints)."""
        return frame(self.ranked()[1])

    def histories(self):
        """A long frame of every variant's per-epoch metrics (setting, run id, seed, epoch,
        `EPOCH_METRICS`), in sweep order: as trained in this invocation, and for the variants
        an earlier invocation of a resumed sweep trained, as the tracking store keeps them."""
        by_key = {r.variant_key: r for r in self.records}
        stored = {r.variant_key: points_history(r.history) for r in self._stored_records(set(by_key))}
        index = {v.key: v.index for v in self.sweep.variants}
        return history_frame([({"setting": r.label, "run_id": r.run_id, "seed": r.seed},
                               stored[key] if key in stored else _epoch_rows(self.epoch_histories.get(key, {})))
                              for key, r in sorted(by_key.items(), key=lambda kr: index[kr[0]])])

    def _stored_records(self, keys: set[str]) -> list[VariantRecord]:
        """The store's records of the variants in `keys` that this invocation did not train
        (none without tracking: nothing else could have trained them)."""
        if self.parent_run_id is None or keys <= set(self.epoch_histories):
            return []
        from jaxmlp.tracking import Tracker

        return [r for r in Tracker(self.tracking_uri).variant_records(self.parent_run_id, EPOCH_METRICS)
                if r.variant_key in keys and r.variant_key not in self.epoch_histories]

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


def _epoch_rows(columns: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """A variant's in-memory history (`epoch_columns`) as one dict per epoch, with the metrics
    a child run keeps (`EPOCH_METRICS`)."""
    kept = [k for k in columns if any(fnmatch.fnmatchcase(k, p) for p in EPOCH_METRICS)]
    return [{"epoch": int(epoch), **{k: float(columns[k][i]) for k in kept}}
            for i, epoch in enumerate(columns.get("epoch", ()))]


def _run_id(future) -> str | None:
    """A child run's id where its run was started (None where the store failed)."""
    try:
        return future.result(timeout=0) if future is not None else None
    except Exception:  # noqa: BLE001 - a run the store never started has no id
        return None


def run_planned(sweep: Sweep, groups: list[Group], options: Options, tracker=None, executor=None,
                interrupts: Interrupts | None = None) -> SweepResult:
    """Train and track a planned sweep (`SweepRunner`), its records with their runs' ids."""
    runner = SweepRunner(sweep, groups, options, tracker, executor, interrupts)
    outcome = runner.run()
    run_ids = runner.runs.run_ids if runner.runs else {}
    records = [dataclasses.replace(r, run_id=r.run_id or _run_id(run_ids.get(r.variant_key)))
               for r in outcome.records]
    return SweepResult(sweep, records, outcome.rows, outcome.failures, outcome.tracking_errors, outcome.seconds,
                       outcome.compile_seconds, len({g.program for g in groups}),
                       runner.tracker.tracking_uri if runner.tracker else None, outcome.experiment_id,
                       outcome.parent_run_id, runner.runs.registered_uri if runner.runs else None,
                       outcome.slot_epochs, outcome.variant_epochs,
                       runner.study.optimizer.study if runner.study else None, outcome.notices, outcome.histories)
