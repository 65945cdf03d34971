"""What trained variants end with, as the Trainer hands it over: plain Python values and
host arrays, nothing left on the device; and how it is assembled from what the programs
return per slot (epoch records, a part's final evaluation)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from jaxmlp.config import RunConfig
from jaxmlp.engine.evaluation import RELIABILITY_ROWS
from jaxmlp.engine.structure import Structure
from jaxmlp.models import count_params
from jaxmlp.records import VariantRecord


@dataclasses.dataclass
class VariantResult:
    """What one variant ended with; `history` has one record per epoch it trained."""

    config: RunConfig
    best_epoch: int
    stopped_epoch: int
    epochs_trained: int
    diverged: bool
    test: dict[str, float]
    history: list[dict[str, float]]
    params: Any
    train_final: dict[str, float] = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0  # from the group's first epoch until this variant stopped
    pruned_at: int | None = None  # the epoch an adaptive search stopped it in
    lineage: list[dict[str, int]] = dataclasses.field(default_factory=list)  # exploit steps: epoch, source index
    test_dead_fraction: list[float] = dataclasses.field(default_factory=list)  # per hidden layer, on the test split
    reliability: list[list[float]] = dataclasses.field(default_factory=list)  # test split: RELIABILITY_ROWS x bins

    @property
    def best(self) -> dict[str, float]:
        """The epoch record at the best epoch (empty if no epoch improved)."""
        return next((r for r in self.history if r["epoch"] == self.best_epoch), {})

    def record(self, setting: dict[str, Any], *, status: str | None = None, **fields: Any) -> VariantRecord:
        """This variant's `VariantRecord` (status: FAILED when it diverged, else FINISHED;
        `fields`: identities such as variant_key, index, run_id, compile_seconds). Without a
        validation split nothing selects an epoch: no best epoch."""
        metrics = {**{f"test_{k}": v for k, v in self.test.items()},
                   **{f"final_train_{k}": v for k, v in self.train_final.items()},
                   **{f"best_{k}": self.best[k] for k in ("val_loss", "val_accuracy") if k in self.best},
                   **{f"test_dead_fraction_{j}": f for j, f in enumerate(self.test_dead_fraction)}}
        return VariantRecord(
            setting=dict(setting), seed=self.config.training.seed,
            status=status or ("FAILED" if self.diverged else "FINISHED"), diverged=self.diverged,
            best_epoch=self.best_epoch if self.config.data.validated else None, stopped_epoch=self.stopped_epoch,
            n_params=count_params(self.params),
            train_seconds=self.train_seconds, epochs_trained=self.epochs_trained, pruned_at=self.pruned_at,
            lineage=list(self.lineage), reliability=dict(zip(RELIABILITY_ROWS, self.reliability)), metrics=metrics, config=self.config.flat(), **fields)


@dataclasses.dataclass
class GroupResult:
    structures: list[Structure]
    variants: list[VariantResult]
    compile_seconds: float
    train_seconds: float


def variant_result(config: RunConfig, row: int, params, test: Mapping[str, np.ndarray],
                   train: Mapping[str, np.ndarray], ends: Mapping[str, np.ndarray], **fields: Any) -> VariantResult:
    """The result of the variant in slot `row` of a part, from the part's final evaluation
    (`programs.program_final`: parameters, test and training-split metrics, epoch counts);
    `fields`: what only the trainer knows (history, train seconds, pruning, lineage)."""
    return VariantResult(
        config=config, best_epoch=int(ends["best_epoch"][row]),
        stopped_epoch=int(ends["stopped_epoch"][row]) or int(ends["epoch"][row]),
        epochs_trained=int(ends["epoch"][row]), diverged=bool(ends["diverged"][row]),
        test={k: float(v[row]) for k, v in test.items() if np.ndim(v[row]) == 0},
        train_final={k: float(v[row]) for k, v in train.items() if np.ndim(v[row]) == 0},
        reliability=test["reliability"][row].tolist() if "reliability" in test else [],
        params=jax.tree_util.tree_map(lambda a: a[row], params),
        test_dead_fraction=[float(x) for x in test["dead_fraction"][row]], **fields)


def over_variants(per_family: Sequence[Mapping[str, np.ndarray]], occupants: np.ndarray,
                  last: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An epoch's per-slot records (per family, arrays [part, slot, ...]) as arrays over the
    variants (`occupants`: the variant of every slot, families flattened in order, -1 empty).
    A variant in no slot did not train (NaN metrics, False, 0); its divergence and best epoch
    stay as last seen (`last`, arrays over variants, updated in place)."""
    held = occupants >= 0
    n = len(last["diverged"])
    record = {}
    for key in per_family[0]:
        flat = np.concatenate([np.asarray(r[key]).reshape(-1, *np.shape(r[key])[2:]) for r in per_family])
        if key in last:
            last[key][occupants[held]] = flat[held]
            record[key] = last[key].copy()
            continue
        fill = False if flat.dtype == bool else (0 if flat.dtype.kind in "iu" else np.nan)
        out = np.full((n, *flat.shape[1:]), fill, flat.dtype)
        out[occupants[held]] = flat[held]
        record[key] = out
    return record


def variant_history(records: Sequence[dict[str, np.ndarray]], i: int) -> list[dict[str, float]]:
    """Variant i's per-epoch metrics (only the program's epochs it trained in, numbered by its
    own epoch count), with one key per dead-unit layer. Records of epochs before the variant
    was added to its trainer (`Trainer.add`) are shorter than i: it did not train in them."""
    history = []
    for r in records:
        if i >= len(r["trained"]) or not r["trained"][i]:
            continue
        row = {"epoch": int(r["variant_epoch"][i]), "epoch_seconds": r["epoch_seconds"]}
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_ece", "learning_rate",
                    "momentum"):
            if key in r and (np.isfinite(r[key][i]) or key.endswith("loss")):
                row[key] = float(r[key][i])
        if "dead_fraction" in r:  # measured on the validation split
            row.update({f"dead_fraction_{j}": float(f) for j, f in enumerate(r["dead_fraction"][i])})
        row.update({f"hp/{key}": float(values[i]) for key, values in r.get("hparams", {}).items()})
        history.append(row)
    return history
