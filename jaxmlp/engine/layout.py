"""How a group's variants are laid out in compiled programs, so that one program serves all
of the group's chunks: compile time depends on the number of distinct shapes, not on the
number of variants.

A group (variants whose structures differ at most in activation and initialiser, and that
draw as many random numbers per step) is cut into *parts* of `part_size` variants of one
structure each (the last part of a structure padded with copies of its last variant), and
the parts into *chunks* of `n_parts` parts (the last chunk filled up with frozen parts,
which the compiled loop skips). Every chunk then has the same shapes, the same switched
activations and initialisers and the same features, so the program compiled for the first
chunk runs the others; only the numbers and the parts' choices are inputs.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from jaxmlp.config import RunConfig
from jaxmlp.engine.structure import features_of, structure_key
from jaxmlp.models import resolve_init


@dataclasses.dataclass(frozen=True)
class Layout:
    """The shape of every program of a group (see the module docstring)."""

    part_size: int
    n_parts: int
    activations: tuple[str, ...]  # what the programs' switched activation covers, in order
    initializers: tuple[str, ...]  # resolved initialiser names the programs cover, in order
    features: frozenset[str] = frozenset()  # Structure FEATURES on in every program of the group

    @property
    def n_variants(self) -> int:
        """Variants one program holds (padding and frozen parts included)."""
        return self.part_size * self.n_parts


def plan_chunks(configs: Sequence[RunConfig], max_variants: int, devices: int = 1) -> tuple[Layout, list[list[int]]]:
    """The layout of one group and its chunks (lists of indices into `configs`, part by part).

    The part size is the smallest that cuts the largest structure into as few parts as
    `max_variants` allows (a multiple of `devices`, as the variant axis is sharded); as many
    parts as fit in `max_variants` make a chunk, spread evenly over the chunks needed.
    """
    rows: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        rows.setdefault(structure_key(c), []).append(i)
    biggest = max(map(len, rows.values()))
    pieces = -(-biggest // max(1, max_variants))
    part_size = -(-biggest // pieces)
    part_size += -part_size % devices
    parts = [r[start:start + part_size] for r in rows.values() for start in range(0, len(r), part_size)]
    per_chunk = max(1, min(len(parts), max_variants // part_size))
    n_chunks = -(-len(parts) // per_chunk)
    n_parts = -(-len(parts) // n_chunks)
    chunks = [sum(parts[k * n_parts:(k + 1) * n_parts], []) for k in range(n_chunks)]
    layout = Layout(
        part_size=part_size, n_parts=n_parts,
        activations=tuple(dict.fromkeys(c.model.activation for c in configs)),
        initializers=tuple(dict.fromkeys(resolve_init(c.model.init, c.model.activation) for c in configs)),
        features=features_of(configs))
    return layout, chunks
