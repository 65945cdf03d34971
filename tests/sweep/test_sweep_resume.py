"""Interrupted sweeps: SIGKILL mid-sweep then --resume; SIGTERM and Ctrl-C; resume refusing a changed file.

The sweep has three programs (three widths); the middle one trains long enough that the
test can interrupt it after the first group has FINISHED and while the second is RUNNING.
"""
from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

import jaxmlp
from jaxmlp.sweep.spec import load_sweep
from tests.helpers.sweep import (THREE_GROUPS, check_models_of_the_best, interrupt_mid_sweep, run_sweep_cli, runs_by_status,
                           start_interruptible, store_client, sweep_runs, wait_until, write_sweep)

pytestmark = pytest.mark.slow

N_VARIANTS = 6


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, new_store, cache) -> SimpleNamespace:
    """The sweep killed with SIGKILL mid-sweep (a process), then resumed by `jaxmlp.run_sweep`."""
    folder = tmp_path_factory.mktemp("resume")
    uri = new_store(folder)
    path = write_sweep(folder, {"name": "resume", **THREE_GROUPS})
    code, client, parents, children = interrupt_mid_sweep(path, uri, cache, signal.SIGKILL)
    before = SimpleNamespace(code=code, parents=parents, children=children, by_status=runs_by_status(children))
    result = jaxmlp.run_sweep(path, tracking_uri=uri, resume=True, compile_cache=cache,
                              snapshot_dir=str(folder / "snapshots"))
    parents, children = sweep_runs(client, "resume")
    return SimpleNamespace(path=path, uri=uri, client=client, before=before, result=result, parents=parents,
                           children=children, keys={v.key for v in load_sweep(path).variants})


def _key(run) -> str:
    return run.data.tags["jaxmlp.variant_key"]


def test_the_kill_left_some_variants_finished_and_others_running(resumed):
    before = resumed.before
    assert before.code == -signal.SIGKILL
    assert [p.info.status for p in before.parents] == ["RUNNING"]  # nobody could close it
    finished = before.by_status.get("FINISHED", set())
    assert 2 <= len(finished) < N_VARIANTS and before.by_status.get("RUNNING")


def test_resume_finishes_under_the_same_parent(resumed):
    assert resumed.result.ok, resumed.result.failures + resumed.result.tracking_errors
    (parent,) = resumed.parents
    assert parent.info.run_id == resumed.before.parents[0].info.run_id
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in resumed.children} == {parent.info.run_id}
    assert parent.data.metrics["n_variants"] == N_VARIANTS and parent.data.metrics["n_failed"] == 0


def test_resume_trains_only_the_missing_variants_and_every_variant_finishes_once(resumed):
    finished_before = {_key(c): c.info.run_id for c in resumed.before.children if c.info.status == "FINISHED"}
    finished_now = [c for c in resumed.children if c.info.status == "FINISHED"]
    assert sorted(_key(c) for c in finished_now) == sorted(resumed.keys)  # each variant exactly once
    now = {_key(c): c.info.run_id for c in finished_now}
    assert {k: now[k] for k in finished_before} == finished_before  # kept, not trained again
    before_ids = {c.info.run_id for c in resumed.before.children}
    trained_again = {_key(c) for c in resumed.children if c.info.run_id not in before_ids}
    assert trained_again == resumed.keys - set(finished_before)
    for run in finished_now:
        history = resumed.client.get_metric_history(run.info.run_id, "val_loss")
        assert len(history) == int(run.data.metrics["stopped_epoch"]) == int(run.data.params["training.epochs"])


def test_resume_logs_models_also_for_settings_finished_before_the_kill(resumed):
    """The best model of each setting and of the sweep are chosen among all finished variants, not only
    those trained by the resuming process."""
    check_models_of_the_best(resumed.client, resumed.parents[0], resumed.children)


def test_runs_left_running_by_the_killed_process_are_now_killed(resumed):
    left_running = resumed.before.by_status["RUNNING"]
    statuses = {c.info.run_id: c for c in resumed.children}
    for run_id in left_running:
        assert statuses[run_id].info.status == "KILLED"
        assert statuses[run_id].data.tags["jaxmlp.failure_reason"] == "left RUNNING by an interrupted sweep"
    assert len(resumed.children) == N_VARIANTS + len(left_running)
    assert "RUNNING" not in runs_by_status(resumed.children)


