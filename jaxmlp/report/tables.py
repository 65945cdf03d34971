"""A sweep's table: one row per setting (mean and std over seeds of the test metric, epochs,
parameters, time) from plain `VariantRecord`s, and that table as Markdown, CSV or text.

The sweep runner summarises the records of its own results; `python -m jaxmlp.report` those
that tracking reads back. Both go through the same functions, so both produce the same table.
"""
from __future__ import annotations

import csv
import io
import math
import re
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from jaxmlp.records import VariantRecord
from jaxmlp.report.evaluation import EVALUATION_HEADERS, evaluation_columns, is_evaluation_column, noise_levels
from jaxmlp.report.labels import metric_label
from jaxmlp.report.search import Section, pruned_at, search_sections, searched, variant_epochs

#: The report's classification metric: 100 x (1 - test accuracy).
ERROR_PERCENT = "test_error_percent"

#: Column titles of the report's table (`report_rows`); other columns show their key.
HEADERS = {
    ERROR_PERCENT: "test error (%)", "test_loss": "test loss", "n_seeds": "seeds", "best_epoch": "best epoch",
    "stopped_epoch": "stopped epoch", "n_params": "params", "train_seconds": "train time (s)",
    "reference": "reference", "reference_diff": "Δ (ours − ref)", "reference_source": "source",
    "dead_units_percent": "dead units (%)", "pruned_at": "pruned at epoch", "variant_epochs": "variant-epochs",
    **EVALUATION_HEADERS,
}
_PERCENT_KEYS = (ERROR_PERCENT, "reference", "reference_diff")
#: Characters a Markdown renderer would read as markup or HTML, and what stands for each.
_MARKDOWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;", **{c: "\\" + c for c in "\\`*[]|"}}
#: Control characters (newlines, terminal escapes): shown as Python escapes (`\n`, `\x1b`).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def primary_metric(records: Sequence[VariantRecord]) -> str:
    """test_accuracy for classification sweeps, test_loss otherwise."""
    return "test_accuracy" if any(r.metric("test_accuracy") is not None for r in records) else "test_loss"


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample std of the finite values (NaN, NaN where there are none)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def by_setting(records: Sequence[VariantRecord]) -> dict[str, list[VariantRecord]]:
    """Records by their setting's label, settings in first-appearance order."""
    found: dict[str, list[VariantRecord]] = {}
    for r in records:
        found.setdefault(r.label, []).append(r)
    return found


def finished(records: Iterable[VariantRecord]) -> list[VariantRecord]:
    return [r for r in records if r.finished]


def summarize(records: Sequence[VariantRecord]) -> list[dict[str, Any]]:
    """One row per setting (first-appearance order): mean and std over seeds of the test metric;
    where an adaptive search acted, also the rung that pruned it (successive halving) and the
    variant-epochs its seeds trained; the final evaluation's other measurements
    (`evaluation_columns`: training error, calibration, error under input noise)."""
    metric = primary_metric(records)
    levels = noise_levels(records)
    any_pruned, search = any(r.pruned_at is not None for r in records), searched(records)
    rows = []
    for setting, runs in by_setting(records).items():
        good = finished(runs)
        mean, std = mean_std(r.metric(metric) for r in good)
        rows.append({
            "setting": setting, "n_seeds": len(good), metric: mean, f"{metric}_std": std,
            "best_epoch": mean_std(r.best_epoch for r in good)[0],
            "stopped_epoch": mean_std(r.stopped_epoch for r in good)[0],
            "diverged": sum(r.diverged for r in runs),
            "failed": sum(r.status == "FAILED" and not r.diverged for r in runs),
            "n_params": next((r.n_params for r in runs if r.n_params is not None), None),
            "train_seconds": mean_std(r.train_seconds for r in good)[0],
        })
        if any_pruned:
            rows[-1]["pruned_at"] = pruned_at(runs)
        if search:
            rows[-1]["variant_epochs"] = variant_epochs(runs)
        dead = _dead_units_percent(good)
        if dead is not None:
            rows[-1]["dead_units_percent"] = dead
        rows[-1].update(evaluation_columns(good, levels))
    return rows


def _dead_units_percent(runs: Sequence[VariantRecord]) -> str | None:
    """Per hidden layer, the percentage of dead units (zero on the whole validation split) at
    the last epoch trained, mean over seeds, as "layer 1 / layer 2 / ..."; None without
    histories (records read back for the report carry them, the sweep's own do not). Runs
    trained without a validation split have no such history: theirs is measured on the test
    split, for the tested parameters (`test_dead_fraction_<layer>`)."""
    per_layer: dict[int, list[float]] = {}
    for r in runs:
        last = [(key, values[-1]) for key, (_, values) in r.history.items()
                if key.startswith("dead_fraction_") and values]
        on_test = [(key, value) for key, value in r.metrics.items()
                   if key.startswith("test_dead_fraction_")] if _unvalidated(r) else []
        for key, fraction in last + on_test:
            per_layer.setdefault(int(key.rsplit("_", 1)[1]), []).append(100.0 * fraction)
    if not per_layer:
        return None
    return " / ".join(f"{np.mean(per_layer[layer]):.1f}" for layer in sorted(per_layer))


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The setting with the best mean test metric (highest accuracy or lowest loss)."""
    metric = "test_accuracy" if rows and "test_accuracy" in rows[0] else "test_loss"
    scored = [r for r in rows if math.isfinite(r[metric])]
    if not scored:
        return None
    return (max if metric == "test_accuracy" else min)(scored, key=lambda r: r[metric])


class SweepSummary(NamedTuple):
    """What a sweep's parent run gets besides its plots."""

    files: dict[str, bytes]  # the summary table as CSV and Markdown, by file name
    metrics: dict[str, float]  # counts, the best setting's test metric, each setting's mean and std over seeds
    best_setting: str | None  # the label of the setting with the best mean test metric
    table: dict[str, list[Any]]  # the summary table by column, for MLflow's table view


def setting_metrics(records: Sequence[VariantRecord], rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each setting's mean and std over seeds of the test metric, named for the UI's charts:
    'test_accuracy_mean/relu', 'test_accuracy_std/relu' (one chart section per statistic)."""
    metric = primary_metric(records)
    names = {label: metric_label(runs[0].setting) for label, runs in by_setting(records).items()}
    out: dict[str, float] = {}
    for row in rows:
        if math.isfinite(row[metric]):
            out[f"{metric}_mean/{names[row['setting']]}"] = row[metric]
            out[f"{metric}_std/{names[row['setting']]}"] = row[f"{metric}_std"]
    return out


def sweep_summary(records: Sequence[VariantRecord], rows: Sequence[dict[str, Any]], n_failed: int) -> SweepSummary:
    """The parent run's summary of `rows` (`summarize`): table files (with an adaptive search's
    tables, see `search_markdown`), metrics (counts, with a search also of pruned variants and
    variant-epochs; the best setting's test metric, each setting's mean and std), the best
    setting and the table."""
    files = {"summary.csv": to_csv(rows).encode(), "summary.md": (to_markdown(rows) + search_markdown(records)).encode()}
    metrics = {"n_variants": len(records), "n_failed": n_failed, "n_diverged": sum(r.diverged for r in records),
               **setting_metrics(records, rows)}
    if searched(records):
        metrics.update(n_pruned=sum(r.pruned_at is not None for r in records), variant_epochs=variant_epochs(records))
    table = {column: [row.get(column) for row in rows] for column in _columns(rows)}
    best = best_row(rows)
    if best is None:
        return SweepSummary(files, metrics, None, table)
    metric = primary_metric(records)
    metrics[f"best_setting_{metric}"] = best[metric]
    return SweepSummary(files, metrics, best["setting"], table)


def best_first(records: Sequence[VariantRecord], rows: Sequence[dict[str, Any]],
               monitor: str = "val_loss") -> tuple[str, list[dict[str, Any]]]:
    """The `summarize` rows ranked as the sweep selects models: by the seeds' mean validation
    `monitor` at their selected epochs (lowest loss or highest accuracy first, settings without
    one last), shown as a column after the setting; and a header that states the order.
    Test metrics play no part in the order, as they play none in selection. Without any
    validation metric (variants trained without a validation split) the order is the sweep's."""
    key = f"best_{monitor}"
    score = setting_scores(records, monitor)
    if finished(records) and not any(math.isfinite(v) for v in score.values()):
        return "settings in the sweep's order (no validation split, data.val_size 0: nothing selects among them)", list(rows)
    rank = _best_first_key(score, monitor)
    ranked = [{"setting": r["setting"], key: score.get(r["setting"], math.nan), **r}
              for r in sorted(rows, key=lambda row: rank(row["setting"]))]
    return f"settings best first: {_better(monitor)} mean {key} over seeds (the validation metric that selects models)", ranked


def _better(monitor: str) -> str:
    """Which end of `monitor` is best: 'lowest' for a loss, 'highest' for an accuracy."""
    return "lowest" if "loss" in monitor else "highest"


def _best_first_key(score: Mapping[str, float], monitor: str) -> Callable[[str], tuple[bool, float]]:
    """The sort key of a setting's label, best first by its `score` of `monitor`, settings without one last."""
    sign = 1.0 if "loss" in monitor else -1.0

    def rank(label: str) -> tuple[bool, float]:
        value = score.get(label, math.nan)
        return (not math.isfinite(value), sign * value if math.isfinite(value) else 0.0)

    return rank


def records_monitor(records: Sequence[VariantRecord]) -> str:
    """The validation metric that selected the records' models (their early-stopping monitor)."""
    return next((r.config["training.early_stopping.monitor"] for r in records
                 if "training.early_stopping.monitor" in r.config), "val_loss")


def setting_scores(records: Sequence[VariantRecord], monitor: str = "val_loss") -> dict[str, float]:
    """Each setting's mean over its finished seeds of `best_<monitor>` (NaN without one), by label."""
    key = f"best_{monitor}"
    return {label: mean_std(r.metric(key) for r in finished(runs))[0] for label, runs in by_setting(records).items()}


#: The most settings a figure of one panel per setting draws (learning curves, reliability
#: diagrams): beyond a 4 x 4 grid the panels are unreadable and the figure costs seconds.
PANEL_SETTINGS = 16


def panel_settings(records: Sequence[VariantRecord], limit: int = PANEL_SETTINGS) -> tuple[dict[str, list[VariantRecord]], str]:
    """The settings a figure of one panel each draws, by label with their finished records: all
    of them, in the sweep's order, up to `limit`; beyond it the `limit` best as the sweep
    selects models (mean validation monitor over seeds, `best_first`'s order), best first.
    And the note the figure shows when it leaves settings out ('' when none)."""
    groups = {label: finished(runs) for label, runs in by_setting(records).items()}
    if len(groups) <= limit:
        return groups, ""
    monitor = records_monitor(records)
    ranked = sorted(groups, key=_best_first_key(setting_scores(records, monitor), monitor))
    note = (f"the {limit} best of {len(groups)} settings ({_better(monitor)} mean best_{monitor} over seeds), "
            "best first; every setting's curves are on its run")
    return {label: groups[label] for label in ranked[:limit]}, note


# -- the report's table --------------------------------------------------------------------

def display_metric(records: Sequence[VariantRecord]) -> str:
    """What the report shows: test error in percent for classification, test loss otherwise."""
    return ERROR_PERCENT if primary_metric(records) == "test_accuracy" else "test_loss"


def record_value(record: VariantRecord, metric: str) -> float | None:
    """A record's value of a displayed metric (test error in percent, or a metric by name)."""
    if metric == ERROR_PERCENT:
        acc = record.metric("test_accuracy")
        return None if acc is None else 100.0 * (1.0 - acc)
    return record.metric(metric)


def _unvalidated(record: VariantRecord) -> bool:
    """Whether the variant trained without a validation split (data.val_size 0)."""
    return record.config.get("data.val_size") == 0


def without_validation(records: Sequence[VariantRecord]) -> bool:
    """Whether every variant trained without a validation split: nothing selected an epoch,
    each kept its last parameters."""
    return bool(records) and all(map(_unvalidated, records))


def report_rows(rows: Sequence[dict[str, Any]],
                references: Mapping[str, Mapping[str, Any]] | None = None,
                validated: bool = True) -> list[dict[str, Any]]:
    """The report's table from `summarize` rows: test error (%) (classification) or test loss as mean ± std over
    seeds, seeds, best and stopped epoch, parameters, training time; with `references` (setting -> entry, see
    `match_references`; none matched: no such columns) also the reference value, its source and the difference
    ours − reference. Without validation (`validated` False) there is no best epoch to show."""
    show_failures = any(r["diverged"] or r["failed"] for r in rows)
    out = []
    for r in rows:
        if "test_accuracy" in r:
            metric, mean, std = ERROR_PERCENT, 100.0 * (1.0 - r["test_accuracy"]), 100.0 * r["test_accuracy_std"]
        else:
            metric, mean, std = "test_loss", r["test_loss"], r["test_loss_std"]
        row = {"setting": r["setting"], metric: mean, f"{metric}_std": std, "n_seeds": r["n_seeds"],
               "best_epoch": r["best_epoch"], "stopped_epoch": r["stopped_epoch"],
               "n_params": int(r["n_params"]) if r.get("n_params") is not None else None,
               "train_seconds": r.get("train_seconds", math.nan)}
        if not validated:
            del row["best_epoch"]
        row.update({k: r[k] for k in ("dead_units_percent", "pruned_at", "variant_epochs") if k in r})
        row.update({k: v for k, v in r.items() if is_evaluation_column(k)})
        if show_failures:
            row.update(diverged=r["diverged"], failed=r["failed"])
        if references:
            ref = references.get(r["setting"])
            value = float(ref["value"]) if ref else math.nan
            row.update(reference=value, reference_diff=mean - value, reference_source=ref["source"] if ref else "")
        out.append(row)
    return out


# -- text tables ---------------------------------------------------------------------------

#: Significant digits of a column's largest number; the column's other numbers get as many decimals.
SIGNIFICANT = 4


def _decimals(values: Sequence[Any]) -> int | None:
    """Decimals for a column of numbers: `SIGNIFICANT` digits of its largest magnitude (at most 6
    decimals; none where every number is whole), so that one column's numbers line up and compare
    digit by digit (None: no floats)."""
    finite = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v)]
    if not finite:
        return None
    if all(v == int(v) for v in finite):  # e.g. the mean best epoch where every seed agrees (zeros too)
        return 0
    return min(6, max(0, SIGNIFICANT - 1 - math.floor(math.log10(max(finite)))))


def _cell(value: Any, key: str = "", decimals: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if key in _PERCENT_KEYS:
            return f"{value:+.2f}" if key == "reference_diff" else f"{value:.2f}"
        return f"{value:,.{decimals}f}" if decimals is not None else f"{value:.{SIGNIFICANT}g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _table_metric(rows: Sequence[dict[str, Any]]) -> str | None:
    """The column shown as mean ± std: the first one with a `<name>_std` partner."""
    return next((c for c in _columns(rows) if f"{c}_std" in rows[0]), None)


def table_cells(rows: Sequence[dict[str, Any]],
                headers: Mapping[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Column titles and formatted cells; the metric shows as mean ± std (percent with 2
    decimals), as the value alone where one seed finished (a spread of one is not 0)."""
    metric = _table_metric(rows)
    columns = [c for c in _columns(rows) if c != f"{metric}_std"]
    digits = 2 if metric in _PERCENT_KEYS else 4

    def spread(r: Mapping[str, Any], c: str) -> str:
        return f" ± {r[f'{c}_std']:.{digits}f}" if r.get("n_seeds", 2) > 1 else ""

    decimals = {c: _decimals([r.get(c) for r in rows]) for c in columns}
    cells = [[f"{r[c]:.{digits}f}{spread(r, c)}" if c == metric and math.isfinite(r[c])
              else _cell(r.get(c), c, decimals[c]) for c in columns] for r in rows]
    return [(headers or {}).get(c, c) for c in columns], cells


def plain_text(text: str) -> str:
    """`text` on one line, its control characters (newline, escape) shown as `\\n`, `\\x1b`:
    a setting's name cannot break a table's rows or drive the terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def markdown_text(text: str) -> str:
    """`text` as literal Markdown on one line: no raw HTML, link, code, emphasis or table
    cell boundary comes from it (`plain_text`, then `&<>` as entities, the rest escaped)."""
    return "".join(_MARKDOWN.get(c, c) for c in plain_text(text))


def to_markdown(rows: Sequence[dict[str, Any]], headers: Mapping[str, str] | None = None) -> str:
    """A Markdown table (every title and cell `markdown_text`); the test metric shows as mean ± std."""
    if not rows:
        return "(no runs)\n"
    titles, cells = table_cells(rows, headers)
    lines = ["| " + " | ".join(map(markdown_text, titles)) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(map(markdown_text, row)) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows), restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_text(rows: Sequence[dict[str, Any]], headers: Mapping[str, str] | None = None) -> str:
    """An aligned plain-text table for the terminal (every cell `plain_text`)."""
    if not rows:
        return "(no runs)"
    titles, cells = table_cells(rows, headers)
    table = [[plain_text(cell) for cell in row] for row in [titles, *cells]]
    widths = [max(len(row[j]) for row in table) for j in range(len(titles))]
    return "\n".join("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w)
                               in enumerate(zip(row, widths))) for row in table)


def sections_text(sections: Sequence[Section]) -> str:
    """Titled tables as aligned text for the terminal; '' without any."""
    return "\n\n".join(f"{s.title}: {s.note}\n{to_text(s.rows, s.headers)}" for s in sections)


def sections_markdown(sections: Sequence[Section]) -> str:
    """Titled tables as Markdown sections; '' without any."""
    return "".join(f"\n### {s.title}\n\n{s.note}\n\n{to_markdown(s.rows, s.headers)}" for s in sections)


def search_text(records: Sequence[VariantRecord]) -> str:
    """An adaptive search's tables (`search_sections`: where compute went, lineage) as aligned
    text for the terminal; '' where no search acted."""
    return sections_text(search_sections(records))


def search_markdown(records: Sequence[VariantRecord]) -> str:
    """An adaptive search's tables as Markdown sections; '' where no search acted."""
    return sections_markdown(search_sections(records))
