"""Several objectives: the Pareto front of hand-made records is exactly the non-dominated set
(ties, equal points, a maximised objective), the scatter plots what it says, and the fANOVA
importance of a synthetic study where one key matters ranks that key first."""
from __future__ import annotations

import math

import numpy as np
import pytest

from jaxmlp.records import VariantRecord
from jaxmlp.report import objective_report, with_pareto
from jaxmlp.report.importance import draw_importance, param_importances
from jaxmlp.report.objectives import Objective
from jaxmlp.report.pareto import PARETO, draw_pareto, front_table, pareto_mask, pareto_rows

LOSS, PARAMS, ACCURACY = (Objective("best_val_loss", "minimize"), Objective("n_params", "minimize"),
                          Objective("best_val_accuracy", "maximize"))


def _records(points: dict[str, tuple[float, int, float]], seeds: int = 2) -> list[VariantRecord]:
    """Each named setting's seeds with (loss, params, accuracy); the seeds' losses straddle the given mean."""
    return [VariantRecord({"name": name}, seed, "FINISHED", n_params=n_params,
                          metrics={"best_val_loss": loss + (0.01 if seed else -0.01) * (seeds > 1),
                                   "best_val_accuracy": accuracy})
            for name, (loss, n_params, accuracy) in points.items() for seed in range(seeds)]


@pytest.mark.parametrize("points, maximize, expected", [
    ([[1, 5], [2, 4], [3, 3], [2, 5], [4, 4]], [False, False], [True, True, True, False, False]),
    ([[1, 5], [1, 5], [2, 5]], [False, False], [True, True, False]),  # equal points: both stay
    ([[1, 5], [1, 4], [0, 6]], [False, False], [False, True, True]),  # a tie in one objective, better in the other
    ([[1, 0.9], [2, 0.95], [2, 0.8], [3, 0.95]], [False, True], [True, True, False, False]),  # accuracy maximised
    ([[np.nan, 1], [2, 2], [np.inf, 0]], [False, False], [False, True, False]),  # not finite: never on it
])
def test_the_front_is_exactly_the_non_dominated_set(points, maximize, expected):
    assert pareto_mask(np.asarray(points, float), maximize).tolist() == expected


def test_the_front_of_hand_made_records_by_setting_mean():
    records = _records({"a": (0.10, 900, 0.97), "b": (0.20, 300, 0.95), "c": (0.20, 300, 0.96),
                        "d": (0.30, 300, 0.90), "e": (0.15, 900, 0.99)})
    records.append(VariantRecord({"name": "f"}, 0, "FAILED", diverged=True, n_params=10,
                                 metrics={"best_val_loss": math.nan}))
    rows = pareto_rows(records, [LOSS, PARAMS])
    assert {r["setting"]: r[PARETO] for r in rows} == {"a": True, "b": True, "c": True, "d": False, "e": False,
                                                       "f": False}
    assert rows[0]["best_val_loss"] == pytest.approx(0.10) and rows[0]["n_params"] == 900
    assert front_table(records, [LOSS, PARAMS])["setting"] == ["a", "b", "c"]  # best loss first
    three = {r["setting"]: r[PARETO] for r in pareto_rows(records, [LOSS, PARAMS, ACCURACY])}
    assert [s for s, on in three.items() if on] == ["a", "c", "e"]  # b: c matches it and is more accurate


def test_the_scatter_plots_every_setting_the_front_joined_and_the_chosen_one():
    records = _records({"a": (0.10, 900, 0.97), "b": (0.20, 300, 0.95), "d": (0.30, 400, 0.90),
                        "g": (0.15, 500, 0.96)})
    fig = draw_pareto(records, [LOSS, PARAMS])
    ax = fig.axes[0]
    by_gid = {artist.get_gid(): artist for artist in [*ax.collections, *ax.lines]}
    settings = by_gid["settings"].get_offsets()
    assert sorted(map(tuple, np.round(settings, 6).tolist())) == [(0.1, 900), (0.15, 500), (0.2, 300), (0.3, 400)]
    front = np.column_stack(by_gid["front"].get_data())
    assert np.round(front, 6).tolist() == [[0.1, 900], [0.15, 500], [0.2, 300]]  # joined in order of the first
    assert np.round(by_gid["chosen"].get_offsets(), 6).tolist() == [[0.1, 900]]
    assert ax.get_xlabel() == "best_val_loss (min)" and ax.get_ylabel() == "n_params (min)"


def test_the_summary_rows_gain_a_pareto_column_only_with_several_objectives():
    records = _records({"a": (0.10, 900, 0.97), "b": (0.20, 300, 0.95), "d": (0.30, 400, 0.90)})
    rows = [{"setting": s, "n_params": n} for s, n in (("a", 900), ("b", 300), ("d", 400))]
    assert with_pareto(rows, records, [LOSS]) == rows
    marked = with_pareto(rows, records, [LOSS, PARAMS])
    assert [(r["setting"], r[PARETO]) for r in marked] == [("a", "yes"), ("b", "yes"), ("d", "")]
    assert marked[0]["best_val_loss"] == pytest.approx(0.10) and marked[0]["n_params"] == 900


def _synthetic_study(n: int = 40) -> list[VariantRecord]:
    """Settings whose loss depends on the learning rate only; dropout and activation are noise-free passengers."""
    rng = np.random.default_rng(0)
    records = []
    for _ in range(n):
        setting = {"optimizer.learning_rate": float(10 ** rng.uniform(-4, -1)),
                   "model.dropout": float(rng.uniform(0, 0.5)),
                   "model.activation": str(rng.choice(["relu", "tanh", "elu"]))}
        loss = (math.log10(setting["optimizer.learning_rate"]) + 2.5) ** 2
        records += [VariantRecord(setting, seed, "FINISHED", metrics={"best_val_loss": loss + 1e-3 * seed})
                    for seed in (0, 1)]
    return records


def test_importance_ranks_first_the_only_key_that_matters():
    importances = param_importances(_synthetic_study(), LOSS)
    assert list(importances)[0] == "optimizer.learning_rate"
    assert importances["optimizer.learning_rate"] > 0.8
    assert set(importances) == {"optimizer.learning_rate", "model.dropout", "model.activation"}
    assert sum(importances.values()) == pytest.approx(1.0)
    bars = draw_importance(importances, LOSS).axes[0].patches
    assert [round(b.get_width(), 6) for b in bars] == [round(v, 6) for v in importances.values()]
    assert param_importances(_synthetic_study(5), LOSS) == {}  # too few settings to tell


def test_the_objective_report_has_the_front_and_importance_sections_and_figures():
    records = _synthetic_study(12)
    for i, r in enumerate(records):
        r.n_params = 100 * (1 + i // 2 % 3)
    found = objective_report(records, [LOSS, PARAMS], importance=True)
    assert [s.title for s in found.sections] == ["Pareto front", "Which numbers mattered"]
    assert set(found.figures) == {"pareto.png", "importance.png"}
    assert found.front["setting"] == [r["setting"] for r in found.sections[0].rows]
    single = objective_report(records, [LOSS])
    assert (single.sections, single.figures, single.front) == ([], {}, None)
