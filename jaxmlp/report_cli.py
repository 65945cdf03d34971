"""`python -m jaxmlp.report SWEEP`: the report of a tracked sweep, built only from what MLflow holds.

Reads the sweep's parent run and its child runs (final metrics, per-epoch histories, resolved
configuration), builds the table and figures with `jaxmlp.report`, sets reference numbers
next to the rows, and writes `report.md`, `report.csv`, the figures and one self-contained
`report.html` to a folder; logs them on the parent run under `report/`; optionally puts the
table between the results markers of a README.

A references file (YAML) holds published numbers to compare with:

    references:
      - setting: {model.hidden: [800, 800], model.activation: sigmoid}   # or the label, a string
        metric: test_error_percent        # default; test_loss for regression sweeps
        value: 1.60
        source: Srivastava et al. 2014, JMLR 15, Table 2
        note: optional words on how the protocol differs
"""
from __future__ import annotations

import argparse
import base64
import html
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jaxmlp import report
from jaxmlp.config import format_validation_error
from jaxmlp.tracking import TRACKING_URI_HELP

MARK_START = "<!-- jaxmlp:results:start -->"
MARK_END = "<!-- jaxmlp:results:end -->"
REFERENCES_FILE = "references.yaml"
_NOT_CONFIG = ("variant_key", "group")  # parameters of a child run that are not configuration keys


class ReportError(ValueError):
    """The report cannot be built; the message says what to pass or fix."""


# -- references ----------------------------------------------------------------------------

class Reference(BaseModel):
    """One published number: the setting it belongs to, the metric, the value and where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    setting: str | dict[str, Any]
    metric: Literal["test_error_percent", "test_loss"] = "test_error_percent"
    value: float
    source: str = Field(min_length=1)
    note: str = ""


class ReferencesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str = ""
    references: list[Reference]


def load_references(path: str | Path) -> list[dict[str, Any]]:
    """Validated entries of a references file; errors name the file, the entry and the key."""
    from jaxmlp.config import did_you_mean
    from jaxmlp.sweep.spec import CONFIG_KEYS

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
        parsed = ReferencesFile.model_validate(raw if raw is not None else {})
    except OSError as err:
        raise ReportError(f"{path}: cannot read the references file: {err}") from None
    except yaml.YAMLError as err:
        raise ReportError(f"{path}: not valid YAML: {err}") from None
    except ValidationError as err:
        raise ReportError(format_validation_error(err, str(path), ReferencesFile)) from None
    for i, entry in enumerate(parsed.references):
        for key in entry.setting if isinstance(entry.setting, dict) else ():
            if key not in CONFIG_KEYS:
                raise ReportError(f"{path}: references[{i}].setting.{key}: unknown configuration key"
                                  f"{did_you_mean(key, list(CONFIG_KEYS))}; keys look like model.hidden, "
                                  "model.activation, optimizer.max_norm")
    return [entry.model_dump() for entry in parsed.references]


# -- what MLflow holds -----------------------------------------------------------------------

@dataclass
class SweepRuns:
    """One invocation of a sweep as tracked: its parent run and one record per child run."""

    name: str
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str]
    records: list[dict[str, Any]]


def find_parent(tracker, target: str, run_id: str | None) -> tuple[str, str, str, dict[str, str]]:
    """(experiment id, sweep name, parent run id, parent tags) of a sweep file, sweep name or experiment."""
    from jaxmlp.tracking import ROLE_TAG, SWEEP_NAME_TAG

    client = tracker.client
    name = _sweep_name(target)
    if run_id:
        run = client.get_run(run_id)
        tags = dict(run.data.tags)
        if tags.get(ROLE_TAG) != "parent":
            raise ReportError(f"--run {run_id}: not a sweep's parent run (tag {ROLE_TAG} is "
                              f"{tags.get(ROLE_TAG)!r}); pass the parent run's id")
        return run.info.experiment_id, tags.get(SWEEP_NAME_TAG, name), run_id, tags
    experiment = client.get_experiment_by_name(name)
    if experiment is None and name.isdigit():
        experiment = _experiment_by_id(client, name)
    if experiment is None:
        raise ReportError(f"no MLflow experiment named {name!r} in {tracker.tracking_uri}; run the sweep first "
                          f"(python -m jaxmlp.sweep FILE --tracking-uri {tracker.tracking_uri}) or pass "
                          "--tracking-uri where it was logged")
    found = tracker.find_parent(experiment.experiment_id, experiment.name)
    if found is None:
        raise ReportError(f"experiment {experiment.name!r} in {tracker.tracking_uri} has no sweep parent run "
                          f"(tag {SWEEP_NAME_TAG}={experiment.name!r}); pass --run PARENT_RUN_ID")
    return experiment.experiment_id, experiment.name, found[0], found[1]


def _experiment_by_id(client, experiment_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_experiment(experiment_id)
    except MlflowException:
        return None


def _sweep_name(target: str) -> str:
    """A sweep file's `name`; any other target is a sweep (experiment) name or an experiment id."""
    path = Path(target)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        return target
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"{path}: cannot read the sweep file: {err}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ReportError(f"{path}: a sweep file needs a top-level 'name' (the MLflow experiment to report)")
    return raw["name"]


