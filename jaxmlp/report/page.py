"""The report as pages: provenance and column notes, one self-contained HTML page (figures
inlined), the Markdown report, and the results block between a README's markers."""
from __future__ import annotations

import base64
import html
import time
from typing import Any, Mapping, Sequence

from jaxmlp.report.errors import ReportError
from jaxmlp.report.figures import FIGURE_CAPTIONS
from jaxmlp.report.search import Section
from jaxmlp.report.tables import ERROR_PERCENT, HEADERS, markdown_text, table_cells

MARK_START = "<!-- jaxmlp:results:start -->"
MARK_END = "<!-- jaxmlp:results:end -->"


def provenance(name: str, parent_run_id: str, git_commit: str | None, tracking_uri: str) -> str:
    return (f"Sweep `{name}`, parent run `{parent_run_id}` in {tracking_uri}"
            + (f", git commit `{git_commit[:10]}`" if git_commit else "")
            + f"; generated {time.strftime('%Y-%m-%d %H:%M')} by `python -m jaxmlp.report`.")


def column_notes(metric: str, with_references: bool, with_dead_units: bool = False, validated: bool = True) -> str:
    what = ("test error (%) = 100 × (1 − test accuracy)" if metric == ERROR_PERCENT else "test loss")
    kept = ("the parameters kept by early stopping (selected on the validation split)" if validated else
            "the last epoch's parameters (trained on every training sample, without a validation split)")
    notes = (f"{what} of {kept}, mean ± sample "
             "std over the seeds that finished; epochs are means over seeds; train time is the wall time from the "
             "epoch the variant entered its slot until it stopped (variants in the slots of one program train at "
             "the same time).")
    if with_dead_units:
        where = ("the whole validation split at the last epoch trained" if validated else
                 "the whole test split for the tested parameters (there is no validation split)")
        notes += (" Dead units (%): per hidden layer (first / second / ...), the share of units that are zero on "
                  f"{where}, mean over seeds.")
    if with_references:
        notes += " Δ = ours − reference (percentage points for test error)."
    return notes


def references_list(references: dict[str, dict[str, Any]] | None) -> list[str]:
    """One line per matched reference: setting, value, source and note."""
    return [f"{setting}: {entry['value']:g} ({entry['source']})" + (f"; {entry['note']}" if entry.get("note") else "")
            for setting, entry in (references or {}).items()]


_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px}"
          "td{text-align:right}td:first-child{text-align:left}img{max-width:100%}"
          "figcaption{color:#444;font-size:13px}.meta{color:#666;font-size:13px}")


def _html_table(rows: Sequence[dict[str, Any]], headers: Mapping[str, str]) -> str:
    titles, cells = table_cells(rows, headers)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(name: str, description: str, table: list[dict[str, Any]], figures: dict[str, bytes], meta: str,
            notes: str, references: list[str], sections: Sequence[Section] = ()) -> str:
    """One self-contained page: the table, further `sections` (an adaptive search's, see
    `jaxmlp.report.search`) and the figures inlined as base64 PNGs."""
    parts = ["<!doctype html>", "<html><head><meta charset='utf-8'>",
             f"<title>{html.escape(name)} report</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(name)}</h1>",
             f"<p>{html.escape(description.strip())}</p>",
             f"<p class='meta'>{html.escape(meta.replace('`', ''))}</p>",
             _html_table(table, HEADERS),
             f"<p class='meta'>{html.escape(notes)}</p>"]
    if references:
        parts.append("<p>References:</p><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in references) + "</ul>")
    parts += [f"<h2>{html.escape(s.title)}</h2><p>{html.escape(s.note)}</p>{_html_table(s.rows, s.headers)}"
              for s in sections]
    parts += [f'<figure><img alt="{html.escape(fig)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
              f"<figcaption>{html.escape(FIGURE_CAPTIONS.get(fig, fig))}</figcaption></figure>"
              for fig, png in figures.items()]
    return "\n".join([*parts, "</body></html>"]) + "\n"


def results_markdown(meta: str, table_md: str, notes: str, references: list[str], sections_md: str = "") -> str:
    """Provenance, table, column notes, matched references and further sections (an adaptive
    search's, as Markdown): what goes between a README's markers. References are literal
    text (`markdown_text`): they name settings."""
    refs = "\n\nReferences:\n\n" + "\n".join(f"- {markdown_text(r)}" for r in references) if references else ""
    return f"{meta}\n\n{table_md}\n{notes}{refs}\n{sections_md}"


def to_report_markdown(name: str, description: str, results: str, figures: dict[str, bytes]) -> str:
    figs = "\n".join(f"![{fig}]({fig})\n\n*{FIGURE_CAPTIONS.get(fig, fig)}*\n" for fig in figures)
    return f"# {name}\n\n{description.strip()}\n\n{results}\n## Figures\n\n{figs}"


def results_markers(name: str | None = None) -> tuple[str, str]:
    """The comments around a README's results: those of sweep `name`, or the unnamed ones."""
    if name is None:
        return MARK_START, MARK_END
    return MARK_START.replace(" -->", f" {name} -->"), MARK_END.replace(" -->", f" {name} -->")


def replace_between_markers(text: str, block: str, source: str, name: str | None = None) -> str:
    """`text` with everything between the results markers of sweep `name` (or, where it has
    none, the unnamed markers) replaced by `block`."""
    for start_mark, end_mark in dict.fromkeys([results_markers(name), results_markers()]):
        start, end = text.find(start_mark), text.find(end_mark)
        if start >= 0 and end > start:
            return text[:start + len(start_mark)] + "\n" + block.strip() + "\n" + text[end:]
    named = " and ".join(results_markers(name)) + " or " if name else ""
    raise ReportError(f"{source}: needs the markers {named}{MARK_START} and {MARK_END} (in this order) around "
                      "the place where the results table goes")
