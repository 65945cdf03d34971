"""A sweep's report from plain per-variant records (`jaxmlp.records.VariantRecord`) that the
sweep runner or tracking hands over: the table and its formats (`tables`), the figures
(`figures`), published numbers to compare with (`references`), the HTML and Markdown pages
(`page`), and the command `python -m jaxmlp.report` (`cli`). Nothing here knows MLflow's
tags or training; the command asks `jaxmlp.tracking` for the records.
"""
from jaxmlp.report.errors import ReportError
from jaxmlp.report.figures import FIGURE_CAPTIONS, prepare_figures, swept_axis, sweep_figures
from jaxmlp.report.references import load_references, match_references
from jaxmlp.report.tables import (ERROR_PERCENT, HEADERS, best_row, display_metric, primary_metric, report_rows,
                                  summarize, sweep_summary, table_cells, to_csv, to_markdown, to_text)

__all__ = [
    "ERROR_PERCENT", "FIGURE_CAPTIONS", "HEADERS", "ReportError", "best_row", "display_metric", "load_references",
    "match_references", "prepare_figures", "primary_metric", "report_rows", "summarize", "swept_axis",
    "sweep_figures", "sweep_summary", "table_cells", "to_csv", "to_markdown", "to_text",
]
