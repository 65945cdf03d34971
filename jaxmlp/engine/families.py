"""How a Trainer lays out its variants: parts (variants of one structure, vmapped) and
families (parts that share one copy of the code, their activation and initializer chosen
per part by `Selectors` given as inputs)."""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from jaxmlp.activations import is_noisy
from jaxmlp.engine.layout import Layout, family_of
from jaxmlp.engine.structure import HParams, Structure
from jaxmlp.models import resolve_init


class Selectors(NamedTuple):
    """Per part, what its variants run as, given as inputs (arrays [part, variant], equal along
    the variant axis), so one compiled program serves parts of any activation or initialiser:
    the index into the family's switched activation and initializer, and the variants that
    are frozen from the start (filler parts, or variants finished earlier)."""

    activation: Any
    init: Any
    frozen: Any


@dataclasses.dataclass(frozen=True)
class Part:
    """Variants of one structure inside a program; `index` maps its first rows back to the
    caller's order (the rest pad the part to its size)."""

    structure: Structure
    index: np.ndarray
    hp: HParams
    frozen: np.ndarray  # [part size] bool


@dataclasses.dataclass(frozen=True)
class Family:
    """Parts of a program that differ only in activation and initialiser and have as many
    variants: their code is traced and compiled once, for a structure whose activation and
    initializer are switched ('sigmoid|tanh|...'), and a `lax.scan` runs it part after part,
    the part's selectors choosing its functions (`lax.switch` on a scalar: a real branch, not
    a select). Their states and numbers are stacked: every leaf has leading axes [part, variant].
    Programs of equal families (`key`) are the same program."""

    structure: Structure
    parts: tuple[Part, ...]

    @property
    def key(self) -> tuple:
        return self.structure, len(self.parts), len(self.parts[0].frozen)

    @property
    def inputs(self) -> tuple[HParams, Selectors]:
        """The family's numbers and selectors, stacked over its parts."""
        acts, inits = self.structure.activation.split("|"), self.structure.initializer.split("|")
        for p in self.parts:
            if p.structure.activation not in acts or _resolved_init(p.structure) not in inits:
                raise ValueError(f"a part of activation {p.structure.activation!r} and initializer "
                                 f"{_resolved_init(p.structure)!r} is not in the layout ({', '.join(acts)}; "
                                 f"{', '.join(inits)})")
        size = len(self.parts[0].frozen)
        selectors = [Selectors(np.full(size, acts.index(p.structure.activation), np.int32),
                               np.full(size, inits.index(_resolved_init(p.structure)), np.int32), p.frozen)
                     for p in self.parts]
        return jax.tree_util.tree_map(lambda *a: np.stack(a), *((p.hp, sel) for p, sel in zip(self.parts, selectors)))

    @staticmethod
    def of(parts: Sequence[Part], layout: Layout | None = None, make_part=None) -> list["Family"]:
        """Parts grouped into families, in order of first appearance. With a `layout`, the
        layout's families in its order, each switching over the layout's activations (those
        of its kind) and initialisers, and filled up to its part count with frozen parts
        (`make_part(template)` makes one where the family has none here)."""
        if layout is None:
            by_key: dict[tuple, list[Part]] = {}
            for p in parts:
                s = p.structure
                key = (dataclasses.replace(s, activation="", initializer=""), s.random_width, len(p.frozen))
                by_key.setdefault(key, []).append(p)
            return [Family.switched(members, [m.structure.activation for m in members],
                                     [_resolved_init(m.structure) for m in members]) for members in by_key.values()]
        families = []
        for template, n_parts in layout.families:
            noisy = family_of(template)
            members = [p for p in parts if is_noisy(p.structure.activation) == noisy]
            if len(members) > n_parts:
                raise ValueError(f"{len(members)} parts of {layout.part_size} variants exceed the layout's "
                                 f"{n_parts} parts per program")
            last = members[-1] if members else make_part(template)
            filler = dataclasses.replace(last, index=np.zeros(0, int), frozen=np.ones_like(last.frozen))
            members += [filler] * (n_parts - len(members))
            acts = [a for a in layout.activations if is_noisy(a) == noisy]
            families.append(Family.switched(members, acts, layout.initializers))
        return families

    @staticmethod
    def switched(members: Sequence[Part], activations: Sequence[str], initializers: Sequence[str]) -> "Family":
        """A family of `members` whose code switches over `activations` and `initializers`."""
        structure = dataclasses.replace(members[0].structure, activation="|".join(dict.fromkeys(activations)),
                                        initializer="|".join(dict.fromkeys(initializers)))
        return Family(structure, tuple(members))


def _resolved_init(s: Structure) -> str:
    return resolve_init(s.initializer, s.activation)
