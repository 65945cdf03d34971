"""`jaxmlp.fit`: train a few variants in this process and get them back, no tracking.

Variants that can share a compiled program (they differ only in numbers, activation or
initialiser) train together, as a sweep groups them; each is early-stopped on its
validation split and tested once with its selected parameters. The result holds every
variant's parameters, so the best (chosen on validation only) predicts in the user's own
labels and units, and saves a checkpoint that `python -m jaxmlp.train --evaluate/--predict`
reads.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxmlp.report.frames import frame, history_frame, variant_row
from jaxmlp.api.inputs import data_section, dataset_of, run_configs
from jaxmlp.checkpoint import Checkpoint, checkpoint_meta, predict, predict_labels, prepared_inputs, save_checkpoint
from jaxmlp.config import SEED_KEY, ConfigError, RunConfig
from jaxmlp.data import Dataset, dataset_key, load_dataset
from jaxmlp.engine import Trainer, VariantResult, merge_key
from jaxmlp.records import VariantRecord
from jaxmlp.sweep.best import selection_score
from jaxmlp.sweep.spec import Variant

DEVICES = ("auto", "one", "all")


@dataclass(frozen=True)
class Model:
    """One trained variant: its configuration, how it ended (`record`), its selected parameters."""

    config: RunConfig
    record: VariantRecord
    params: Any
    meta: dict[str, Any]  # the dataset's facts a checkpoint keeps (task, classes, feature statistics, ...)

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.config, self.params, self.meta)

    def predict(self, x: Any) -> np.ndarray:
        """Predictions for inputs in your own units (an array, or a DataFrame with the training
        columns): class labels as you gave them, or values in the targets' units. Inputs of a
        built-in dataset are taken as its splits hold them (preprocessed)."""
        return predict_labels(self.checkpoint, x)

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities [n, classes] (columns in the order of `meta['classes']` where the
        labels were yours)."""
        if self.meta["task"] != "classification":
            raise ValueError("predict_proba: a regression net has no class probabilities; use predict")
        return predict(self.checkpoint, prepared_inputs(self.meta, x))

    def save(self, folder: str | Path) -> Path:
        """Write a checkpoint folder that `python -m jaxmlp.train --evaluate/--predict` reads."""
        return save_checkpoint(folder, self.config, self.params, self.meta)


@dataclass(frozen=True)
class FitResult:
    """What `fit` trained: one `Model` per variant (in the order given), the swept keys (those
    the configurations differ in), the dataset's facts and the seconds spent."""

    models: list[Model]
    swept: tuple[str, ...]
    histories: list[list[dict[str, float]]]
    data: dict[str, Any]  # dataset, task, n_train, n_val, n_test
    compile_seconds: float
    train_seconds: float

    def frame(self):
        """One row per variant: swept keys, seed, best/stopped epoch, diverged, best validation
        metrics, test metrics, parameter count, seconds."""
        return frame(variant_row(m.record) for m in self.models)

    def history(self):
        """A long frame: variant (its position), swept keys, seed, epoch and every per-epoch metric."""
        return history_frame([({"variant": i, **m.record.setting, "seed": m.record.seed}, h)
                              for i, (m, h) in enumerate(zip(self.models, self.histories))])

    @property
    def best(self) -> Model:
        """The variant with the best monitored validation metric at its selected epoch (never
        a test metric); without a validation split, the first that did not diverge."""
        scores = [selection_score(Variant(i, tuple(m.record.setting.items()), m.record.seed, m.config), m.record)
                  for i, m in enumerate(self.models)]
        finite = [(s, i) for i, s in enumerate(scores) if np.isfinite(s)]
        i = min(finite)[1] if finite else next((i for i, m in enumerate(self.models) if not m.record.diverged), 0)
        return self.models[i]

    def predict(self, x: Any) -> np.ndarray:
        """The best variant's predictions (see `Model.predict`)."""
        return self.best.predict(x)

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.best.predict_proba(x)

    def save(self, folder: str | Path) -> Path:
        """The best variant's checkpoint (see `Model.save`)."""
        return self.best.save(folder)


