"""An `optimize:` sweep trained end to end into a real SQLite store: trials as runs with their
proposals and outcomes, the parent's best so far, proposals reproducible for a file and seed,
the study resumed after SIGKILL, structural keys refused."""
from __future__ import annotations

import json
import math
import re
import signal
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxmlp.sweep.optimize import Proposal, Told
from jaxmlp.records import VariantRecord
from jaxmlp.sweep.errors import SweepError
from jaxmlp.sweep.optimize_run import Study, check_optimizable, describe_study, plan_study
from jaxmlp.sweep.spec import load_sweep
from tests.helpers.sweep import (TINY_BASE, kill_leftovers, run_sweep_cli, start_sweep, store_client,
                           sweep_runs, wait_until, write_sweep)

TRIALS, SEEDS = 6, 2


def _spec(name: str, **changes) -> dict:
    return {"name": name, "base": {**TINY_BASE, "training": {"epochs": 6, "batch_size": 64,
                                                             "early_stopping": {"patience": 2}}},
            "seeds": SEEDS, "optimize": {"trials": TRIALS, "batch": 2, "seed": 3, "params": {
                "optimizer.learning_rate": {"loguniform": [1e-3, 0.5]},
                "model.activation": {"choice": ["relu", "tanh"]},
                "model.dropout": {"uniform": [0.0, 0.4]}}}, **changes}


@pytest.fixture(scope="module")
def study(tmp_path_factory, cache) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("optimize")
    uri = f"sqlite:///{folder}/mlflow.db"
    path = write_sweep(folder, _spec("opt-run"))
    result = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--json", "--compile-cache", cache)
    client = store_client(uri)
    parents, children = sweep_runs(client, "opt-run")
    return SimpleNamespace(path=path, result=result, client=client, parents=parents, children=children,
                           trials=_trials(children))


def _trials(children) -> dict[int, dict]:
    """Per trial: its proposal, its outcome and its runs."""
    out: dict[int, dict] = {}
    for c in children:
        trial = out.setdefault(int(c.data.tags["jaxmlp.trial"]), {"runs": []})
        trial["runs"].append(c)
        trial["proposal"] = json.loads(c.data.tags["jaxmlp.proposal"])
        if "jaxmlp.told" in c.data.tags or "told" not in trial:  # (a run killed before it was told has none)
            trial["told"] = json.loads(c.data.tags["jaxmlp.told"]) if "jaxmlp.told" in c.data.tags else None
    return out


@pytest.mark.slow
def test_every_trial_is_a_child_run_per_seed_tagged_with_its_trial(study):
    assert study.result.code == 0, study.result.err
    assert sorted(study.trials) == list(range(TRIALS))
    for number, trial in study.trials.items():
        runs = trial["runs"]
        assert sorted(int(r.data.tags["seed"]) for r in runs) == list(range(SEEDS))
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert trial["proposal"]["proposal"]["trial"] == number
        values = trial["proposal"]["proposal"]["values"]
        for r in runs:  # the proposal is what the run trained
            assert float(r.data.params["optimizer.learning_rate"]) == pytest.approx(values["optimizer.learning_rate"])
            assert r.data.params["model.activation"] == values["model.activation"]
    outcome = json.loads(study.result.out)
    assert outcome["n_variants"] == TRIALS * SEEDS and len(outcome["rows"]) == TRIALS


def test_the_study_is_told_each_trial_as_the_mean_of_its_seeds_once(study):
    told = sorted((t["told"] for t in study.trials.values()), key=lambda t: t["position"])
    assert [t["position"] for t in told] == list(range(TRIALS))
    for t in told:
        runs = study.trials[t["told"]["trial"]]["runs"]
        assert t["told"]["state"] == "complete"
        mean = np.mean([r.data.metrics["best_val_loss"] for r in runs])
        assert t["told"]["values"] == [pytest.approx(mean, rel=1e-6)]
    # a proposal is asked after the outcomes told before it, never after its own
    for trial in study.trials.values():
        assert trial["proposal"]["proposal"]["asked_after"] <= trial["told"]["position"]


def test_the_parent_records_the_sampler_and_the_best_so_far_after_each_setting(study):
    (parent,) = study.parents
    assert (parent.data.params["optimize.sampler"], parent.data.params["optimize.seed"]) == ("tpe", "3")
    history = study.client.get_metric_history(parent.info.run_id, "best_so_far")
    told = sorted((t["told"] for t in study.trials.values()), key=lambda t: t["position"])
    expected = np.minimum.accumulate([t["told"]["values"][0] for t in told])
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, TRIALS + 1))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(expected)


