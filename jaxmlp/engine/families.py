"""How a Trainer lays out its slots: families of parts, each part a few slots vmapped
together, every slot holding one variant at a time. The parts of a family share one copy of
the code, compiled for a structure whose activations and initializers are switched (tuples
of several names): each slot's functions are chosen by its `Selectors`, given as inputs, so
a slot takes a variant of any activation and initialiser of its family."""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from jaxmlp.activations import is_noisy
from jaxmlp.config import RunConfig
from jaxmlp.data import Dataset
from jaxmlp.engine.layout import Layout, family_of
from jaxmlp.engine.structure import Structure, features_of, hparams_of, structure_key, structure_of
from jaxmlp.models import resolve_init

#: The configuration key that needs each Structure feature, for messages.
FEATURE_KEYS = {"use_dropout": "model.dropout", "use_input_dropout": "model.input_dropout",
                "use_weight_decay": "optimizer.weight_decay", "use_max_norm": "optimizer.max_norm",
                "use_clip": "optimizer.clip_norm"}


class Selectors(NamedTuple):
    """Per slot (arrays [part, variant]), what its variant runs as: the index into the family's
    switched activation and initializer, its seed (its identity: its initial state and random
    key are drawn from it), and whether the slot is empty (`frozen`: it holds no variant, or
    one that stays inactive)."""

    activation: Any
    init: Any
    seed: Any
    frozen: Any


class Slot(NamedTuple):
    """A slot's address: its family, its part there and its row in the part."""

    family: int
    part: int
    row: int

    @property
    def cell(self) -> tuple[int, int]:
        """Its index into the family's arrays [part, variant]."""
        return self.part, self.row


@dataclasses.dataclass(frozen=True)
class Family:
    """`n_parts` parts of `part_size` slots whose code is traced and compiled once, for a
    structure whose activations and initializers are switched; a `lax.scan` runs it part after
    part. Their states and numbers are stacked: every leaf has leading axes [part, variant].
    Programs of equal families (`key`) are the same program."""

    structure: Structure
    n_parts: int
    part_size: int

    @property
    def key(self) -> tuple:
        return self.structure, self.n_parts, self.part_size

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_parts, self.part_size

    def selectors_of(self, c: RunConfig) -> tuple[int, int]:
        """The (activation, initializer) selectors of a variant, refused when the family does not switch over them."""
        acts, inits = self.structure.activations, self.structure.initializers
        act, init = c.model.activation, resolve_init(c.model.init, c.model.activation)
        if act not in acts or init not in inits:
            raise ValueError(f"a variant of activation {act!r} and initializer {init!r} is not in the layout "
                             f"({', '.join(acts)}; {', '.join(inits)})")
        return acts.index(act), inits.index(init)

    def missing_features(self, c: RunConfig) -> list[str]:
        """The configuration keys of the features a variant needs that this family was compiled without."""
        return [FEATURE_KEYS[flag] for flag in features_of([c]) if not getattr(self.structure, flag)]

    def empty_inputs(self, template: RunConfig, selectors: tuple[int, int]) -> tuple[Any, Selectors]:
        """Inputs with every slot empty: the numbers and seed of `template` and the given
        selectors, which an empty slot computes with and discards."""
        hp = jax.tree_util.tree_map(lambda a: np.broadcast_to(a, self.shape).copy(), hparams_of([template]))
        act, init = selectors
        return hp, Selectors(np.full(self.shape, act, np.int32), np.full(self.shape, init, np.int32),
                             np.full(self.shape, template.training.seed, np.uint32), np.ones(self.shape, bool))

    def compaction(self, slots: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Moves (source cell, destination cell) that put the variants of `slots` (the variant of
        each slot, -1 empty) into as few parts as they fill, the fullest parts kept (none when
        they already are)."""
        busy = (slots >= 0).sum(axis=1)
        needed = -(-int(busy.sum()) // self.part_size)
        if self.n_parts == 1 or int((busy > 0).sum()) <= needed:
            return []
        keep = sorted(np.argsort(-busy, kind="stable")[:needed])
        free = [(j, row) for j in keep for row in range(self.part_size) if slots[j, row] < 0]
        return [((j, row), free.pop(0)) for j in range(self.n_parts) if j not in keep
                for row in range(self.part_size) if slots[j, row] >= 0]

    @staticmethod
    def of(layout: Layout, data: Dataset) -> tuple["Family", ...]:
        """The layout's families, in its order: each switching over the layout's activations of
        its kind (noisy or not) and its initialisers, with the layout's features on."""
        families = []
        for k, (template, _) in enumerate(layout.families):
            noisy = family_of(template)
            structure = dataclasses.replace(structure_of([template], data, layout.features),
                                            activations=tuple(a for a in layout.activations if is_noisy(a) == noisy),
                                            initializers=tuple(layout.initializers))
            families.append(Family(structure, *layout.family_shape(k)))
        return tuple(families)


def family_index(families: Sequence[Family], c: RunConfig) -> int:
    """Which of `families` a variant's slots belong to (the first of its kind)."""
    noisy = family_of(c)
    for k, f in enumerate(families):
        if f.structure.model.noisy == noisy:
            return k
    raise ValueError(f"no family of the layout takes a variant of activation {c.model.activation!r}")


def placement(families: Sequence[Family], configs: Sequence[RunConfig]) -> tuple[np.ndarray, np.ndarray]:
    """Per variant: the index of its family and its (activation, initializer) selectors there
    (an int array [variant] and an int32 array [variant, 2])."""
    index = np.asarray([family_index(families, c) for c in configs], int)
    selectors = np.asarray([families[f].selectors_of(c) for f, c in zip(index, configs)], np.int32)
    return index, selectors.reshape(-1, 2)


def structures_of(configs: Sequence[RunConfig], data: Dataset, features: frozenset[str]) -> list[Structure]:
    """The structures of `configs` (each with `features` on), one per distinct structure key, in order of first use."""
    groups: dict[tuple, list[RunConfig]] = {}
    for c in configs:
        groups.setdefault(structure_key(c), []).append(c)
    return [structure_of(group, data, features) for group in groups.values()]
