"""What the final evaluation measures besides the test metric, as table columns from plain
`VariantRecord`s: training error, calibration (ECE, Brier score, a fitted temperature) and
error under input noise; and the pooled reliability curve of a setting."""
from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np

from jaxmlp.records import VariantRecord

#: Column titles of the evaluation columns with a fixed key (noise columns are titled by their key).
EVALUATION_HEADERS = {
    "train_error_percent": "train error (%)", "ece_percent": "ECE (%)", "brier": "Brier",
    "temperature": "temperature", "ece_temperature_percent": "ECE at temperature (%)",
}
_NOISE_METRIC = re.compile(r"^test_accuracy_noise_(.+)$")
_NOISE_COLUMN = "error (%) at noise {}"


def is_evaluation_column(key: str) -> bool:
    """Whether a table column is one of `evaluation_columns`."""
    return key in EVALUATION_HEADERS or key.startswith(_NOISE_COLUMN.format(""))


def _mean(values: Iterable[float | None]) -> float:
    """The mean of the finite values (NaN where there are none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def noise_levels(records: Sequence[VariantRecord]) -> list[str]:
    """The input-noise levels the records were tested at (as their metric names write them), ascending."""
    found = {m.group(1) for r in records for key in r.metrics if (m := _NOISE_METRIC.match(key))}
    return sorted(found, key=float)


def _percent_error(value: float | None) -> float | None:
    return None if value is None else 100.0 * (1.0 - value)


def evaluation_columns(runs: Sequence[VariantRecord], levels: Sequence[str]) -> dict[str, float]:
    """Means over the finished `runs` of one setting: training error (%, evaluation mode, the
    selected parameters), test ECE (%) and Brier score, the fitted temperature and the ECE (%)
    with it, and the test error (%) at each noise level; only the columns the runs measured."""
    def mean(value) -> float:
        return _mean(map(value, runs))

    columns = {
        "train_error_percent": mean(lambda r: _percent_error(r.metric("final_train_accuracy"))),
        "ece_percent": mean(lambda r: 100.0 * r.metrics["test_ece"] if "test_ece" in r.metrics else None),
        "brier": mean(lambda r: r.metric("test_brier")),
        "temperature": mean(lambda r: r.metric("test_temperature")),
        "ece_temperature_percent": mean(lambda r: 100.0 * r.metrics["test_ece_temperature"]
                                        if "test_ece_temperature" in r.metrics else None),
        **{_NOISE_COLUMN.format(level): mean(lambda r, level=level: _percent_error(
            r.metric(f"test_accuracy_noise_{level}"))) for level in levels},
    }
    return {key: value for key, value in columns.items() if math.isfinite(value)}


def evaluation_notes(columns: Sequence[str]) -> str:
    """The table notes of the evaluation columns present."""
    notes = {
        "train_error_percent": "Train error (%): the kept parameters on the training split in evaluation mode.",
        "ece_percent": "ECE (%): expected calibration error on the test split, top-label, 15 equal-width "
                       "confidence bins; Brier: the mean squared distance of the softmax to the one-hot label, "
                       "summed over classes.",
        "temperature": "Temperature: one per variant, fitted on the validation split (minimum NLL); ECE at "
                       "temperature: the test ECE of the softmax of logits / temperature.",
    }
    text = " ".join(note for key, note in notes.items() if key in columns)
    if any(c.startswith(_NOISE_COLUMN.format("")) for c in columns):
        text += (" Error at noise σ: the test error (%) with Gaussian noise of std σ added to the inputs "
                 "(normalised scale, the same draws for every variant).")
    return text.strip()


def pooled_reliability(runs: Sequence[VariantRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean confidence, accuracy and count per non-empty confidence bin, pooled over `runs`."""
    curves = [r.reliability for r in runs if r.reliability]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    count = np.sum([c["count"] for c in curves], axis=0)
    confidence = np.sum([np.multiply(c["confidence"], c["count"]) for c in curves], axis=0)
    correct = np.sum([np.multiply(c["accuracy"], c["count"]) for c in curves], axis=0)
    kept = count > 0
    return confidence[kept] / count[kept], correct[kept] / count[kept], count[kept]