def load_runs(tracker, target: str, run_id: str | None = None) -> SweepRuns:
    """The parent run and the records of its children: final metrics, configuration, histories."""
    from jaxmlp.tracking import VARIANT_KEY_TAG

    experiment_id, name, parent, tags = find_parent(tracker, target, run_id)
    children = _one_per_variant(tracker.children(parent))
    order = _variant_order(tracker, parent, tags)
    children.sort(key=lambda c: (order.get(c["tags"].get(VARIANT_KEY_TAG), len(order)), c["run_name"] or ""))
    return SweepRuns(name, experiment_id, parent, tags, [_record(tracker, c) for c in children])


def _one_per_variant(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One child per variant: a resumed sweep leaves the KILLED or FAILED run of a variant it trained again."""
    from jaxmlp.tracking import VARIANT_KEY_TAG

    rank = {"FINISHED": 0, "FAILED": 1}
    kept: dict[str, dict[str, Any]] = {}
    for child in children:
        key = child["tags"].get(VARIANT_KEY_TAG, child["run_id"])
        if key not in kept or rank.get(child["status"], 2) < rank.get(kept[key]["status"], 2):
            kept[key] = child
    return list(kept.values())


def _variant_order(tracker, parent_run_id: str, tags: dict[str, str]) -> dict[str, int]:
    """Variant key -> index in the sweep file logged on the parent run (the order settings are listed in)."""
    from jaxmlp.sweep.spec import load_sweep

    artifact = Path(tags.get("jaxmlp.sweep_file", "")).name
    if not artifact:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            sweep = load_sweep(tracker.download(parent_run_id, artifact, tmp))
        except Exception:  # noqa: BLE001 - without the file (or a valid one), order by run name
            return {}
    return {v.key: v.index for v in sweep.variants}


def _record(tracker, child: dict[str, Any]) -> dict[str, Any]:
    metrics = child["metrics"]
    record = report.record_from_run(child)
    record["config"] = {k: report.parse_value(v) for k, v in child["params"].items() if k not in _NOT_CONFIG}
    record["history"] = {k: tracker.metric_history(child["run_id"], k) for k in metrics
                         if k in ("train_loss", "val_loss") or k.startswith("dead_fraction_")}
    return record


# -- rendering -----------------------------------------------------------------------------

def provenance(runs: SweepRuns, tracking_uri: str) -> str:
    commit = runs.tags.get("mlflow.source.git.commit")
    return (f"Sweep `{runs.name}`, parent run `{runs.parent_run_id}` in {tracking_uri}"
            + (f", git commit `{commit[:10]}`" if commit else "")
            + f"; generated {time.strftime('%Y-%m-%d %H:%M')} by `python -m jaxmlp.report`.")


def column_notes(metric: str, with_references: bool, with_dead_units: bool = False) -> str:
    what = ("test error (%) = 100 × (1 − test accuracy)" if metric == report.ERROR_PERCENT else "test loss")
    notes = (f"{what} of the parameters kept by early stopping (selected on the validation split), mean ± sample "
             "std over the seeds that finished; epochs are means over seeds; train time is the wall time from the "
             "first epoch of the compiled program the variant trained in until the variant stopped (variants "
             "trained together run at the same time).")
    if with_dead_units:
        notes += (" Dead units (%): per hidden layer (first / second / ...), the share of units that are zero on "
                  "the whole validation split at the last epoch trained, mean over seeds.")
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


def to_html(runs: SweepRuns, table: list[dict[str, Any]], figures: dict[str, bytes], meta: str, notes: str,
            references: list[str]) -> str:
    """One self-contained page: the table and the figures inlined as base64 PNGs."""
    titles, cells = report.table_cells(table, report.HEADERS)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    parts = ["<!doctype html>", "<html><head><meta charset='utf-8'>",
             f"<title>{html.escape(runs.name)} report</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(runs.name)}</h1>",
             f"<p>{html.escape(runs.tags.get('mlflow.note.content', '').strip())}</p>",
             f"<p class='meta'>{html.escape(meta.replace('`', ''))}</p>",
             f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
             f"<p class='meta'>{html.escape(notes)}</p>"]
    if references:
        parts.append("<p>References:</p><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in references) + "</ul>")
    parts += [f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
              f"<figcaption>{html.escape(report.FIGURE_CAPTIONS.get(name, name))}</figcaption></figure>"
              for name, png in figures.items()]
    return "\n".join([*parts, "</body></html>"]) + "\n"


def results_markdown(meta: str, table_md: str, notes: str, references: list[str]) -> str:
    """Provenance, table, column notes and matched references: what goes between a README's markers."""
    refs = "\n\nReferences:\n\n" + "\n".join(f"- {r}" for r in references) if references else ""
    return f"{meta}\n\n{table_md}\n{notes}{refs}\n"


def to_report_markdown(runs: SweepRuns, results: str, figures: dict[str, bytes]) -> str:
    description = runs.tags.get("mlflow.note.content", "").strip()
    figs = "\n".join(f"![{name}]({name})\n\n*{report.FIGURE_CAPTIONS.get(name, name)}*\n" for name in figures)
    return f"# {runs.name}\n\n{description}\n\n{results}\n## Figures\n\n{figs}"


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


# -- the command ---------------------------------------------------------------------------

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


def _references_path(args, tags: dict[str, str]) -> Path | None:
    if args.references:
        return args.references
    sweep_file = Path(args.sweep) if Path(args.sweep).is_file() else Path(tags.get("jaxmlp.sweep_file", ""))
    candidate = sweep_file.parent / REFERENCES_FILE if sweep_file.name else None
    return candidate if candidate is not None and candidate.is_file() else None


@dataclass
class Report:
    """A built report: the table, the files to write (by name) and the block for a README's markers."""

    runs: SweepRuns
    table: list[dict[str, Any]]
    files: dict[str, bytes]
    results: str


def build_report(tracker, runs: SweepRuns, references_path: Path | None) -> Report:
    """Table, figures, Markdown, CSV and HTML of a tracked sweep."""
    entries = load_references(references_path) if references_path else None
    metric = report.display_metric(runs.records)
    references = report.match_references(runs.records, entries, metric) if entries is not None else None
    rows = report.summarize(runs.records)
    table = report.report_rows(rows, references)
    figures = report.sweep_figures(runs.records, rows)
    meta = provenance(runs, tracker.tracking_uri)
    notes = column_notes(metric, bool(references), any("dead_units_percent" in r for r in table))
    cited = references_list(references)
    results = results_markdown(meta, report.to_markdown(table, report.HEADERS), notes, cited)
    files = {"report.md": to_report_markdown(runs, results, figures).encode(),
             "report.csv": report.to_csv(table).encode(),
             "report.html": to_html(runs, table, figures, meta, notes, cited).encode(), **figures}
    return Report(runs, table, files, results)


def run_report(args: argparse.Namespace) -> Path:
    """Build the report, write it to the output folder, log it on the parent run, fill the README."""
    from jaxmlp.tracking import Tracker

    tracker = Tracker(args.tracking_uri)
    runs = load_runs(tracker, args.sweep, args.run)
    if not runs.records:
        raise ReportError(f"parent run {runs.parent_run_id} of sweep {runs.name!r} has no child runs yet")
    if args.readme and not args.readme.is_file():
        raise ReportError(f"--readme {args.readme}: no such file")
    references_path = _references_path(args, runs.tags)
    built = build_report(tracker, runs, references_path)
    readme = (replace_between_markers(args.readme.read_text(), built.results, str(args.readme), runs.name)
              if args.readme else None)
    out = args.out or Path("reports") / runs.name
    out.mkdir(parents=True, exist_ok=True)
    for name, data in built.files.items():
        (out / name).write_bytes(data)
        if not args.no_log:
            tracker.log_file(runs.parent_run_id, out / name, "report")
    if readme is not None:
        args.readme.write_text(readme)
    print(report.to_text(built.table, report.HEADERS))
    print(f"\nreport of sweep '{runs.name}' (parent run {runs.parent_run_id}) in {out}/"
          + ("" if args.no_log else ", logged on the parent run under report/")
          + (f"; references: {references_path}" if references_path else ""))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the sweep file download
    try:
        run_report(args)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
