"""Adaptive search through the sweep command, into a real MLflow store: successive halving
(pruned runs FINISHED and tagged, the same survivors after a SIGKILL and --resume) and
population-based training (lineage and schedules on the runs, reproducible from the seeds)."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import jaxmlp

from tests.helpers.sweep import run_sweep_cli, start_sweep, store_client, sweep_runs, wait_until, write_sweep

HALVING = {
    "base": {"data": {"name": "digits"}, "model": {"hidden": [16]},
             "optimizer": {"name": "sgd", "momentum": 0.0},
             "training": {"epochs": 8, "batch_size": 64, "early_stopping": {"patience": None}}},
    "grid": {"optimizer.learning_rate": [0.001, 0.3, 0.01, 0.1]},
    "seeds": 2,
    "search": {"scheduler": "successive_halving", "rungs": [2, 4], "keep": 0.5, "asynchronous": False},
}


def _children(uri, name):
    client = store_client(uri)
    parents, children = sweep_runs(client, name)
    return client, parents, children


def _pruned(children) -> dict[str, int | None]:
    return {c.data.tags["jaxmlp.variant_key"]: (int(c.data.metrics["pruned_at_epoch"])
                                                if "pruned_at_epoch" in c.data.metrics else None) for c in children}


def _tracked(tmp_path, uri: str, cache, spec: dict):
    """The sweep `spec` run (`jaxmlp.run_sweep`) into the empty store `uri`: its result, the store's
    client and its eight child runs (all FINISHED)."""
    result = jaxmlp.run_sweep(write_sweep(tmp_path, spec), tracking_uri=uri, compile_cache=cache)
    assert result.ok, result.failures + result.tracking_errors
    client, (parent,), children = _children(uri, spec["name"])
    assert len(children) == 8 and {c.info.status for c in children} == {"FINISHED"}
    return result, client, children


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_halving_prunes_the_worst_settings_by_their_logged_validation_curves(tmp_path, store_uri, cache):
    result, client, children = _tracked(tmp_path, store_uri, cache, {"name": "halving", **HALVING})
    pruned = [c for c in children if "pruned_at_epoch" in c.data.metrics]
    assert sum(r.pruned_at is not None for r in result.records) == len(pruned) == 6
    assert all(c.data.tags["jaxmlp.outcome"] == "pruned" for c in pruned)
    assert all("jaxmlp.outcome" not in c.data.tags for c in children if c not in pruned)
    assert {c.data.metrics["stopped_epoch"] for c in pruned} <= {2.0, 4.0}

    def mean_best(setting, upto):  # recomputed from the histories MLflow holds
        runs = [c for c in children if c.data.tags["jaxmlp.setting"] == setting]
        return np.mean([min(m.value for m in client.get_metric_history(c.info.run_id, "val_loss") if m.step <= upto)
                        for c in runs])

    settings = list(dict.fromkeys(c.data.tags["jaxmlp.setting"] for c in children))
    by_rung = {s: {int(c.data.metrics.get("pruned_at_epoch", 0)) for c in children
                   if c.data.tags["jaxmlp.setting"] == s} for s in settings}
    assert all(len(rungs) == 1 for rungs in by_rung.values())  # seeds live or die together
    first = sorted(settings, key=lambda s: mean_best(s, 2))
    assert {s for s in settings if by_rung[s] == {2}} == set(first[2:])
    second = sorted(first[:2], key=lambda s: mean_best(s, 4))
    assert by_rung[second[1]] == {4} and by_rung[second[0]] == {0}
    assert all(len(client.get_metric_history(c.info.run_id, "val_loss")) == c.data.metrics["epochs_trained"]
               for c in children)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_asynchronous_halving_frees_the_slots_of_pruned_settings_for_queued_ones(tmp_path, store_uri, cache):
    spec = {**HALVING, "search": {**HALVING["search"], "asynchronous": True}, "name": "asha"}
    result, client, children = _tracked(tmp_path, store_uri, cache, spec)
    assert result.slot_epochs < 8 * 8  # fewer slots than variants: pruned settings' slots were refilled
    settings = list(dict.fromkeys(c.data.tags["jaxmlp.setting"] for c in children))
    pruned = {s: {c.data.metrics.get("pruned_at_epoch") for c in children if c.data.tags["jaxmlp.setting"] == s}
              for s in settings}
    assert all(len(at) == 1 for at in pruned.values())  # seeds live or die together
    assert 1 <= sum(at != {None} for at in pruned.values()) < len(settings)

    def mean_best(setting, upto):
        runs = [c for c in children if c.data.tags["jaxmlp.setting"] == setting]
        return np.mean([min(m.value for m in client.get_metric_history(c.info.run_id, "val_loss") if m.step <= upto)
                        for c in runs])

    best = min(settings, key=lambda s: mean_best(s, 2))  # first of every ranking at the first rung
    assert pruned[best] == {None} or min(pruned[best]) >= 4


@pytest.mark.slow
def test_resume_after_sigkill_finishes_with_the_same_survivors(tmp_path, cache, new_store):
    """Killed once the first rung's pruned runs FINISHED: the survivors still have most epochs to go."""
    spec = {**HALVING, "base": {**HALVING["base"], "training": {**HALVING["base"]["training"], "epochs": 200}},
            "search": {**HALVING["search"], "rungs": [2, 4, 75]}}
    whole_uri = new_store(tmp_path / "whole")
    whole = write_sweep(tmp_path / "whole", {"name": "halving_kill", **spec})
    assert run_sweep_cli(whole, "--tracking-uri", whole_uri, "--no-progress", "--compile-cache", cache).code == 0
    _, _, uninterrupted = _children(whole_uri, "halving_kill")

    uri = new_store(tmp_path / "killed")
    path = write_sweep(tmp_path / "killed", {"name": "halving_kill", **spec})
    client, log = store_client(uri), path.with_suffix(".log")
    process = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=log)
    try:
        def pruned_once() -> bool:
            children = sweep_runs(client, "halving_kill", settled=False)[1]
            return sum(c.info.status == "FINISHED" for c in children) >= 4
        wait_until(pruned_once, "the first rung's runs FINISHED", process, log)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    result = run_sweep_cli(path, "--resume", "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert result.code == 0, result.err
    _, (parent,), children = _children(uri, "halving_kill")
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 8 and not [c for c in children if c.info.status == "RUNNING"]
    assert _pruned(finished) == _pruned(uninterrupted)
    test_loss = {c.data.tags["jaxmlp.variant_key"]: c.data.metrics["test_loss"] for c in uninterrupted}
    for c in finished:
        assert c.data.metrics["test_loss"] == pytest.approx(test_loss[c.data.tags["jaxmlp.variant_key"]], rel=1e-6)


PBT = {
    "base": {"data": {"name": "digits"}, "model": {"hidden": [16]}, "optimizer": {"name": "sgd", "momentum": 0.5},
             "training": {"epochs": 9, "batch_size": 64, "early_stopping": {"patience": None}}},
    "random": {"samples": 8, "seed": 1, "params": {"optimizer.learning_rate": {"loguniform": [0.001, 0.5]}}},
    "search": {"scheduler": "pbt", "interval": 3, "quantile": 0.25,
               "perturb": {"optimizer.learning_rate": [0.8, 1.25]}, "seed": 7},
}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_pbt_logs_lineage_and_schedules_and_reruns_identically(tmp_path, cache, new_store):
    stores = []
    for name in ("a", "b"):
        uri = new_store(tmp_path / name)
        path = write_sweep(tmp_path / name, {"name": "pbt", **PBT})
        assert run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache).code == 0
        stores.append(_children(uri, "pbt"))
    (client, _, children), (_, _, again) = stores
    lineage = {c.data.tags["jaxmlp.variant_key"]: json.loads(c.data.tags.get("jaxmlp.lineage", "[]")) for c in children}
    assert sum(map(len, lineage.values())) == 4  # two exploit steps (epochs 3 and 6), two members each
    assert {step["epoch"] for steps in lineage.values() for step in steps} == {3, 6}
    index = {c.data.tags["jaxmlp.variant_index"]: c for c in children}
    for c in children:
        lr = {m.step: m.value for m in client.get_metric_history(c.info.run_id, "hp/optimizer.learning_rate")}
        assert sorted(lr) == list(range(1, 10))
        for step in lineage[c.data.tags["jaxmlp.variant_key"]]:
            source = index[str(step["source"])]
            source_lr = {m.step: m.value for m in client.get_metric_history(source.info.run_id,
                                                                               "hp/optimizer.learning_rate")}
            assert lr[step["epoch"] + 1] / source_lr[step["epoch"]] in (pytest.approx(0.8), pytest.approx(1.25))
    assert {c.data.tags["jaxmlp.variant_key"]: (c.data.tags.get("jaxmlp.lineage"), c.data.metrics["test_loss"])
            for c in again} == {c.data.tags["jaxmlp.variant_key"]: (c.data.tags.get("jaxmlp.lineage"),
                                                                    c.data.metrics["test_loss"]) for c in children}
