"""The runs of a sweep invocation (`jaxmlp.sweep.runs.SweepRuns`) against a real SQLite store:
what a --resume counts as done."""
from __future__ import annotations

import pytest

from jaxmlp.records import VariantRecord
from jaxmlp.sweep.runs import SweepRuns
from jaxmlp.sweep.spec import load_sweep
from jaxmlp.tracking import Tracker

from tests.helpers.sweep import TINY_BASE, write_sweep


@pytest.mark.slow
def test_resume_counts_only_finished_runs_as_done_and_ends_the_running_ones(tmp_path):
    """A run left RUNNING by a killed process is trained again, not counted as done (only a slow
    end-to-end test caught that before)."""
    sweep = load_sweep(write_sweep(tmp_path, {"name": "resumed", "base": TINY_BASE,
                                              "grid": {"model.activation": ["relu", "tanh", "elu"]}}))
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db")
    first = SweepRuns(sweep, [], tracker, resume=False, register=None)
    first.open().result()
    run_ids = {}
    for v in sweep.variants:
        run_ids[v.key] = tracker.start_child(first.experiment_id, first.parent_run_id, v.run_name, variant_key=v.key,
                                             index=v.index, setting=dict(v.setting), seed=v.seed, group="g0",
                                             params=v.config.flat())
    finished, running, failed = sweep.variants
    tracker.finish_child(run_ids[finished.key], VariantRecord(setting=dict(finished.setting), seed=0, status="FINISHED",
                                                              variant_key=finished.key, best_epoch=1, stopped_epoch=2),
                         history=[], files={}, reason=None)
    tracker.finish_child(run_ids[failed.key], VariantRecord(setting=dict(failed.setting), seed=0, status="FAILED",
                                                            variant_key=failed.key), history=[], files={}, reason="x")
    tracker.end_parent(first.parent_run_id, "KILLED")
    first.writer.close()

    second = SweepRuns(sweep, [], tracker, resume=True, register=None)
    opened = second.open().result()
    second.writer.close()
    assert second.parent_run_id == first.parent_run_id
    assert [r.variant_key for r in opened.done] == [finished.key]  # neither the RUNNING nor the FAILED one
    assert tracker.client.get_run(run_ids[running.key]).info.status == "KILLED"
