"""Resume and best-model edge cases, end to end into a real SQLite store: diverged variants
under resume, a failed group trained again, a resume without an earlier parent; the best
model under `monitor: val_accuracy`, and a setting whose seeds all diverged. The sweeps run
through the library (`jaxmlp.run_sweep`); the command only where its exit code and JSON are
tested."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from jaxmlp.records import VariantRecord
from jaxmlp.sweep.spec import load_sweep

from tests.helpers.sweep import TINY_BASE, Tracked, check_models_of_the_best, print_resumed, run_tracked, write_sweep

DIVERGING = {"name": "diverging", "base": TINY_BASE,
             "grid": {"optimizer.learning_rate": [0.1, 1e30]}, "seeds": 2}


def _sweep(folder, spec, cache, **options) -> Tracked:
    """Run the sweep file of `spec` in `folder` (its store there) through the library; its
    result and what the store holds."""
    path = folder / f"{spec['name']}.yaml"
    if not path.exists():
        write_sweep(folder, spec)
    return run_tracked(path, cache, **options)


def _counts(run: Tracked) -> tuple[int, int]:
    """The variants of the sweep and those finished (the --json outcome's n_variants, n_finished)."""
    return len(run.result.records), sum(r.finished for r in run.result.records)


def _lr(run) -> float:
    return float(run.data.params["optimizer.learning_rate"])


@pytest.fixture(scope="module")
def diverging(tmp_path_factory, cache) -> SimpleNamespace:
    """A sweep whose second setting diverges in both seeds, run once, then resumed; then the
    command resumes it once more with --json (it trains nothing) for its exit code and JSON."""
    folder = tmp_path_factory.mktemp("diverging")
    first = _sweep(folder, DIVERGING, cache)
    second = _sweep(folder, DIVERGING, cache, resume=True)
    return SimpleNamespace(first=first, second=second, printed=print_resumed(second, "--json"))


def _ids(runs) -> dict[str, str]:
    return {r.info.run_id: r.info.status for r in runs}


@pytest.mark.slow
def test_resume_counts_diverged_runs_as_done_and_trains_nothing_again(diverging):
    first, second = diverging.first, diverging.second
    assert not first.result.ok
    assert sorted(r.info.status for r in first.children) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert _ids(second.children) == _ids(first.children)  # no new run: the diverged ones are not retrained
    assert [p.info.run_id for p in second.parents] == [p.info.run_id for p in first.parents]
    assert _counts(second) == (4, 2)
    assert [r["diverged"] for r in second.result.rows] == [0, 2]


@pytest.mark.slow
def test_json_of_a_sweep_with_diverged_variants_is_strict_json(diverging):
    """A diverged setting's numbers are NaN: --json wrote `NaN`, which strict parsers reject."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    printed = diverging.printed
    outcome = json.loads(printed.out, parse_constant=refuse)
    (diverged,) = [row for row in outcome["rows"] if row["diverged"] == 2]
    assert [key for key, value in diverged.items() if value is None]  # its NaN means, as null
    assert outcome == json.loads(printed.out)
    assert (outcome["n_variants"], outcome["n_finished"]) == _counts(diverging.second)


@pytest.mark.slow
def test_a_resumed_sweep_with_diverged_variants_ends_as_the_first_invocation_did(diverging):
    first, second = diverging.first, diverging.second
    assert not second.result.ok and not first.result.ok
    assert diverging.printed.code == 1  # the command's exit code, resuming it again
    assert second.parents[0].info.status == first.parents[0].info.status == "FAILED"
    assert second.parents[0].data.metrics["n_failed"] == first.parents[0].data.metrics["n_failed"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("invocation", ["first", "second"])
def test_a_setting_whose_seeds_all_diverged_gets_no_model_and_the_best_is_among_the_others(diverging, invocation):
    run = getattr(diverging, invocation)
    (parent,), children = run.parents, run.children
    good = [c for c in children if _lr(c) == 0.1]
    assert all(c.info.status == "FINISHED" for c in good)
    assert all(c.info.status == "FAILED" and c.data.tags["jaxmlp.diverged"] == "true"
               for c in children if _lr(c) == 1e30)
    best = min(good, key=lambda c: c.data.metrics["best_val_loss"])
    models = run.models  # what the store held right after this invocation
    assert set(models) == {best.info.run_id, parent.info.run_id} and len(models[best.info.run_id]) == 1
    assert parent.data.tags["jaxmlp.best_run_id"] == best.info.run_id
    assert parent.data.tags["jaxmlp.best_setting"] == "optimizer.learning_rate=0.1"
    assert parent.data.tags["jaxmlp.best_model_uri"] == f"models:/{models[best.info.run_id][0].model_id}"
    # the summary counts the diverged setting: its row, no finished seed, two diverged
    assert parent.data.metrics["n_variants"] == 4 and parent.data.metrics["n_diverged"] == 2
    rows = {r["setting"]: r for r in run.result.rows}
    assert (rows["optimizer.learning_rate=1e+30"]["n_seeds"], rows["optimizer.learning_rate=1e+30"]["diverged"]) == (0, 2)
    assert math.isnan(rows["optimizer.learning_rate=1e+30"]["test_accuracy"])  # (the JSON's null: above)
    assert (rows["optimizer.learning_rate=0.1"]["n_seeds"], rows["optimizer.learning_rate=0.1"]["diverged"]) == (2, 0)
    summary = run.client.download_artifacts(parent.info.run_id, "summary/summary.csv")
    lines = open(summary).read().splitlines()
    assert len(lines) == 3 and any(line.startswith("optimizer.learning_rate=1e+30,0,") for line in lines), lines


@pytest.mark.slow
def test_a_resume_that_trains_nothing_logs_no_second_best_model_and_says_so(diverging):
    parent = diverging.first.parents[0].info.run_id
    assert len(diverging.first.models[parent]) == 1
    assert len(diverging.second.models[parent]) == 1
    (notice,) = diverging.second.result.notices
    assert notice.startswith(f"nothing to do: parent run {parent} already holds every variant")
    assert diverging.printed.err.startswith(notice)  # the command says it on stderr
    assert diverging.second.parents[0].data.metrics == diverging.first.parents[0].data.metrics


TWO_GROUPS = {"name": "group-fails", "base": TINY_BASE, "grid": {"model.hidden": [[16], [24]]}, "seeds": 2}


def _failing_then_resumed(folder, spec, cache, failing: tuple[int, ...]) -> SimpleNamespace:
    """`spec` swept with the program of the group of hidden widths `failing` raising, then
    resumed with nothing failing."""
    import jaxmlp.sweep.runner as runner

    class Failing(runner.LocalExecutor):
        def run(self, task, data):
            if task.chunks[0][0].model.hidden == failing:
                raise RuntimeError("the device is on fire")
            return super().run(task, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "LocalExecutor", Failing)
        first = _sweep(folder, spec, cache)
    second = _sweep(folder, spec, cache, resume=True)
    return SimpleNamespace(first=first, second=second, keys={v.key for v in load_sweep(first.path).variants})


@pytest.fixture(scope="module")
def failed_group(tmp_path_factory, cache) -> SimpleNamespace:
    """A sweep of two groups whose second group fails (its program raises), then resumed."""
    return _failing_then_resumed(tmp_path_factory.mktemp("failed-group"), TWO_GROUPS, cache, (24,))


def _width(run) -> str:
    return run.data.params["model.hidden"]


@pytest.mark.slow
def test_resume_trains_the_variants_of_a_failed_group_again(failed_group):
    first, second = failed_group.first, failed_group.second
    assert not first.result.ok and "the device is on fire" in first.parents[0].data.tags["jaxmlp.failure_reason"]
    assert sorted((_width(c), c.info.status) for c in first.children) == [
        ("[16]", "FINISHED"), ("[16]", "FINISHED"), ("[24]", "FAILED"), ("[24]", "FAILED")]
    assert second.result.ok, second.result.failures
    (parent,) = second.parents
    assert parent.info.run_id == first.parents[0].info.run_id and parent.info.status == "FINISHED"
    old = _ids(first.children)
    assert {k: v for k, v in _ids(second.children).items() if k in old} == old  # earlier runs kept as they were
    new = [c for c in second.children if c.info.run_id not in old]
    assert sorted((_width(c), c.info.status) for c in new) == [("[24]", "FINISHED"), ("[24]", "FINISHED")]
    finished = [c for c in second.children if c.info.status == "FINISHED"]
    assert sorted(c.data.tags["jaxmlp.variant_key"] for c in finished) == sorted(failed_group.keys)
    assert _counts(second) == (4, 4)
    models = second.models
    for width in ("[16]", "[24]"):  # each setting's model, the retrained one's too
        best = min((c for c in finished if _width(c) == width), key=lambda c: c.data.metrics["best_val_loss"])
        assert len(models.get(best.info.run_id, [])) == 1, width
    check_models_of_the_best(second.client, parent, second.children)  # one best_model on the parent, not two


@pytest.mark.slow
def test_resume_without_an_earlier_parent_starts_one_and_trains_everything(tmp_path, cache):
    spec = {"name": "fresh-resume", "base": TINY_BASE, "seeds": 2}
    run = _sweep(tmp_path, spec, cache, resume=True)
    assert run.result.ok, run.result.failures
    (parent,) = run.parents
    assert parent.info.status == "FINISHED" and run.result.parent_run_id == parent.info.run_id
    assert parent.data.tags["jaxmlp.sweep_hash"] == load_sweep(run.path).hash
    assert sorted(c.info.status for c in run.children) == ["FINISHED", "FINISHED"]
    assert _counts(run) == (2, 2)
    again = _sweep(tmp_path, spec, cache, resume=True)  # and a resume of that one trains nothing
    assert again.result.ok and again.result.parent_run_id == parent.info.run_id
    assert _ids(again.children) == _ids(run.children)


ACCURACY = {"name": "by-accuracy", "base": {**TINY_BASE, "training": {
    "epochs": 6, "batch_size": 64, "early_stopping": {"monitor": "val_accuracy", "patience": 3}}},
    "grid": {"optimizer.learning_rate": [0.003, 0.1]}, "seeds": 2}


def test_selection_score_prefers_the_highest_validation_accuracy(tmp_path):
    from jaxmlp.sweep.best import selection_score

    (v, _), (w, _) = (load_sweep(write_sweep(tmp_path, {**spec, "name": name})).variants[:2]
                      for name, spec in (("a", ACCURACY), ("l", {**ACCURACY, "base": TINY_BASE})))

    def record(diverged=False, **metrics) -> VariantRecord:
        return VariantRecord(setting={}, seed=0, status="FINISHED", diverged=diverged, metrics=metrics)

    high, low = record(best_val_accuracy=0.9, best_val_loss=0.5), record(best_val_accuracy=0.8, best_val_loss=0.2)
    assert selection_score(v, high) == -0.9 and selection_score(v, low) == -0.8  # lower is better
    assert selection_score(w, low) == 0.2 < selection_score(w, high) == 0.5  # by val_loss, the other way round
    assert selection_score(v, record(diverged=True, best_val_accuracy=0.95)) == math.inf
    assert selection_score(v, record(best_val_loss=0.1)) == math.inf  # no accuracy


@pytest.mark.slow
def test_monitor_val_accuracy_chooses_the_highest_accuracy_per_setting_and_overall(tmp_path, cache):
    run = _sweep(tmp_path, ACCURACY, cache)
    assert run.result.ok, run.result.failures
    (parent,), children = run.parents, run.children
    accuracy = {c.info.run_id: c.data.metrics["best_val_accuracy"] for c in children}
    assert len(set(accuracy.values())) > 1  # otherwise any choice would pass
    models = run.models
    for lr in (0.003, 0.1):
        mine = [c.info.run_id for c in children if _lr(c) == lr]
        (chosen,) = [r for r in mine if r in models]
        assert accuracy[chosen] == max(accuracy[r] for r in mine), lr
    best = parent.data.tags["jaxmlp.best_run_id"]
    assert accuracy[best] == max(accuracy.values())
    assert parent.data.tags["jaxmlp.best_model_uri"] == f"models:/{models[best][0].model_id}"


WORSE_FAILS = {"name": "worse-group-fails", "base": TINY_BASE, "grid": {"model.hidden": [[16], [2]]}, "seeds": 2}


@pytest.fixture(scope="module")
def worse_failed(tmp_path_factory, cache) -> SimpleNamespace:
    """The clearly worse group (width 2) fails, then --resume trains it again."""
    return _failing_then_resumed(tmp_path_factory.mktemp("worse-fails"), WORSE_FAILS, cache, (2,))


@pytest.mark.slow
def test_after_resume_the_best_may_be_a_variant_finished_before(worse_failed):
    second = worse_failed.second
    assert second.result.ok, second.result.failures
    (parent,) = second.parents
    finished = [c for c in second.children if c.info.status == "FINISHED"]
    assert len(finished) == 4
    overall = min(finished, key=lambda c: c.data.metrics["best_val_loss"])
    assert _width(overall) == "[16]"  # the premise: the setting finished before the failure is the better one
    assert overall.info.run_id in {c.info.run_id for c in worse_failed.first.children}
    assert parent.data.tags["jaxmlp.best_run_id"] == overall.info.run_id
    assert parent.data.tags["jaxmlp.best_setting"] == "model.hidden=16"
    assert parent.data.tags["jaxmlp.best_model_uri"] == f"models:/{second.models[overall.info.run_id][0].model_id}"
    check_models_of_the_best(second.client, parent, second.children)
    # the parent's best_model is the one the first invocation logged, kept: the best did not change
    assert second.models[parent.info.run_id][0].model_id == worse_failed.first.models[parent.info.run_id][0].model_id