def _devices(devices: str | int, configs: list[RunConfig]) -> int:
    import jax

    from jaxmlp.sweep.plan import choose_devices, step_flops

    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(jax.devices()):
            raise ConfigError(f"devices: {devices}; give auto, one, all or a count from 1 to {len(jax.devices())}")
        return devices
    if devices not in DEVICES:
        raise ConfigError(f"devices: {devices!r}; allowed values: {', '.join(DEVICES)} or a count")
    return choose_devices(devices, max(map(step_flops, configs)), len(configs), len(jax.devices()))


def swept_keys(configs: Sequence[RunConfig]) -> tuple[str, ...]:
    """The configuration keys whose values differ between `configs` (the seed aside)."""
    flats = [c.flat() for c in configs]
    return tuple(k for k in flats[0] if k != SEED_KEY and len({json.dumps(f[k]) for f in flats}) > 1)


def _train_group(configs: list[RunConfig], data: Dataset, devices: int, progress: bool | None):
    """Train variants that share a program; their results in the order given, the trainer's result."""
    from tqdm import tqdm

    trainer = Trainer(configs, data, devices)
    trainer.compile()
    monitor = configs[0].training.early_stopping.monitor
    bar = tqdm(total=max(c.training.epochs for c in configs), desc="epochs", unit="ep", file=sys.stderr,
               disable=None if progress is None else not progress)
    for record in trainer.run():
        if monitor in record:  # absent without a validation split
            best = np.nanmin(record[monitor]) if monitor == "val_loss" else np.nanmax(record[monitor])
            bar.set_postfix(active=f"{int(record['active'].sum())}/{len(configs)}",
                            **{f"best_{monitor}": f"{best:.4f}"})
        bar.update()
    bar.close()
    return trainer.result.variants, trainer.result


def fit(config: Any, data: Any = None, *, target: str | None = None, seeds: int | Sequence[int] | None = None,
        devices: str | int = "auto", progress: bool | None = False) -> FitResult:
    """Train `config` (a dict, dotted keys such as {'model.hidden': [64, 64]}, a RunConfig, a
    YAML path, or a list of these), once per seed in `seeds` where given (a list, or a count n:
    seeds 0 .. n - 1), on `data`: None (the configuration's data section), (X, y), a DataFrame
    with `target`, given splits {'train': (X, y), 'test': (X, y)} (validation cut from train
    unless 'val' is given), or a `jaxmlp.Dataset`; given data replaces every configuration's
    data section. `devices`: auto, one, all or a count (the variant axis sharded over them);
    `progress`: an epoch bar on stderr (None: on a terminal only). Raises ConfigError or
    DataError before anything is compiled."""
    configs = run_configs(config, seeds)
    given = dataset_of(data, target)
    if given is not None:
        section = data_section(given)
        configs = [c.model_copy(update={"data": section}) for c in configs]
    loaded: dict[str, Dataset] = {} if given is None else {dataset_key(section): given}
    groups: dict[tuple[str, tuple], list[int]] = {}
    for i, c in enumerate(configs):
        key = dataset_key(c.data)
        if key not in loaded:
            loaded[key] = load_dataset(c.data)
        groups.setdefault((key, merge_key(c)), []).append(i)
    n_devices = _devices(devices, configs)
    results: dict[int, tuple[VariantResult, Dataset]] = {}
    compile_seconds = train_seconds = 0.0
    for (key, _), rows in groups.items():
        variants, outcome = _train_group([configs[i] for i in rows], loaded[key], n_devices, progress)
        results.update({i: (r, loaded[key]) for i, r in zip(rows, variants)})
        compile_seconds += outcome.compile_seconds
        train_seconds += outcome.train_seconds
    swept = swept_keys(configs)
    models, histories = [], []
    for i, c in enumerate(configs):
        r, d = results[i]
        record = r.record({k: c.flat()[k] for k in swept}, index=i)
        models.append(Model(c, record, r.params, checkpoint_meta(d)))
        histories.append(r.history)
    first = loaded[dataset_key(configs[0].data)]
    facts = {"dataset": first.name, "task": first.task, "n_train": len(first.train), "n_val": len(first.val),
             "n_test": len(first.test)}
    return FitResult(models, swept, histories, facts, compile_seconds, train_seconds)
