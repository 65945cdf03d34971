"""A sweep's report from plain per-variant records (`jaxmlp.records.VariantRecord`) that the
sweep runner or tracking hands over: the table and its formats (`tables`), short names of
settings for run names and metric names (`labels`), the figures (`figures`), an adaptive
search's pruned variants, compute per rung interval and lineage (`search`), the objectives'
Pareto front and which swept keys mattered (`objectives`, `pareto`, `importance`, `selection`),
results as pandas DataFrames (`frames`, imported where used: pandas loads in about a second),
published numbers to compare with (`references`), the HTML and Markdown pages (`page`), and the
command `python -m jaxmlp.report` (`cli`). Nothing here knows MLflow's tags or training;
the command asks `jaxmlp.tracking` for the records.
"""
from jaxmlp.report.errors import ReportError
from jaxmlp.report.figures import FIGURE_CAPTIONS, draw_lineage, prepare_figures, swept_axis, sweep_figures
from jaxmlp.report.references import load_references, match_references
from jaxmlp.report.labels import metric_label, run_name, short_label
from jaxmlp.report.pareto import with_pareto
from jaxmlp.report.selection import ObjectiveReport, objective_report
from jaxmlp.report.search import compute_by_rung, hparam_schedules, lineage_steps, search_sections
from jaxmlp.report.tables import (ERROR_PERCENT, HEADERS, SweepSummary, best_first, best_row, display_metric,
                                  primary_metric, report_rows, search_markdown, search_text, sections_markdown,
                                  sections_text, setting_metrics, summarize, sweep_summary, table_cells, to_csv,
                                  to_markdown, to_text)

__all__ = [
    "ERROR_PERCENT", "FIGURE_CAPTIONS", "HEADERS", "ObjectiveReport", "ReportError", "SweepSummary", "best_first",
    "best_row", "compute_by_rung", "display_metric", "draw_lineage", "hparam_schedules", "lineage_steps",
    "load_references", "match_references", "metric_label", "objective_report", "prepare_figures", "primary_metric",
    "report_rows", "run_name", "search_markdown", "search_sections", "search_text", "sections_markdown",
    "sections_text", "setting_metrics", "short_label", "summarize", "sweep_figures", "sweep_summary", "swept_axis",
    "table_cells", "to_csv", "to_markdown", "to_text", "with_pareto",
]
