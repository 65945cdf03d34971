"""The per-variant record: what one trained variant ended with, as plain data.

The sweep runner and the train command build records from the engine's results
(`VariantResult.record`); tracking builds them from what MLflow holds; tables and figures
read them. A record holds no arrays and names no MLflow tag. A variant's setting is kept
as structured values (swept key -> value); its label, e.g.
"model.activation=relu, model.dropout=0.2", is derived from them for display and for
matching reference numbers, and never parsed back.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

#: Statuses a record may have (those of MLflow runs).
STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")


def format_value(value: Any) -> str:
    """A setting value as labels and legends show it: 0.0003 -> '0.0003', [128, 128] -> '128x128'."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return str(value)


#: The setting key of a zipped setting's name (a sweep file's `zip.name`): the name stands for
#: the zipped values in labels; they stay in the variant's configuration.
SETTING_NAME = "name"


def setting_label(setting: Mapping[str, Any]) -> str:
    """'model.activation=relu, model.dropout=0.2' (swept keys in sweep order), or 'base'; a named
    setting's name alone: 'ReLU + max-norm, optimizer.learning_rate=0.1'."""
    return ", ".join(str(v) if k == SETTING_NAME else f"{k}={format_value(v)}" for k, v in setting.items()) or "base"


@dataclasses.dataclass
class VariantRecord:
    """One variant's outcome.

    `metrics` holds its final numbers by name: `test_*` (selected parameters on the test
    split), `final_train_*` (the same parameters on the training split, evaluation mode),
    `best_val_*` (the validation metrics of the selected epoch). `history` maps a
    per-epoch metric to (epochs, values), where the source keeps histories. `reliability`
    (classification) is the test split's reliability curve: per equal-width confidence bin
    the mean top-label confidence, the accuracy and the number of examples, under the keys
    "confidence", "accuracy" and "count" (0, 0, 0 for an empty bin).
    """

    setting: dict[str, Any]
    seed: int
    status: str
    variant_key: str | None = None
    index: int | None = None  # position in its sweep's expansion
    run_id: str | None = None
    diverged: bool = False
    best_epoch: int | None = None
    stopped_epoch: int | None = None
    n_params: int | None = None
    train_seconds: float | None = None
    compile_seconds: float | None = None
    epochs_trained: int | None = None
    pruned_at: int | None = None  # the epoch an adaptive search (successive halving) stopped it in
    lineage: list[dict[str, int]] = dataclasses.field(default_factory=list)  # PBT: epoch and source of each copy
    reliability: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # see the class docstring
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # resolved configuration by dotted key
    history: dict[str, tuple[list[int], list[float]]] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return setting_label(self.setting)

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    def metric(self, name: str) -> float | None:
        """A final metric by name (None where the variant has none, e.g. accuracy of a regression)."""
        return self.metrics.get(name)
