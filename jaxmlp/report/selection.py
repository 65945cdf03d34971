"""What a sweep's objectives add to its report and parent run: with two or more objectives the
Pareto front (a table and a scatter); for random and optimised sweeps, which swept keys
mattered for the first objective (a table and a bar chart)."""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from jaxmlp.records import VariantRecord
from jaxmlp.report.figures import png
from jaxmlp.report.importance import draw_importance, importance_rows, param_importances
from jaxmlp.report.objectives import Objective
from jaxmlp.report.pareto import draw_pareto, front_table
from jaxmlp.report.search import Section

IMPORTANCE_HEADERS = {"parameter": "swept key", "importance": "importance"}


class ObjectiveReport(NamedTuple):
    """Sections (tables) and figures by file name; `front`: the Pareto front by column (None with one objective)."""

    sections: list[Section]
    figures: dict[str, bytes]
    front: dict[str, list[Any]] | None


def objective_report(records: Sequence[VariantRecord], objectives: Sequence[Objective],
                     importance: bool = False) -> ObjectiveReport:
    """The Pareto front (two or more objectives) and, where `importance` (random and optimised
    sweeps), the fANOVA importance of the swept keys for the first objective."""
    sections, figures, front = [], {}, None
    if len(objectives) > 1:
        front = front_table(records, objectives)
        rows = [dict(zip(front, values)) for values in zip(*front.values())]
        sections.append(Section("Pareto front", f"The {len(rows)} settings that no other matches or beats in every "
                                f"objective ({', '.join(map(str, objectives))}; means over seeds), best "
                                f"{objectives[0].metric} first; the sweep's best model is the setting best in "
                                f"{objectives[0].metric}, the first objective.", rows, {}))
        figures["pareto.png"] = png(draw_pareto(records, objectives))
    found = param_importances(records, objectives[0]) if importance else {}
    if found:
        sections.append(Section("Which numbers mattered", f"fANOVA importance of each swept key for "
                                f"{objectives[0]} (mean over seeds), over the finished settings; the "
                                "importances sum to 1.", importance_rows(found), IMPORTANCE_HEADERS))
        figures["importance.png"] = png(draw_importance(found, objectives[0]))
    return ObjectiveReport(sections, figures, front)
