"""Adaptive search in a sweep's report, from plain `VariantRecord`s: which variants successive
halving pruned and where the compute went (variant-epochs per rung interval), and the lineage
of a population-based training (each member's copies: the epoch and the member it copied
from) with its hyperparameter schedules. Rows only: `tables` formats them, `figures` draws the lineage.

A record's `pruned_at` is the rung epoch that stopped it, its `epochs_trained` the epochs it
trained (always the first ones: a variant that stops never trains again), its `lineage` the
exploit steps ({"epoch", "source"}, source: the variant index of the member copied), and
its history's `hp/<key>` entries the value of each perturbed number at every epoch (the
value it trained with; an exploit after epoch e shows from epoch e + 1 on).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

from jaxmlp.records import VariantRecord
from jaxmlp.report.labels import short_label

#: The prefix of a history entry that holds a perturbed number's value per epoch.
HPARAM_PREFIX = "hp/"

COMPUTE_HEADERS = {"epochs": "epochs", "variants": "variants training", "pruned": "pruned after",
                   "variant_epochs": "variant-epochs", "share_percent": "share (%)"}
LINEAGE_HEADERS = {"member": "member", "setting": "started as", "copied_from": "copied from (epoch: member)",
                   "epochs_trained": "epochs"}


class Section(NamedTuple):
    """A titled table of the report with a sentence above it."""

    title: str
    note: str
    rows: list[dict[str, Any]]
    headers: dict[str, str]


def searched(records: Sequence[VariantRecord]) -> bool:
    """Whether an adaptive search acted on the sweep: a variant was pruned or a member copied another."""
    return any(r.pruned_at is not None or r.lineage for r in records)


def member_id(record: VariantRecord, position: int) -> int:
    """A variant's index in its sweep (what lineage sources name), or its position where it has none."""
    return record.index if record.index is not None else position


def variant_epochs(records: Sequence[VariantRecord]) -> int:
    """The epochs all variants trained, together."""
    return sum(r.epochs_trained or 0 for r in records)


def epoch_budget(records: Sequence[VariantRecord]) -> int | None:
    """The variant-epochs the sweep would spend with every variant trained to its epoch budget
    (None where a record does not carry its configuration)."""
    budgets = [r.config.get("training.epochs") for r in records]
    return None if not budgets or any(b is None for b in budgets) else sum(int(b) for b in budgets)


def rung_intervals(records: Sequence[VariantRecord]) -> list[tuple[int, int]]:
    """The epoch intervals (start, end] between the rungs that pruned a variant, from the first
    epoch to the last epoch any variant trained."""
    rungs = sorted({r.pruned_at for r in records if r.pruned_at is not None})
    last = max((r.epochs_trained or 0 for r in records), default=0)
    bounds = [0, *rungs] + ([last] if last > (rungs[-1] if rungs else 0) else [])
    return list(itertools.pairwise(bounds))


def compute_by_rung(records: Sequence[VariantRecord]) -> list[dict[str, Any]]:
    """One row per rung interval: the variants that trained in it, those pruned at its end, the
    variant-epochs spent in it and their share of all variant-epochs."""
    total = variant_epochs(records)
    rows = []
    for start, end in rung_intervals(records):
        trained = [min(max(r.epochs_trained or 0, start), end) - start for r in records]
        spent = sum(trained)
        rows.append({"epochs": f"{start + 1}–{end}" if end > start + 1 else str(end),
                     "variants": sum(t > 0 for t in trained),
                     "pruned": sum(r.pruned_at == end for r in records),
                     "variant_epochs": spent, "share_percent": 100.0 * spent / total if total else 0.0})
    return rows


def compute_line(records: Sequence[VariantRecord]) -> str:
    """'6 of 8 variants pruned by successive halving; 26 variant-epochs of a budget of 64 (41%)'."""
    spent, budget = variant_epochs(records), epoch_budget(records)
    n_pruned = sum(r.pruned_at is not None for r in records)
    steps = sum(len(r.lineage) for r in records)
    parts = []
    if n_pruned:
        parts.append(f"{n_pruned} of {len(records)} variants pruned by successive halving")
    if steps:
        epochs = sorted({step["epoch"] for r in records for step in r.lineage})
        parts.append(f"{steps} exploit steps of population-based training (after epochs "
                     f"{', '.join(map(str, epochs))})")
    of_budget = f" of a budget of {budget} ({100.0 * spent / budget:.0f}%)" if budget else ""
    return "; ".join([*parts, f"{spent} variant-epochs{of_budget}"])


def pruned_at(runs: Sequence[VariantRecord]) -> int | str | None:
    """The rung that pruned a setting's seeds (they live or die together), 'E (k of n seeds)'
    where only some were, None where none was."""
    epochs = [r.pruned_at for r in runs if r.pruned_at is not None]
    if not epochs:
        return None
    if len(epochs) == len(runs) and len(set(epochs)) == 1:
        return epochs[0]
    return f"{'/'.join(map(str, sorted(set(epochs))))} ({len(epochs)} of {len(runs)} seeds)"


# -- population-based training ----------------------------------------------------------------

def lineage_steps(records: Sequence[VariantRecord]) -> list[dict[str, int]]:
    """Every exploit step as {"epoch", "member", "source"} (variant indices), by epoch then member."""
    steps = [{"epoch": int(step["epoch"]), "member": member_id(r, i), "source": int(step["source"])}
             for i, r in enumerate(records) for step in r.lineage]
    return sorted(steps, key=lambda s: (s["epoch"], s["member"]))


def hparam_schedules(records: Sequence[VariantRecord]) -> dict[str, dict[int, tuple[list[int], list[float]]]]:
    """Perturbed key -> member -> (epochs, values) from the records' `hp/<key>` histories."""
    out: dict[str, dict[int, tuple[list[int], list[float]]]] = {}
    for i, r in enumerate(records):
        for name, (epochs, values) in r.history.items():
            if name.startswith(HPARAM_PREFIX):
                out.setdefault(name[len(HPARAM_PREFIX):], {})[member_id(r, i)] = (list(epochs), list(values))
    return out


def lineage_rows(records: Sequence[VariantRecord]) -> list[dict[str, Any]]:
    """One row per member that copied another: its initial setting, its copies and its epochs."""
    return [{"member": f"#{member_id(r, i)}", "setting": f"{short_label(r.setting)} · seed {r.seed}",
             "copied_from": ", ".join(f"{step['epoch']}: #{step['source']}" for step in r.lineage),
             "epochs_trained": r.epochs_trained}
            for i, r in enumerate(records) if r.lineage]


def search_sections(records: Sequence[VariantRecord]) -> list[Section]:
    """The report's tables of an adaptive search (none where no search acted): where compute
    went, per rung interval (successive halving pruned variants), and the members' copies
    (population-based training); the first says how many variant-epochs the sweep spent."""
    sections = []
    if any(r.pruned_at is not None for r in records):
        sections.append(Section("Where compute went", f"{compute_line(records)}. Per interval between the rungs that "
                                "pruned variants: the variants that trained in it, those pruned at its end, and the "
                                "variant-epochs spent.", compute_by_rung(records), COMPUTE_HEADERS))
    if any(r.lineage for r in records):
        spent = "" if sections else f"{compute_line(records)}. "
        sections.append(Section("Lineage", f"{spent}Each member that copied the parameters, optimizer state and "
                                "numbers of another (after the epoch named), then perturbed them.",
                                lineage_rows(records), LINEAGE_HEADERS))
    return sections
