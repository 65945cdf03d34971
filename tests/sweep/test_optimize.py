"""The `optimize:` section and its Optuna driver, without training: proposals reproducible for a
seed, a rebuilt study going on exactly as an uninterrupted one, TPE finding a known optimum,
conditional parameters never proposed where inactive, and bad sections refused naming the key."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from jaxmlp.records import VariantRecord
from jaxmlp.sweep.optimize import Proposal, Told
from jaxmlp.sweep.spec import SweepError, _digest, load_sweep

from tests.helpers.sweep import TINY_BASE, write_sweep

#: The learning rate that minimises `_loss` (one best value, in the middle of a log range).
BEST_LR = 10 ** -2.5


def _spec(params: dict | None = None, **optimize) -> dict:
    return {"name": "opt", "base": TINY_BASE, "seeds": 2, "optimize": {
        "trials": 24, "batch": 4, "seed": 0, **optimize,
        "params": params or {"optimizer.learning_rate": {"loguniform": [1e-5, 1.0]},
                             "model.activation": {"choice": ["relu", "tanh"]}}}}


def _sweep(tmp_path: Path, spec: dict):
    return load_sweep(write_sweep(tmp_path, spec))


def _loss(values: dict) -> float:
    """A known problem: the squared distance of log10(lr) from -2.5, plus 0.3 for tanh."""
    return (math.log10(values["optimizer.learning_rate"]) + 2.5) ** 2 + 0.3 * (values.get("model.activation") == "tanh")


def _drive(optimizer, queue: list | None = None, stop_after: int | None = None) -> None:
    """Train as slots free: `batch` settings at first, the oldest one finishes first, and each
    finished setting's slot takes the next proposal; stop after `stop_after` outcomes in all.
    A learning rate above 0.3 diverges (failed); one below 1e-4 is pruned at epoch 2."""
    queue = list(optimizer.ask(optimizer.batch) if queue is None else queue)
    while queue and (stop_after is None or len(optimizer.told) < stop_after):
        proposal = queue.pop(0)
        lr, loss = proposal.values["optimizer.learning_rate"], _loss(proposal.values)
        if lr > 0.3:
            optimizer.tell_failed(proposal.trial)
        elif lr < 1e-4:
            optimizer.tell_pruned(proposal.trial, 2, loss)
        else:
            optimizer.tell(proposal.trial, [loss])
        queue += optimizer.ask(1)


def _proposed(optimizer) -> list[tuple[int, dict]]:
    return [(p.trial, p.values) for p in optimizer.asked]


def test_proposals_are_reproducible_for_a_sampler_seed(tmp_path):
    runs = []
    for seed in (0, 0, 1):
        optimizer = _sweep(tmp_path, _spec(seed=seed)).optimizer()
        _drive(optimizer)
        runs.append(_proposed(optimizer))
    assert runs[0] == runs[1]
    assert len(runs[0]) == 24 and [t for t, _ in runs[0]] == list(range(24))
    assert runs[0] != runs[2]


def test_a_rebuilt_study_goes_on_with_the_proposals_of_an_uninterrupted_one(tmp_path):
    sweep = _sweep(tmp_path, _spec())
    uninterrupted = sweep.optimizer()
    _drive(uninterrupted)
    first = sweep.optimizer()
    _drive(first, stop_after=13)  # killed with 4 settings training
    assert len(first.told) == 13 and len(first.asked) == 17
    resumed = sweep.optimizer()
    kept = [Proposal.from_json(p.to_json()) for p in first.asked]  # what the runs in the store keep, as JSON
    told = [Told.from_json(t.to_json()) for t in first.told]
    assert kept == first.asked and told == first.told
    pending = resumed.replay(kept, told)
    assert [p.trial for p in pending] == [13, 14, 15, 16]
    _drive(resumed, pending)
    assert _proposed(resumed) == _proposed(uninterrupted)
    assert sorted(t.trial for t in resumed.told) == list(range(24))  # exactly `trials`, none twice
    assert {t.state for t in resumed.told} == {"complete", "failed", "pruned"}
    assert resumed.ask(4) == [] and resumed.remaining == 0


def test_a_study_whose_proposals_come_out_differently_is_not_rebuilt(tmp_path):
    first = _sweep(tmp_path, _spec()).optimizer()
    _drive(first, stop_after=6)
    other = _sweep(tmp_path, _spec(seed=5)).optimizer()
    with pytest.raises(SweepError, match=r"the study cannot be rebuilt: trial 0 proposed .* then, .* now"):
        other.replay(first.asked, first.told)


def test_a_trials_number_is_part_of_its_variants_keys_but_not_of_other_sweeps(tmp_path):
    sweep = _sweep(tmp_path, _spec())
    same = {"optimizer.learning_rate": 0.01, "model.activation": "relu"}
    first, second = (sweep.proposal_variants(Proposal(n, same, 0)) for n in (3, 7))
    assert [v.config for v in first] == [v.config for v in second]  # the same values, seed by seed ...
    assert not {v.key for v in first} & {v.key for v in second}  # ... but no variant key in common
    grid = load_sweep(write_sweep(tmp_path, {"name": "grid", "base": TINY_BASE, "seeds": 2,
                                             "grid": {"model.activation": ["relu", "tanh"]}}))
    assert [v.key for v in grid.variants] == [_digest(v.config.to_dict()) for v in grid.variants]


def test_tpe_finds_a_known_optimum_better_than_its_first_batch(tmp_path):
    params = {"optimizer.learning_rate": {"loguniform": [1e-5, 1.0]}}
    optimizer = _sweep(tmp_path, _spec(params, trials=40, batch=8)).optimizer()
    _drive(optimizer)
    found = {t.trial: t.values[0] for t in optimizer.told if t.state == "complete"}
    first_batch = min(found.get(t, math.inf) for t in range(8))
    best = min(found.values())
    best_lr = next(p.values["optimizer.learning_rate"] for p in optimizer.asked if found.get(p.trial) == best)
    assert optimizer.best_value() == best
    assert abs(math.log10(best_lr / BEST_LR)) < 0.1  # within a factor 1.26 of the best learning rate
    assert best < first_batch


def test_conditional_proposals_never_carry_an_inactive_parameter(tmp_path):
    params = {"optimizer.name": {"choice": ["sgd", "adam"]},
              "optimizer.momentum": {"uniform": [0.5, 0.99], "when": {"optimizer.name": "sgd"}},
              "model.leaky_slope": {"uniform": [0.01, 0.3], "when": {"model.activation": "leaky_relu"}},
              "model.activation": {"choice": ["relu", "leaky_relu"]},
              "model.elu_alpha": {"uniform": [0.5, 2.0], "when": {"training.batch_size": [64, 128]}},
              "optimizer.learning_rate": {"loguniform": [1e-4, 1e-1]}}
    sweep = _sweep(tmp_path, _spec(params, trials=30, batch=5))
    optimizer = sweep.optimizer()
    _drive(optimizer)
    names = set()
    for proposal in optimizer.asked:
        names.add(proposal.values["optimizer.name"])
        assert ("optimizer.momentum" in proposal.values) == (proposal.values["optimizer.name"] == "sgd")
        assert ("model.leaky_slope" in proposal.values) == (proposal.values["model.activation"] == "leaky_relu")
        assert "model.elu_alpha" in proposal.values  # a base key's condition that holds: the base batch is 64
        trial = optimizer.study.trials[proposal.trial]
        assert set(trial.params) == set(proposal.values)  # the sampler never saw an inactive parameter
    assert names == {"sgd", "adam"}
    adam = next(p for p in optimizer.asked if p.values["optimizer.name"] == "adam")
    variants = sweep.proposal_variants(adam)
    assert [v.seed for v in variants] == [0, 1] and variants[0].label.startswith(f"trial {adam.trial}, ")
    assert all(v.config.optimizer.momentum == TINY_BASE["optimizer"]["momentum"] for v in variants)  # base value
    assert variants[1].config.optimizer.learning_rate == adam.values["optimizer.learning_rate"]


def _record(seed: int, loss: float, **fields) -> VariantRecord:
    return VariantRecord({}, seed, "FINISHED", metrics={"best_val_loss": loss}, n_params=100, **fields)


def test_a_settings_seeds_are_told_as_their_mean_failed_or_pruned(tmp_path):
    optimizer = _sweep(tmp_path, {**_spec(trials=4), "objectives": ["best_val_loss", "n_params"]}).optimizer()
    optimizer.ask(4)
    complete = optimizer.tell_setting(0, [_record(0, 0.2), _record(1, 0.4)])
    failed = optimizer.tell_setting(1, [_record(0, 0.2), _record(1, math.nan, diverged=True)])
    pruned = optimizer.tell_setting(2, [_record(0, 0.5, pruned_at=4), _record(1, 0.7, pruned_at=4)])
    assert (complete.state, complete.values) == ("complete", (pytest.approx(0.3), 100.0))
    assert failed.state == "failed"
    assert (pruned.state, pruned.values, pruned.rung_epoch) == ("pruned", (pytest.approx(0.6),), 4)
    assert [t.state.name for t in optimizer.study.trials[:3]] == ["COMPLETE", "FAIL", "PRUNED"]
    with pytest.raises(ValueError, match="trial 0 is not running"):
        optimizer.tell(0, [0.1, 1.0])


@pytest.mark.parametrize("change, message", [
    ({"grid": {"model.dropout": [0.0, 0.2]}}, r"optimize: proposes every setting, but the file also has grid"),
    ({"optimize": {"trials": 4, "sampler": "bayes", "params": {"model.dropout": {"uniform": [0, 1]}}}},
     r"optimize.sampler: 'bayes' is not allowed .*; allowed values: tpe, gp, cmaes, nsga2, qmc, random"),
    ({"optimize": {"trials": 4, "params": {"model.dropout": {"uniform": [0.0, 1.5]}}}},
     r"optimize.params.model.dropout\[1\]"),
    ({"optimize": {"trials": 4, "params": {"model.dropout": {"uniform": [0.5, 0.1]}}}},
     r"optimize.params.model.dropout.uniform: \[0.5, 0.1\] is reversed"),
    ({"optimize": {"trials": 4, "params": {"optimizer.momentum": {"uniform": [0.5, 0.9], "when": {"model.act": 1}}}}},
     r"optimize.params.optimizer.momentum.when.model.act: model.act is never set"),
    ({"objectives": ["best_val_loss", "test_accuracy"]},
     r"objectives\[1\]: 'test_accuracy': a test metric cannot select settings"),
    ({"objectives": ["n_params", "best_val_loss"]},
     r"objectives\[0\]: 'n_params'; the first objective selects the models, as early stopping does on val_loss"),
    ({"objectives": ["best_val_loss", {"metric": "n_params", "direction": "up"}]},
     r"objectives\[1\].direction: 'up'; give minimize or maximize"),
    ({"objectives": ["best_val_loss", "val_loss"]}, r"objectives\[1\]: 'val_loss'; give one of best_val_loss, "),
])
def test_bad_optimize_sections_and_objectives_are_refused_naming_the_key(tmp_path, change, message):
    with pytest.raises(SweepError, match=message) as err:
        _sweep(tmp_path, {**_spec(), **change})
    assert str(err.value).startswith(str(tmp_path))


@pytest.mark.parametrize("sampler, package", [("gp", "torch"), ("cmaes", "cmaes")])
def test_a_sampler_whose_package_is_missing_is_refused_with_the_install_line(tmp_path, sampler, package):
    pytest.importorskip("optuna")
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here: the sampler is available")
    with pytest.raises(SweepError, match=rf"optimize.sampler: '{sampler}' needs {package}, which is not installed; "
                                         rf"pip install {package}, or use one of tpe, nsga2, qmc, random"):
        _sweep(tmp_path, _spec(sampler=sampler))


@pytest.mark.parametrize("sampler", ["nsga2", "qmc", "random"])
def test_the_other_samplers_propose_reproducibly_within_the_ranges(tmp_path, sampler):
    runs = []
    for _ in range(2):
        optimizer = _sweep(tmp_path, {**_spec(sampler=sampler, trials=8), "objectives": ["best_val_loss", "n_params"]}
                           ).optimizer()
        for proposal in optimizer.ask(8):
            optimizer.tell(proposal.trial, [_loss(proposal.values), 1.0])
        runs.append(_proposed(optimizer))
    assert runs[0] == runs[1] and len(runs[0]) == 8
    assert all(1e-5 <= v["optimizer.learning_rate"] <= 1.0 for _, v in runs[0])
