"""A sweep above `execution.metric_histories_up_to`: every child keeps its params, final
metrics, status and key; only each setting's best keeps its per-epoch history as MLflow
metrics; every history is in the parent's Parquet files and reads back complete, also after
a SIGKILL and --resume."""
from __future__ import annotations

import signal
from collections import defaultdict
from types import SimpleNamespace

import pytest

from jaxmlp.tracking import Tracker, find_sweep

from tests.helpers.sweep import run_tracked, start_sweep, sweep_runs, wait_until, write_sweep

pytestmark = pytest.mark.slow

N_RATES, N_SEEDS = 3, 8  # 24 variants per width: above the bound, in two parts of 16 slots
LARGE = {
    "base": {"data": {"name": "digits"}, "model": {"hidden": [8]},
             "training": {"epochs": 4, "batch_size": 256, "early_stopping": {"patience": None}}},
    "grid": {"optimizer.learning_rate": [0.02 * (i + 1) for i in range(N_RATES)]},
    "seeds": N_SEEDS,
    "execution": {"metric_histories_up_to": 10, "max_variants_per_part": 16},
}


def _run(path, uri, cache, *args) -> int:
    log = path.with_suffix(".log")
    process = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, *args, log=log)
    code = process.wait(timeout=600)
    assert code == 0, log.read_text()[-3000:]
    return code


def _store(uri, name) -> SimpleNamespace:
    tracker = Tracker(uri)
    parents, children = sweep_runs(tracker.client, name)
    newest = max(parents, key=lambda p: p.info.start_time)
    return SimpleNamespace(tracker=tracker, client=tracker.client, parent=newest,
                           children=[c for c in children if c.data.tags["mlflow.parentRunId"] == newest.info.run_id],
                           sweep=find_sweep(tracker, name))


@pytest.fixture(scope="module")
def large(tmp_path_factory, new_store, cache) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("large")
    uri = new_store(folder)
    path = write_sweep(folder, {"name": "large", **LARGE})
    run_tracked(path, cache)  # in this process: what is stored is the point, not the command
    return _store(uri, "large")


def _histories_are_complete(store, n_variants: int) -> None:
    finished = [c for c in store.children if c.info.status == "FINISHED"]
    assert len(finished) == n_variants
    records = {r.variant_key: r for r in store.sweep.records if r.status == "FINISHED"}
    assert len(records) == n_variants
    for child in finished:
        record = records[child.data.tags["jaxmlp.variant_key"]]
        epochs = list(range(1, record.epochs_trained + 1))
        for name in ("train_loss", "val_loss"):
            assert record.history[name][0] == epochs, (name, record.history[name])
        # the history is the engine's: the selected epoch's validation loss is the final best_val_loss
        assert record.history["val_loss"][1][record.best_epoch - 1] == child.data.metrics["best_val_loss"]
        assert "optimizer.learning_rate" in child.data.params and "test_accuracy" in child.data.metrics


def test_every_child_keeps_its_run_and_every_history_reads_back_from_parquet(large):
    _histories_are_complete(large, N_RATES * N_SEEDS)
    files = large.client.list_artifacts(large.parent.info.run_id, "histories")
    assert len(files) == 1 and files[0].is_dir  # one group


def test_only_each_settings_best_keeps_metric_histories_and_they_equal_the_parquet_ones(large):
    by_setting = defaultdict(list)
    for child in large.children:
        by_setting[child.data.tags["jaxmlp.setting"]].append(child)
    stored = large.tracker.parquet_histories(large.parent.info.run_id)
    with_history = []
    for child in large.children:
        points = large.client.get_metric_history(child.info.run_id, "val_loss")
        if points:
            with_history.append(child)
            steps, values = zip(*sorted((m.step, m.value) for m in points))
            assert stored[child.data.tags["jaxmlp.variant_key"]]["val_loss"] == (list(steps), list(values))
    assert len(with_history) == N_RATES
    for child in with_history:
        seeds = by_setting[child.data.tags["jaxmlp.setting"]]
        assert child.data.metrics["best_val_loss"] == min(c.data.metrics["best_val_loss"] for c in seeds)


def test_a_large_sweep_killed_and_resumed_has_every_history(tmp_path, store_uri, cache):
    uri = store_uri
    spec = {"name": "large-resumed", **LARGE, "zip": {"model.hidden": [[8], [12]], "training.epochs": [4, 400]}}
    spec["base"] = {**LARGE["base"], "model": {}}
    path = write_sweep(tmp_path, spec)
    log = tmp_path / "killed.log"
    first = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=log)
    client = Tracker(uri).client
    try:
        def first_group_logged() -> bool:
            parents, _ = sweep_runs(client, "large-resumed", settled=False)
            return bool(parents) and bool(client.list_artifacts(parents[0].info.run_id, "histories"))

        wait_until(first_group_logged, "the first group's histories were logged", first, log, timeout=300)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    parents, _ = sweep_runs(client, "large-resumed", settled=False)
    assert len(client.list_artifacts(parents[0].info.run_id, "histories")) == 1  # killed in the second group
    _run(path, uri, cache, "--resume")
    store = _store(uri, "large-resumed")
    _histories_are_complete(store, 2 * N_RATES * N_SEEDS)
    groups = client.list_artifacts(store.parent.info.run_id, "histories")
    assert len(groups) == 2