def test_resume_of_a_finished_sweep_with_only_a_comment_added_trains_nothing(resumed, cache, tmp_path):
    path = tmp_path / "resume.yaml"
    path.write_text("# the same sweep, commented\n" + resumed.path.read_text().replace("\n", "  # note\n", 1))
    before = {c.info.run_id: c.info.status for c in sweep_runs(resumed.client, "resume")[1]}
    result = jaxmlp.run_sweep(path, tracking_uri=resumed.uri, resume=True, compile_cache=cache)
    assert result.ok and list(result.frame()["status"]) == ["FINISHED"] * N_VARIANTS
    assert result.parent_run_id == resumed.parents[0].info.run_id
    assert result.notices == [f"nothing to do: parent run {result.parent_run_id} already holds every variant of "
                              f"{path} and its summary (status FINISHED); nothing was logged"]
    parents, children = sweep_runs(resumed.client, "resume")
    assert {c.info.run_id: c.info.status for c in children} == before
    assert [p.info.status for p in parents] == ["FINISHED"]


def test_resume_refuses_a_changed_sweep_file(resumed, cache, tmp_path):
    path = tmp_path / "resume.yaml"
    path.write_text(resumed.path.read_text().replace("seeds: 2", "seeds: 3"))
    before = {c.info.run_id: c.info.status for c in sweep_runs(resumed.client, "resume")[1]}
    result = run_sweep_cli(path, "--resume", "--tracking-uri", resumed.uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 2
    assert result.err.startswith(f"error: {path}: its content changed since parent run "
                                 f"{resumed.parents[0].info.run_id} was started")
    assert "Restore the file, or run without --resume" in result.err
    parents, children = sweep_runs(resumed.client, "resume")
    assert {c.info.run_id: c.info.status for c in children} == before
    assert [(p.info.run_id, p.info.status) for p in parents] == [(resumed.parents[0].info.run_id, "FINISHED")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_mark_unfinished_runs_killed(tmp_path, cache, signum):
    path = write_sweep(tmp_path, {"name": f"interrupted-{signum.name.lower()}", **THREE_GROUPS})
    code, _, parents, children = interrupt_mid_sweep(path, f"sqlite:///{tmp_path}/mlflow.db", cache, signum)
    log = path.with_suffix(".log").read_text()
    assert code == 128 + signum, log[-3000:]  # 130 for Ctrl-C, 143 for SIGTERM
    assert "interrupted: unfinished runs were marked KILLED; continue with --resume" in log
    by_status = runs_by_status(children)
    assert set(by_status) == {"FINISHED", "KILLED"}, by_status
    assert len(by_status["FINISHED"]) == 2 and len(by_status["KILLED"]) == 2  # group one done, group two not
    for run in children:
        if run.info.status == "KILLED":
            assert run.data.tags["jaxmlp.failure_reason"] == "interrupted"
            assert run.data.params["training.epochs"] == "1500"
    (parent,) = parents
    assert parent.info.status == "KILLED" and parent.data.tags["jaxmlp.failure_reason"] == "interrupted"


def test_a_signal_swallowed_by_a_gc_callback_still_interrupts_at_the_next_epoch(tmp_path):
    """Python ignores exceptions raised in gc callbacks (JAX has one): the runner remembers the
    signal, and its next check raises KeyboardInterrupt."""
    import gc

    from jaxmlp.sweep.runner import Options, SweepRunner

    runner = SweepRunner(load_sweep(write_sweep(tmp_path, {"name": "gc-swallow", **THREE_GROUPS})), [],
                         Options(tracking=False, progress=False))
    runner.interrupts.check()  # nothing received yet

    def callback(phase, info):
        if phase == "start" and not runner.interrupts.received:
            runner.interrupts.handler(signal.SIGTERM, None)

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert runner.interrupts.received == [signal.SIGTERM]
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        runner.interrupts.check()


@pytest.mark.parametrize("phase", ["imports", "store", "children"])
def test_ctrl_c_in_each_early_phase_ends_the_sweep_with_130_and_no_run_left_running(tmp_path, cache, phase):
    """Ctrl-C while jaxmlp, JAX and MLflow import (no store yet), once the store holds the
    parent run (the program compiles), once child runs exist: the sweep ends with 130 (never
    trains to the end), no traceback from the tracking process, and no run stays RUNNING. Each
    phase is checked to have been hit when the signal is sent."""
    import time

    path = write_sweep(tmp_path, {"name": "early", **THREE_GROUPS})
    uri, log, database = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "early.log", tmp_path / "mlflow.db"

    def runs() -> tuple[list, list]:  # (the store is opened only once the sweep has created it)
        return sweep_runs(store_client(uri), "early", settled=False) if database.exists() else ([], [])

    process = start_interruptible(path, uri, cache, log)
    try:
        if phase == "imports":
            time.sleep(0.4)
            assert not database.exists(), "the store was opened within 0.4 s: the imports phase was missed"
        else:
            wait_until(lambda: bool(runs()[0 if phase == "store" else 1]), f"the {phase} phase", process, log)
        os.kill(process.pid, signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    parents, children = runs()
    if phase == "imports":
        assert not database.exists(), text[-3000:]  # nothing was logged
    else:
        assert parents and (children or phase == "store"), text[-3000:]
    assert not [r for r in parents + children if r.info.status == "RUNNING"]