@pytest.mark.slow
def test_the_same_file_and_seed_give_the_same_proposals(study, tmp_path, cache):
    path = write_sweep(tmp_path, _spec("opt-run"))
    uri = f"sqlite:///{tmp_path}/again.db"
    again = run_sweep_cli(path, "--tracking-uri", uri, "--no-progress", "--compile-cache", cache)
    assert again.code == 0, again.err
    trials = _trials(sweep_runs(store_client(uri), "opt-run")[1])
    assert {n: t["proposal"] for n, t in trials.items()} == {n: t["proposal"] for n, t in study.trials.items()}
    # ... and a new study told the same outcomes in the same order asks them again (what --resume does)
    optimizer = load_sweep(study.path).optimizer()
    proposals = [Proposal(**t["proposal"]["proposal"]) for t in study.trials.values()]
    told = [Told(**{**t["told"]["told"], "values": tuple(t["told"]["told"]["values"])})
            for t in sorted(study.trials.values(), key=lambda t: t["told"]["position"])]
    assert optimizer.replay(proposals, told) == []


def test_run_sweep_trains_an_optimised_sweep_and_hands_over_its_study():
    from jaxmlp import run_sweep

    result = run_sweep(_spec("opt-api"), tracking=False)
    assert result.ok and len(result.frame()) == TRIALS * SEEDS
    trials = result.study.trials
    assert [t.number for t in trials] == list(range(TRIALS)) and {t.state.name for t in trials} == {"COMPLETE"}
    means = result.frame().groupby("setting")["best_val_loss"].mean()  # each setting's seeds, as told
    assert result.study.best_value == pytest.approx(means.min(), rel=1e-6)


def _study_outcomes(result) -> list[tuple]:
    """Per trial in order: its proposal, state and told values; per variant: its numbers."""
    trials = [(t.number, t.params, t.state.name, t.values) for t in result.study.trials]
    frame = result.frame().sort_values(["setting", "seed"])
    return trials + [tuple(frame[c].tolist()) for c in ("setting", "best_val_loss", "stopped_epoch", "test_loss")]


@pytest.mark.slow
@pytest.mark.parametrize("devices", ["all", "one"])
def test_a_study_asks_and_is_told_the_same_tracked_and_untracked(devices, store_uri):
    """The sampler sees the same outcomes in the same order whatever the tracking does, with the
    slots sharded over the two devices of the tests' process or on one."""
    from jaxmlp import run_sweep

    spec = _spec(f"opt-tracked-{devices}", seeds=1)
    spec["base"] = {**spec["base"], "data": {"name": "synthetic", "n_samples": 400, "n_features": 8, "n_classes": 3},
                    "training": {**spec["base"]["training"], "batch_size": 32}}
    untracked = run_sweep(spec, tracking=False, devices=devices)
    tracked = run_sweep(spec, tracking_uri=store_uri, devices=devices)
    assert tracked.ok and untracked.ok and len(untracked.study.trials) == TRIALS
    assert _study_outcomes(tracked) == _study_outcomes(untracked)


def _synthetic_study(tmp_path, name: str, params: dict | None = None, trials: int = 6, seeds: int = 1,
                     **changes) -> Study:
    """A study of the synthetic set (a few steps an epoch), planned and ready to train in this process."""
    spec = _spec(name, seeds=seeds, **changes)
    spec["base"] = {**spec["base"], "data": {"name": "synthetic", "n_samples": 400, "n_features": 8,
                                             "n_classes": 3}}
    spec["base"]["training"] = {**spec["base"]["training"], "batch_size": 32}
    spec["optimize"] = {**spec["optimize"], "trials": trials, "params": params or spec["optimize"]["params"]}
    sweep = load_sweep(write_sweep(tmp_path, spec))
    check_optimizable(sweep)
    return Study(sweep, plan_study(sweep))


def _told(study: Study, data) -> list[dict]:
    """Train the study; what it was told, in order."""
    return [json.loads(payload[1])["told"] for kind, _, payload in study.run(None, data) if kind == "told"]


WIDTHS = {"model.hidden": {"choice": [[8], [16]]}, "optimizer.learning_rate": {"loguniform": [1e-2, 0.5]}}


