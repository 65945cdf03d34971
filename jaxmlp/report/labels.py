"""Short names of settings for narrow places: the MLflow UI's Run Name column and metric
names on a sweep's parent run. The swept values lead ('relu · seed 4', 'lr 3e-4 · drop 0.2 ·
seed 1'): names stand alone, numbers follow a short key name. The full setting stays in the
runs' params and tags (`jaxmlp.records.setting_label`).
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping

#: Short names of swept keys (by their last part); others show that last part.
SHORT_KEYS = {
    "learning_rate": "lr", "dropout": "drop", "input_dropout": "in-drop", "weight_decay": "wd",
    "momentum": "mom", "batch_size": "batch", "leaky_slope": "slope", "noise_std": "noise",
    "elu_alpha": "alpha", "patience": "patience", "divergence_factor": "div",
}
SEPARATOR = " · "
#: The most characters of a `metric_label`: MLflow keys take 250, and the label follows a
#: statistic's name ('test_accuracy_mean/').
METRIC_LABEL_CHARS = 200


def short_number(value: float) -> str:
    """0.0003 -> '3e-4', 1e30 -> '1e30', 0.2 -> '0.2': the fewest characters that keep 3 significant digits."""
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.3g}"


def short_value(key: str, value: Any) -> str:
    """One swept value: a name alone ('relu'), anything else after its short key ('lr 3e-4')."""
    if isinstance(value, str):
        return value
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = short_number(value)
    elif isinstance(value, (list, tuple)):
        text = "x".join(map(str, value))
    else:
        text = str(value)
    return f"{SHORT_KEYS.get(name, name)} {text}"


def short_label(setting: Mapping[str, Any]) -> str:
    """'relu', 'lr 3e-4 · drop 0.2' (swept keys in sweep order), or 'base'."""
    return SEPARATOR.join(short_value(k, v) for k, v in setting.items()) or "base"


def run_name(setting: Mapping[str, Any], seed: int) -> str:
    """A variant's run name: 'relu · seed 4', or 'seed 0' where nothing is swept."""
    return SEPARATOR.join([*(short_value(k, v) for k, v in setting.items()), f"seed {seed}"])


def metric_label(setting: Mapping[str, Any]) -> str:
    """`short_label` in the characters MLflow allows in metric names, slashes (chart
    sections) left out: 'lr 3e-4 drop 0.2'; one longer than `METRIC_LABEL_CHARS` is cut and
    ends in a digest of the whole label ('... 1a2b3c4d'), so distinct settings keep distinct
    names (the summary table beside the metrics has the whole setting)."""
    label = " ".join(re.sub(r"[^\w.\- :]+", " ", short_label(setting)).split())
    if len(label) <= METRIC_LABEL_CHARS:
        return label
    digest = hashlib.sha256(label.encode()).hexdigest()[:8]
    return f"{label[:METRIC_LABEL_CHARS - 12].rstrip()}... {digest}"
