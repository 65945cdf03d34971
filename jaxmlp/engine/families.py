"""How a Trainer lays out its slots: families of parts, each part a few slots vmapped
together, every slot holding one variant at a time. The parts of a family share one copy of
the code, compiled for a structure whose activation and initializer are switched
('sigmoid|tanh|...'): each slot's functions are chosen by its `Selectors`, given as inputs,
so a slot takes a variant of any activation and initialiser of its family."""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

from jaxmlp.activations import is_noisy
from jaxmlp.config import RunConfig
from jaxmlp.data import Dataset
from jaxmlp.engine.layout import Layout, family_of
from jaxmlp.engine.structure import Structure, structure_of
from jaxmlp.models import resolve_init


class Selectors(NamedTuple):
    """Per slot (arrays [part, variant]), what its variant runs as: the index into the family's
    switched activation and initializer, its seed (its identity: its initial state and random
    key are drawn from it), and whether the slot is empty (`frozen`: it holds no variant, or
    one that stays inactive)."""

    activation: Any
    init: Any
    seed: Any
    frozen: Any


@dataclasses.dataclass(frozen=True)
class Family:
    """`n_parts` parts of `part_size` slots whose code is traced and compiled once, for a
    structure whose activation and initializer are switched; a `lax.scan` runs it part after
    part. Their states and numbers are stacked: every leaf has leading axes [part, variant].
    Programs of equal families (`key`) are the same program."""

    structure: Structure
    n_parts: int
    part_size: int
    activations: tuple[str, ...]
    initializers: tuple[str, ...]

    @property
    def key(self) -> tuple:
        return self.structure, self.n_parts, self.part_size

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_parts, self.part_size

    def selectors_of(self, c: RunConfig) -> tuple[int, int]:
        """The (activation, initializer) selectors of a variant, refused when the family does not switch over them."""
        act, init = c.model.activation, resolve_init(c.model.init, c.model.activation)
        if act not in self.activations or init not in self.initializers:
            raise ValueError(f"a variant of activation {act!r} and initializer {init!r} is not in the layout "
                             f"({', '.join(self.activations)}; {', '.join(self.initializers)})")
        return self.activations.index(act), self.initializers.index(init)

    @staticmethod
    def of(layout: Layout, data: Dataset) -> list["Family"]:
        """The layout's families, in its order: each switching over the layout's activations of
        its kind (noisy or not) and its initialisers, with the layout's features on."""
        families = []
        for k, (template, _) in enumerate(layout.families):
            n_parts, part_size = layout.family_shape(k)
            noisy = family_of(template)
            acts = tuple(a for a in layout.activations if is_noisy(a) == noisy)
            structure = dataclasses.replace(structure_of([template], data, layout.features),
                                            activation="|".join(acts), initializer="|".join(layout.initializers))
            families.append(Family(structure, n_parts, part_size, acts, tuple(layout.initializers)))
        return families


def family_index(families: Sequence[Family], c: RunConfig) -> int:
    """Which of `families` a variant's slots belong to (the first of its kind)."""
    noisy = family_of(c)
    for k, f in enumerate(families):
        if is_noisy(f.activations[0]) == noisy:
            return k
    raise ValueError(f"no family of the layout takes a variant of activation {c.model.activation!r}")
