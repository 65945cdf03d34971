"""Choosing a setting's best variant: the one whose monitored validation metric at its best
epoch is best. Its model is the one a setting logs; the best of all is the sweep's."""
from __future__ import annotations

import math
from dataclasses import dataclass

from jaxmlp.engine import VariantResult
from jaxmlp.records import VariantRecord
from jaxmlp.sweep.spec import Variant


@dataclass(frozen=True)
class BestVariant:
    """A candidate for its setting's best: its score (lower is better), the variant, and the
    result and dataset facts (`checkpoint.checkpoint_meta`) its checkpoint is written from
    (None: it finished in an earlier invocation of the sweep, and its checkpoint is on its run)."""

    score: float
    variant: Variant
    result: VariantResult | None = None
    meta: dict | None = None


def selection_score(variant: Variant, record: VariantRecord) -> float:
    """Lower is better: the monitored validation metric at the best epoch; inf where it
    diverged or has none."""
    monitor = variant.config.training.early_stopping.monitor
    value = record.metric(f"best_{monitor}")
    score = math.nan if value is None else value if monitor == "val_loss" else -value
    return score if math.isfinite(score) and not record.diverged else math.inf


def consider(best: dict[str, BestVariant], candidate: BestVariant) -> None:
    """Keep `candidate` as its setting's best if it scores better than the one kept so far."""
    label = candidate.variant.label
    if candidate.score < (best[label].score if label in best else math.inf):
        best[label] = candidate


def overall_best(best: dict[str, BestVariant]) -> BestVariant | None:
    """The sweep's best variant among the settings' best (None before any finished)."""
    return min(best.values(), key=lambda b: b.score, default=None)
