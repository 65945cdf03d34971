"""A tracked sweep read back: its parent run found by sweep name, experiment or run id, and
one plain record per variant, for the report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from jaxmlp.records import VariantRecord
from jaxmlp.tracking.schema import ROLE_TAG, SWEEP_NAME_TAG, ParentRun
from jaxmlp.tracking.store import Tracker

#: The per-epoch metrics a report draws: learning curves and dead units per hidden layer.
REPORT_HISTORIES = ("train_loss", "val_loss", "dead_fraction_*", "hp/*")


class SweepNotFound(ValueError):
    """No tracked sweep matches; the message names the store and what to pass."""


@dataclass
class TrackedSweep:
    """One invocation of a sweep as tracked: its parent run and one record per variant, in sweep order."""

    name: str
    experiment_id: str
    parent_run_id: str
    note: str
    git_commit: str | None
    sweep_file: str | None
    records: list[VariantRecord]


def one_per_variant(records: Sequence[VariantRecord]) -> list[VariantRecord]:
    """One record per variant: a resumed sweep leaves the KILLED or FAILED run of a variant it trained again."""
    rank = {"FINISHED": 0, "FAILED": 1}
    kept: dict[str, VariantRecord] = {}
    for record in records:
        key = record.variant_key or record.run_id
        if key not in kept or rank.get(record.status, 2) < rank.get(kept[key].status, 2):
            kept[key] = record
    return list(kept.values())


def _parent(tracker: Tracker, name: str, run_id: str | None) -> ParentRun:
    if run_id:
        parent = tracker.parent(run_id)
        if parent is None:
            raise SweepNotFound(f"--run {run_id}: not a sweep's parent run (it has no tag {ROLE_TAG}=parent); "
                                "pass the parent run's id")
        return parent._replace(sweep_name=parent.sweep_name or name)
    experiment = tracker.find_experiment(name)
    if experiment is None:
        raise SweepNotFound(f"no MLflow experiment named {name!r} in {tracker.tracking_uri}; run the sweep first "
                            f"(python -m jaxmlp.sweep FILE --tracking-uri {tracker.tracking_uri}) or pass "
                            "--tracking-uri where it was logged")
    experiment_id, experiment_name = experiment
    parent = tracker.find_parent(experiment_id, experiment_name)
    if parent is None:
        raise SweepNotFound(f"experiment {experiment_name!r} in {tracker.tracking_uri} has no sweep parent run "
                            f"(tag {SWEEP_NAME_TAG}={experiment_name!r}); pass --run PARENT_RUN_ID")
    return parent._replace(sweep_name=experiment_name)


def find_sweep(tracker: Tracker, name_or_experiment_id: str, run_id: str | None = None) -> TrackedSweep:
    """The newest invocation of a sweep (by sweep or experiment name, or experiment id), or
    parent run `run_id`; its records carry the histories a report draws."""
    parent = _parent(tracker, name_or_experiment_id, run_id)
    records = one_per_variant(tracker.variant_records(parent.run_id, REPORT_HISTORIES))
    return TrackedSweep(parent.sweep_name, parent.experiment_id, parent.run_id, parent.note, parent.git_commit,
                        parent.sweep_file, records)
