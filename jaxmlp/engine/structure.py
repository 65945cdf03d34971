"""A variant's three parts: its structure (static, one compiled program per structure), its
numbers (`HParams`, values on a leading variant axis) and its seed (its identity, from which
its initial state and random key are drawn).

Which configuration keys are numbers is declared once, by the fields of
`jaxmlp.config.HParams`; the per-variant arrays, the structure key and the merge key are
derived from that declaration, so a new vmappable hyperparameter is one field there (and
its configuration field).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxmlp.config import SEED_KEY, HParams, RunConfig, numeric_fields, switched_keys
from jaxmlp.data import Dataset
from jaxmlp.losses import resolve_loss
from jaxmlp.models import MLP


def structure_key(cfg: RunConfig) -> tuple:
    """Everything that must be equal for two variants to share a compiled program: every key
    but the numbers and the seed."""
    varying = {f.key for f in numeric_fields()} | {SEED_KEY}
    return tuple(sorted((k, str(v)) for k, v in cfg.flat().items() if k not in varying))


def merge_key(cfg: RunConfig) -> tuple:
    """Structures equal up to this key can share one compiled program (they differ only in
    switched keys: activation and initialiser)."""
    switched = switched_keys(type(cfg))
    return tuple(kv for kv in structure_key(cfg) if kv[0] not in switched)


def hparams_of(configs: Sequence[RunConfig]) -> HParams:
    """Stack the numbers of `configs` along a leading variant axis (host arrays)."""
    flats = [c.flat() for c in configs]

    def column(f):
        return np.asarray([f.none if flat[f.key] is None else flat[f.key] for flat in flats], f.dtype)

    return HParams(*(column(f) for f in numeric_fields()))


@dataclasses.dataclass(frozen=True)
class Structure:
    """The static part of a group: one compiled program per Structure."""

    hidden: tuple[int, ...]
    activations: tuple[str, ...]  # several: switched per slot (`engine.families`)
    initializers: tuple[str, ...]
    n_outputs: int
    task: str
    loss: str
    optimizer: str
    nesterov: bool
    schedule: str
    batch_size: int
    epochs: int
    monitor: str
    n_train: int
    n_inputs: int
    use_dropout: bool
    use_input_dropout: bool
    use_weight_decay: bool
    use_max_norm: bool
    use_clip: bool
    temperature_scaling: bool = False
    input_noise: tuple[float, ...] = ()

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n_train // self.batch_size)

    @property
    def model(self) -> MLP:
        return MLP(self.hidden, self.n_outputs, self.activations, self.initializers)

    @property
    def random_width(self) -> int:
        """Uniform draws per example and training step (dropout masks, activation noise)."""
        return self.model.random_width(self.n_inputs, self.use_dropout, self.use_input_dropout)


def structure_of(configs: Sequence[RunConfig], data: Dataset, features: frozenset[str] = frozenset()) -> Structure:
    """The shared structure of `configs`, with the FEATURES they need and `features` on;
    raises if they differ in anything static."""
    keys = {structure_key(c) for c in configs}
    if len(keys) != 1:
        first, other = (dict(k) for k in list(keys)[:2])
        diff = sorted(k for k in first if first[k] != other.get(k))
        raise ValueError(f"variants of one group must share their structure; they differ in {', '.join(diff)}")
    c = configs[0]
    features = features | features_of(configs)
    if c.training.batch_size > len(data.train):
        raise ValueError(f"training.batch_size: {c.training.batch_size} exceeds the {len(data.train)} "
                         f"training samples of {data.name}; use at most {len(data.train)}")
    if c.training.early_stopping.monitor == "val_accuracy" and data.task != "classification":
        raise ValueError(f"training.early_stopping.monitor: 'val_accuracy' needs class labels; "
                         f"{data.name} is a regression dataset, use 'val_loss'")
    if c.evaluation.temperature_scaling and data.task != "classification":
        raise ValueError(f"evaluation.temperature_scaling: true needs class labels; {data.name} is a regression "
                         f"dataset, use false")
    return Structure(
        hidden=tuple(c.model.hidden), activations=(c.model.activation,), initializers=(c.model.init,),
        n_outputs=data.n_outputs, task=data.task, loss=resolve_loss(c.training.loss, data.task),
        optimizer=c.optimizer.name, nesterov=c.optimizer.nesterov, schedule=c.optimizer.schedule,
        batch_size=c.training.batch_size, epochs=c.training.epochs,
        monitor=c.training.early_stopping.monitor,
        n_train=len(data.train), n_inputs=int(np.prod(data.input_shape)),
        temperature_scaling=c.evaluation.temperature_scaling, input_noise=tuple(c.evaluation.input_noise),
        **{flag: flag in features for flag in FEATURES},
    )


#: The Structure's switches for parts of the training step that only some variants need.
FEATURES = ("use_dropout", "use_input_dropout", "use_weight_decay", "use_max_norm", "use_clip")


def features_of(configs: Sequence[RunConfig]) -> frozenset[str]:
    """The FEATURES that any of `configs` needs (a program has them on for all its variants)."""
    needs = {
        "use_dropout": lambda c: c.model.dropout > 0,
        "use_input_dropout": lambda c: c.model.input_dropout > 0,
        "use_weight_decay": lambda c: c.optimizer.weight_decay > 0,
        "use_max_norm": lambda c: c.optimizer.max_norm is not None,
        "use_clip": lambda c: c.optimizer.clip_norm is not None,
    }
    return frozenset(flag for flag in FEATURES if any(needs[flag](c) for c in configs))