@pytest.mark.slow
def test_a_study_over_two_widths_trains_each_in_its_program_compiled_once(tmp_path, synthetic_data, monkeypatch):
    from jaxmlp.engine import trainer

    monkeypatch.setattr(trainer, "_COMPILED", {})  # (count this study's compiles only)
    study = _synthetic_study(tmp_path, "opt-widths", WIDTHS, trials=8)
    told = _told(study, synthetic_data)
    assert sorted(t["trial"] for t in told) == list(range(8)) and {t["state"] for t in told} == {"complete"}
    proposed = {p.trial: p.values["model.hidden"] for p in study.optimizer.asked}
    assert sorted(map(tuple, proposed.values())) != sorted(set(map(tuple, proposed.values())))  # widths repeat
    assert {tuple(w) for w in proposed.values()} == {(8,), (16,)}
    results = study.programs.result(0.0, 0.0).variants
    assert len(results) == len(study.group.variants) == 8
    for v, r in zip(study.group.variants, results):  # each trial trained (and shows) the width it was proposed
        width = proposed[v.trial]
        assert tuple(v.config.model.hidden) == tuple(r.config.model.hidden) == tuple(width)
        assert dict(v.setting)["model.hidden"] == width
        kernel = next(leaf for path, leaf in jax.tree_util.tree_leaves_with_path(r.params) if "kernel" in str(path))
        assert kernel.shape == (8, width[0])
    started = study.programs.started
    compiled = [t for t in started if not t.reused_programs]
    assert len(started) > len(compiled) == 2  # one compile per shape: a shape that went idle restarted, reusing it
    assert {t.configs[0].model.hidden[0] for t in compiled} == {8, 16}


@pytest.mark.slow  # a tracked sweep (the tracking process, a model per trial): about a minute on two cores
def test_each_trials_runs_show_the_width_it_trained(tmp_path):
    from jaxmlp import run_sweep

    study = _synthetic_study(tmp_path, "opt-widths-runs", WIDTHS)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_sweep(study.sweep.path, tracking_uri=uri)
    assert result.ok and {t.state.name for t in result.study.trials} == {"COMPLETE"}
    children = sweep_runs(store_client(uri), "opt-widths-runs")[1]
    widths = {t.params["model.hidden"] for t in result.study.trials}  # (Optuna keeps a list choice as JSON)
    assert len(children) == 6 and widths == {"[8]", "[16]"}
    for run in children:
        proposal = json.loads(run.data.tags["jaxmlp.proposal"])["proposal"]
        assert json.loads(run.data.params["model.hidden"]) == proposal["values"]["model.hidden"]


def test_dry_run_lists_each_shape_its_slots_and_memory(tmp_path):
    study = _synthetic_study(tmp_path, "opt-widths-dry", WIDTHS)
    text = describe_study(study.sweep, study.group)
    assert "2 programs, one per shape" in text
    for width in (8, 16):
        line = next(line for line in text.splitlines() if f"shape model.hidden=[{width}]" in line)
        assert "2 slots" in line and "MB" in line


@pytest.mark.parametrize("params, message", [
    ({"training.batch_size": {"int": [16, 64]}}, "optimize.params.training.batch_size: structural (each value "
                                                 "needs a program of its own), so it must be a choice, not int"),
    ({"model.hidden": {"choice": [[4], [8], [16]]}, "training.batch_size": {"choice": [16, 32, 64]}},
     "optimize.params: model.hidden, training.batch_size make 9 shapes, each a program of its own; give at most 8"),
    ({"data.val_size": {"choice": [0.1, 0.2]}}, "optimize.params.data.val_size: the study's programs share one "
                                                "dataset"),
])
def test_structural_keys_must_be_choices_of_a_few_shapes(tmp_path, params, message):
    spec = _spec("opt-structural")
    spec["optimize"]["params"].update(params)
    with pytest.raises(SweepError, match=re.escape(message)):
        check_optimizable(load_sweep(write_sweep(tmp_path, spec)))


@pytest.mark.slow
def test_trials_that_propose_the_same_values_are_trained_and_told_apart(tmp_path, synthetic_data):
    study = _synthetic_study(tmp_path, "opt-same", {"model.activation": {"choice": ["relu", "tanh"]}},
                             trials=5, seeds=2)
    told = _told(study, synthetic_data)
    assert sorted(t["trial"] for t in told) == list(range(5))  # 5 proposals of 2 values: some repeat
    variants = study.group.variants
    assert len(variants) == 10 and len({v.key for v in variants}) == 10
    assert len({(v.config.model.activation, v.seed) for v in variants}) < 10


