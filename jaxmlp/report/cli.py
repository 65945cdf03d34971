"""`python -m jaxmlp.report SWEEP`: the report of a tracked sweep, built only from what MLflow holds.

Asks tracking for the sweep's newest parent run and one record per variant (final metrics,
per-epoch histories, resolved configuration), builds the table and figures, sets reference
numbers next to the rows (see `jaxmlp.report.references`), and writes `report.md`,
`report.csv`, the figures and one self-contained `report.html` to a folder; logs them on the
parent run under `report/`; optionally puts the table between the results markers of a README.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from jaxmlp.bounded_yaml import YamlError, load_bounded_yaml
from jaxmlp.report.errors import ReportError
from jaxmlp.report.evaluation import evaluation_notes
from jaxmlp.report.figures import sweep_figures
from jaxmlp.report.page import (MARK_END, MARK_START, column_notes, provenance, references_list,
                                replace_between_markers, results_markdown, results_markers, to_html,
                                to_report_markdown)
from jaxmlp.report.objectives import Objective, ObjectiveError, objectives_of
from jaxmlp.report.pareto import with_pareto
from jaxmlp.report.references import load_references, match_references
from jaxmlp.report.search import search_sections
from jaxmlp.report.selection import ObjectiveReport, objective_report
from jaxmlp.report.tables import (HEADERS, display_metric, records_monitor, report_rows, search_text, sections_markdown,
                                  summarize, to_csv, to_markdown, to_text, without_validation)
from jaxmlp.tracking import (TRACKING_URI_HELP, HistoryFileError, RunNotFound, SweepNotFound, TrackedSweep, Tracker,
                             bound_http_requests, find_sweep, resolve_tracking_uri, sqlite_path, store_failure,
                             store_fix, ui_command, unsupported_scheme)

REFERENCES_FILE = "references.yaml"


def _sweep_name(target: str) -> str:
    """A sweep file's `name`; any other target is a sweep (experiment) name or an experiment id."""
    path = Path(target)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        return target
    if path.exists() and not path.is_file():
        raise ReportError(f"{path}: not a regular file; give a sweep file (YAML)")
    try:
        raw = load_bounded_yaml(path)
    except OSError as err:
        raise ReportError(f"{path}: cannot read the sweep file: {err}") from None
    except YamlError as err:
        raise ReportError(str(err)) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ReportError(f"{path}: a sweep file needs a top-level 'name' (the MLflow experiment to report)")
    return raw["name"]


def _open_store(tracking_uri: str | None) -> Tracker:
    """The store to report from; a SQLite file that does not exist is not created (it holds no sweep)."""
    tracker = Tracker(tracking_uri)
    unsupported = unsupported_scheme(tracker.tracking_uri)
    if unsupported:
        raise ReportError(f"--tracking-uri {tracker.tracking_uri}: {unsupported}; pass the store the sweep logged to")
    database = sqlite_path(tracker.tracking_uri)
    if database is not None and not database.is_file():
        which = "" if tracking_uri else " (the default: $MLFLOW_TRACKING_URI, else mlflow.db in the working directory)"
        raise ReportError(f"{tracker.tracking_uri}{which}: no MLflow store there ({database} does not exist); pass "
                          "--tracking-uri with the store the sweep logged to, or run the sweep first "
                          f"(python -m jaxmlp.sweep FILE --tracking-uri {tracker.tracking_uri})")
    return tracker


def _check_run(tracker: Tracker, name: str, run_id: str) -> None:
    """Refuse a --run that is not a parent run of sweep `name` (or of experiment id `name`) in the store."""
    where = tracker.tracking_uri
    expected = (f"expected a parent run of {name!r} (listed in the MLflow UI: {ui_command(where)}; "
                "omit --run to report the newest)")
    try:
        parent = tracker.parent(run_id)
    except RunNotFound:
        raise ReportError(f"--run {run_id}: no run with this id in {where}; {expected}") from None
    if parent is None:
        raise ReportError(f"--run {run_id}: this run in {where} is not a sweep's parent run (it is a variant's "
                          f"child run, or was not started by python -m jaxmlp.sweep); {expected}")
    if name not in (parent.sweep_name or name, parent.experiment_id):
        raise ReportError(f"--run {run_id}: a parent run of sweep {parent.sweep_name!r} in {where}, not of {name!r}; "
                          f"{expected}, or report {parent.sweep_name!r} instead")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxmlp.report",
        description="Build the report of a tracked sweep from MLflow: a table (test error mean ± std over seeds, "
                    "best epoch, parameters, time, reference numbers) and figures, written as Markdown, CSV, PNG "
                    "and one self-contained HTML page, and logged on the sweep's parent run under report/.",
        epilog="Example: python -m jaxmlp.report experiments/activations/quick.yaml")
    p.add_argument("sweep", help="a sweep file (its name is read), a sweep name, or an MLflow experiment name or id")
    p.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    p.add_argument("--run", metavar="PARENT_RUN_ID", help="report this parent run (default: the newest)")
    p.add_argument("--out", type=Path, help="output folder (default: reports/<sweep name>/)")
    p.add_argument("--references", type=Path, help=f"reference numbers (YAML; default: {REFERENCES_FILE} next to "
                                                   "the sweep file, if there is one)")
    p.add_argument("--no-log", action="store_true", help="do not log the report on the parent run")
    p.add_argument("--readme", type=Path, help="put the table between the sweep's results markers in this file: "
                                               f"{' and '.join(results_markers('NAME'))} (NAME: the sweep's "
                                               f"name), or else {MARK_START} and {MARK_END}")
    return p