def test_a_lockstep_search_is_refused_with_the_one_that_works(tmp_path):
    spec = _spec("opt-lockstep", search={"scheduler": "successive_halving", "rungs": [2], "keep": 0.5,
                                         "asynchronous": False})
    result = run_sweep_cli(write_sweep(tmp_path, spec), "--no-tracking")
    assert result.code == 2
    assert "search: optimize: takes the asynchronous successive halving only" in result.err


def test_an_optimised_sweep_trains_in_this_process_not_on_ray(tmp_path):
    result = run_sweep_cli(write_sweep(tmp_path, _spec("opt-ray")), "--executor", "ray", "--no-tracking")
    assert result.code == 2 and "--executor: 'ray', use local" in result.err


def test_dry_run_prints_the_study_its_slots_and_program(tmp_path):
    result = run_sweep_cli(write_sweep(tmp_path, _spec("opt-dry")), "--dry-run")
    assert result.code == 0, result.err
    assert "tpe (seed 3) proposes 6 settings x 2 seed(s), 2 at a time" in result.out
    assert "activations relu, tanh" in result.out and "use_dropout" in result.out
    line = next(line for line in result.out.splitlines() if line.startswith("g00-"))
    assert line.split()[1:2] == ["4"] and "MB" in line  # the first batch's variants, a slot each


HALVING = {"scheduler": "successive_halving", "rungs": [2], "keep": 0.5}
TWO_RUNGS = {**HALVING, "rungs": [2, 4]}


def test_settings_stopped_at_a_rung_are_told_as_pruned(tmp_path, synthetic_data):
    study = _synthetic_study(tmp_path, "opt-halving", trials=TRIALS, seeds=SEEDS, search=HALVING)
    told, pruned = [], set()
    for kind, _, payload in study.run(None, synthetic_data):
        if kind == "told":
            told.append(json.loads(payload[1])["told"])
        if kind == "epoch":
            pruned |= {study.group.variants[i].setting[0][1] for i, r in payload["finished"].items()
                       if r.pruned_at is not None}
    assert len(told) == TRIALS and pruned
    assert {f"trial {t['trial']}" for t in told if t["state"] == "pruned"} == pruned
    assert all(t["rung_epoch"] == 2 for t in told if t["state"] == "pruned")


def _store_at(study: Study, events: list) -> tuple[list[dict], list[VariantRecord]]:
    """What the store holds after `events`: each run's trial tags (`Tracker.trial_tags`) and the
    records of the variants that finished."""
    tags, done = {}, {}
    for kind, _, payload in events:
        if kind == "asked":
            for i in payload[0]:
                tags[study.group.variants[i].key] = {"trial": payload[1][0], "proposal": payload[1][1], "told": None}
        elif kind == "told":
            for key in payload[0]:
                tags[key]["told"] = payload[1]
        elif kind in ("epoch", "stopped"):
            for i, r in (payload["finished"] if kind == "epoch" else payload).items():
                v = study.group.variants[i]
                done[v.key] = r.record(dict(v.setting), variant_key=v.key)
    return sorted(tags.values(), key=lambda t: t["trial"]), list(done.values())


def test_a_study_resumed_under_halving_prunes_as_an_uninterrupted_one(tmp_path, synthetic_data):
    def study() -> Study:
        return _synthetic_study(tmp_path, "opt-halving-resume", trials=12, seeds=1, search=TWO_RUNGS)

    def told(events) -> list[dict]:
        return [json.loads(payload[1]) for kind, _, payload in events if kind == "told"]

    whole = study()
    events = list(whole.run(None, synthetic_data))
    cut = [n for n, (kind, _, _) in enumerate(events) if kind == "told"][2] + 1  # killed after three outcomes
    tags, done = _store_at(whole, events[:cut])
    assert any(t["told"] is None for t in tags)  # trials in flight at the interruption
    resumed = study()
    resumed.restore(tags, done)
    after = told(resumed.run(None, synthetic_data))
    assert told(events[:cut]) + after == told(events)  # every outcome, rung score and epoch as in one go
    assert any(t["told"]["state"] == "pruned" for t in after) and all(t["rungs"] for t in after)
    forgetful = study()  # without the earlier rung scores (a store written before they were kept) ...
    forgetful.restore([{**t, "told": t["told"] and re.sub(r'"rungs": \[.*\]', '"rungs": []', t["told"])}
                       for t in tags], done)
    assert told(events[:cut]) + told(forgetful.run(None, synthetic_data)) != told(events)  # ... it prunes otherwise