def _references_path(args, sweep_file: str | None) -> Path | None:
    if args.references:
        return args.references
    path = Path(args.sweep) if Path(args.sweep).is_file() else Path(sweep_file or "")
    candidate = path.parent / REFERENCES_FILE if path.name else None
    return candidate if candidate is not None and candidate.is_file() else None


@dataclass
class Report:
    """A built report: the table, the files to write (by name) and the block for a README's markers."""

    sweep: TrackedSweep
    table: list[dict[str, Any]]
    files: dict[str, bytes]
    results: str


def _sweep_file(target: str, sweep: TrackedSweep) -> dict[str, Any]:
    """The sweep file's content where it can be read: the target, or the file the parent names ({} otherwise)."""
    for path in (Path(target), Path(sweep.sweep_file or "")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            try:
                raw = load_bounded_yaml(path)
            except (OSError, YamlError):
                return {}
            return raw if isinstance(raw, dict) else {}
    return {}


def sweep_objectives(raw: dict[str, Any], records: Sequence[Any], where: str) -> tuple[list[Objective], bool]:
    """The objectives of the sweep file's content `raw` (default: the monitor's best value), and
    whether its settings were sampled (random or optimize), which makes parameter importance meaningful."""
    monitor = records_monitor(records)
    try:
        objectives = objectives_of(raw.get("objectives") or [], monitor, f"{where}: objectives")
    except ObjectiveError as err:
        raise ReportError(str(err)) from None
    return objectives, bool(raw.get("random") or raw.get("optimize"))


def build_report(tracking_uri: str, sweep: TrackedSweep, references_path: Path | None,
                 objectives: Sequence[Objective] = (), importance: bool = False) -> Report:
    """Table, figures, Markdown, CSV and HTML of a tracked sweep; with `objectives` (two or
    more) their Pareto front, and where `importance`, which swept keys mattered for the first."""
    entries = load_references(references_path) if references_path else None
    metric = display_metric(sweep.records)
    references = match_references(sweep.records, entries, metric) if entries is not None else None
    rows = summarize(sweep.records)
    validated = not without_validation(sweep.records)
    table = with_pareto(report_rows(rows, references, validated), sweep.records, objectives)
    chosen = objective_report(sweep.records, objectives, importance) if objectives else ObjectiveReport([], {}, None)
    figures = {**sweep_figures(sweep.records, rows), **chosen.figures}
    meta = provenance(sweep.name, sweep.parent_run_id, sweep.git_commit, tracking_uri)
    notes = column_notes(metric, bool(references), any("dead_units_percent" in r for r in table), validated)
    notes = " ".join(filter(None, [notes, evaluation_notes([k for r in table for k in r])]))
    cited = references_list(references)
    sections = [*search_sections(sweep.records), *chosen.sections]
    results = results_markdown(meta, to_markdown(table, HEADERS), notes, cited, sections_markdown(sections))
    files = {"report.md": to_report_markdown(sweep.name, sweep.note, results, figures).encode(),
             "report.csv": to_csv(table).encode(),
             "report.html": to_html(sweep.name, sweep.note, table, figures, meta, notes, cited, sections).encode(),
             **figures}
    return Report(sweep, table, files, results)


def run_report(args: argparse.Namespace) -> Path:
    """Build the report, write it to the output folder, log it on the parent run, fill the README."""
    name = _sweep_name(args.sweep)
    tracker = _open_store(args.tracking_uri)
    if args.run:
        _check_run(tracker, name, args.run)
    sweep = find_sweep(tracker, name, args.run)
    if not sweep.records:
        raise ReportError(f"parent run {sweep.parent_run_id} of sweep {sweep.name!r} has no child runs yet")
    if args.readme and not args.readme.is_file():
        raise ReportError(f"--readme {args.readme}: no such file")
    references_path = _references_path(args, sweep.sweep_file)
    objectives, importance = sweep_objectives(_sweep_file(args.sweep, sweep), sweep.records,
                                              sweep.sweep_file or args.sweep)
    built = build_report(tracker.tracking_uri, sweep, references_path, objectives, importance)
    readme = (replace_between_markers(args.readme.read_text(), built.results, str(args.readme), sweep.name)
              if args.readme else None)
    out = args.out or Path("reports") / sweep.name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"--out {out}: cannot create the folder ({err.strerror}); give a folder's path") from None
    for name, data in built.files.items():
        (out / name).write_bytes(data)
        if not args.no_log:
            tracker.log_file(sweep.parent_run_id, out / name, "report")
    if readme is not None:
        args.readme.write_text(readme)
    print(to_text(built.table, HEADERS))
    searched = search_text(sweep.records)
    if searched:
        print(f"\n{searched}")
    print(f"\nreport of sweep '{sweep.name}' (parent run {sweep.parent_run_id}) in {out}/"
          + ("" if args.no_log else ", logged on the parent run under report/")
          + (f"; references: {references_path}" if references_path else ""))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    bound_http_requests()
    try:
        run_report(args)
    except (ReportError, SweepNotFound, HistoryFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the store's failure as one line; anything else raises
        reason = store_failure(err)
        if reason is None:
            raise
        uri = resolve_tracking_uri(args.tracking_uri)
        print(f"error: the tracking store {uri} failed: {reason}. Fix: {store_fix(uri)}.", file=sys.stderr)
        return 2
    return 0