@pytest.mark.slow  # two sweeps as processes, one killed: about a minute on two cores
def test_a_study_resumed_after_sigkill_ends_with_the_proposals_of_an_uninterrupted_one(tmp_path, cache):
    """Trials stop after exactly patience + 1 epochs (min_delta 10: only the first epoch
    improves), so their durations differ and the kill leaves some told, others in flight."""
    spec = _spec("opt-resume", seeds=1)
    spec["base"]["training"] = {"epochs": 700, "batch_size": 64,
                                "early_stopping": {"patience": 10, "min_delta": 10.0}}
    spec["optimize"] = {**spec["optimize"], "trials": 8, "params": {
        "optimizer.learning_rate": {"loguniform": [1e-3, 0.5]},
        "training.early_stopping.patience": {"int": [20, 600]}}}
    path, uri = write_sweep(tmp_path, spec), f"sqlite:///{tmp_path}/killed.db"
    client, log = store_client(uri), tmp_path / "killed.log"
    first = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=log)
    try:
        def some_told() -> bool:
            runs = sweep_runs(client, "opt-resume", settled=False)[1]
            return sum("jaxmlp.told" in r.data.tags for r in runs) >= 2 and any(
                r.info.status == "RUNNING" for r in runs)

        wait_until(some_told, "two trials told and others training", first, log)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        kill_leftovers([first])
    before = _trials(sweep_runs(client, "opt-resume")[1])
    assert sum(t["told"] is not None for t in before.values()) < 8
    in_flight = [t["proposal"]["asked_at"] for t in before.values() if t["told"] is None]
    assert in_flight and max(in_flight) > 0  # some asked as a slot freed: they re-enter staggered
    second = start_sweep(path, "--resume", "--tracking-uri", uri, "--compile-cache", cache, log=log)
    try:
        assert second.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        kill_leftovers([second])
    (parent,), children = sweep_runs(client, "opt-resume")
    resumed = _trials(children)
    finished = [int(r.data.tags["jaxmlp.trial"]) for r in children if r.info.status == "FINISHED"]
    assert sorted(finished) == list(range(8))  # exactly `trials` settings, none twice
    whole_uri = f"sqlite:///{tmp_path}/whole.db"
    whole = run_sweep_cli(path, "--tracking-uri", whole_uri, "--no-progress", "--compile-cache", cache)
    assert whole.code == 0, whole.err
    uninterrupted = _trials(sweep_runs(store_client(whole_uri), "opt-resume")[1])
    assert {n: t["proposal"] for n, t in resumed.items()} == {n: t["proposal"] for n, t in uninterrupted.items()}
    def outcomes(trials):
        return {n: (t["told"]["told"]["state"], [round(v, 6) for v in t["told"]["told"]["values"]])
                for n, t in trials.items()}

    assert outcomes(resumed) == outcomes(uninterrupted)  # every variant trained as in one go
    history = client.get_metric_history(parent.info.run_id, "best_so_far")
    assert max(m.step for m in history) == 8 and all(math.isfinite(m.value) for m in history)


@pytest.mark.parametrize("batch, seeds, part, n_parts", [(16, 1, 4, 4), (2, 2, 4, 1), (3, 2, 2, 3), (1, 1, 1, 1)])
def test_a_studys_slots_are_in_parts_of_study_part_slots_where_they_fill_them(tmp_path, batch, seeds, part,
                                                                                n_parts):
    """A slot per variant of the first batch, STUDY_PART to a part where they fill such parts
    (wider than a sweep's tail parts, which cost more per slot-epoch), else in tail parts."""
    from jaxmlp.sweep.optimize_run import STUDY_PART

    spec = _spec(f"opt-parts-{batch}", seeds=seeds)
    spec["optimize"] = {**spec["optimize"], "trials": 16, "batch": batch}
    layout = plan_study(load_sweep(write_sweep(tmp_path, spec))).layout
    assert STUDY_PART == 4
    assert (layout.part_sizes, layout.families[0][1], layout.n_slots) == ((part,), n_parts, batch * seeds)
