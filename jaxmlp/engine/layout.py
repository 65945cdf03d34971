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
from collections import Counter
from typing import Sequence

from jaxmlp.activations import is_noisy
from jaxmlp.config import RunConfig
from jaxmlp.engine.structure import features_of, structure_key
from jaxmlp.models import resolve_init


@dataclasses.dataclass(frozen=True)
class Layout:
    """The shape of every program of a group (see the module docstring). Its families are the
    group's parts that draw as many random numbers per step (noisy activations draw more),
    each with a template variant, from which a chunk without parts of that family makes
    frozen ones, and its number of parts per program."""

    part_size: int
    families: tuple[tuple[RunConfig, int], ...]
    activations: tuple[str, ...]  # what the programs' switched activation covers, in order
    initializers: tuple[str, ...]  # resolved initialiser names it covers, in order
    features: frozenset[str] = frozenset()  # Structure FEATURES on in every program of the group
    part_sizes: tuple[int, ...] = ()  # per family, where they differ (default: `part_size` for all)

    def family_shape(self, k: int) -> tuple[int, int]:
        """(parts, slots per part) of the layout's k-th family."""
        return self.families[k][1], self.part_sizes[k] if self.part_sizes else self.part_size

    @property
    def n_slots(self) -> int:
        """Slots of one program (variants it trains at once)."""
        return sum(p * s for p, s in map(self.family_shape, range(len(self.families))))

    @property
    def n_parts(self) -> int:
        return sum(n for _, n in self.families)

    @property
    def fingerprint(self) -> str:
        """The layout as text, the same in every process (a frozenset's order, and so its
        repr, changes with the string hash seed of the process)."""
        return repr(dataclasses.replace(self, features=tuple(sorted(self.features))))

    @property
    def n_variants(self) -> int:
        """Variants one program holds (padding and frozen parts included)."""
        return self.n_slots


def family_of(c: RunConfig) -> bool:
    """Which family of its group a variant's parts belong to: whether its activation is noisy."""
    return is_noisy(c.model.activation)


def plan_chunks(configs: Sequence[RunConfig], max_part: int, max_program: int | None = None,
                devices: int = 1) -> tuple[Layout, list[list[int]]]:
    """The layout of one group and its chunks (lists of indices into `configs`, part by part).

    The part size is chosen by `_part_size`; as many parts as fit in `max_program` variants
    (default `max_part`) make a chunk, each family's parts spread evenly over the chunks needed.
    """
    max_program = max_part if max_program is None else max_program
    rows: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        rows.setdefault(structure_key(c), []).append(i)
    part_size = _part_size([len(r) for r in rows.values()], max_part, max_program, devices)
    families: dict[bool, list[list[int]]] = {}
    for r in rows.values():
        families.setdefault(family_of(configs[r[0]]), []).extend(
            r[start:start + part_size] for start in range(0, len(r), part_size))
    n_chunks = _n_chunks(sum(map(len, families.values())), part_size, max_program)
    per_family = {f: -(-len(parts) // n_chunks) for f, parts in families.items()}
    chunks = [sum((parts[k * per_family[f]:(k + 1) * per_family[f]] for f, parts in families.items()), [])
              for k in range(n_chunks)]
    layout = Layout(
        part_size=part_size,
        families=tuple((configs[parts[0][0]], per_family[f]) for f, parts in families.items()),
        activations=tuple(dict.fromkeys(c.model.activation for c in configs)),
        initializers=tuple(dict.fromkeys(resolve_init(c.model.init, c.model.activation) for c in configs)),
        features=features_of(configs))
    return layout, [sum(chunk, []) for chunk in chunks if chunk]


#: Variants per slot when a program starts: the slots of a program fed by queues are about a
#: third of its variants, so that each slot takes a few in turn ...
QUEUE_PER_SLOT = 3
#: ... but at least this many (or all of a family's variants, where fewer): a few variants
#: vmapped together train faster than one at a time (2.0-2.7x at 16 on a 2-core CPU).
MIN_SLOTS = 4
#: Parts of this many slots: narrow parts let the tail of a program (its last variants, once
#: the queue is empty) be compacted into parts it fills (on a 2-core CPU, the 64-setting
#: digits search: parts of 2 kept 98% of the slot-epochs busy, parts of 8 79%, at the same
#: speed, `python -m jaxmlp.bench refill`) ...
TAIL_PART = 2
#: ... unless a family would need more parts than this: then wider ones (each part adds a
#: fixed cost per step, which small networks feel).
MAX_PARTS = 16


def plan_slots(configs: Sequence[RunConfig], max_part: int, max_slots: int | None = None,
               devices: int = 1, per_slot: int = QUEUE_PER_SLOT, narrow: bool | None = None,
               tail_part: int = TAIL_PART) -> Layout:
    """The layout of one program whose slots are fed by queues (continuous batching): per
    family, about a `per_slot`-th of its variants as slots (at least MIN_SLOTS or all of
    them), in parts of TAIL_PART slots (wider where that would take more than MAX_PARTS
    parts; at most `max_part`), each a multiple of
    `devices`; at most `max_slots` slots in all (the memory's bound), fewer parts where
    needed. `per_slot` 1: a slot for every variant, memory allowing, in one part (variants
    that all train their whole budget gain nothing from a queue), or in narrow parts where
    `narrow` (default: where `per_slot` is not 1), for slots refilled as they free (`optimize:`);
    `tail_part`: the narrow parts' slots."""
    narrow = per_slot != 1 if narrow is None else narrow
    counts: dict[bool, int] = {}
    templates: dict[bool, RunConfig] = {}
    for c in configs:
        counts[family_of(c)] = counts.get(family_of(c), 0) + 1
        templates.setdefault(family_of(c), c)
    shapes = []
    for noisy, n in counts.items():
        slots = max(min(n, MIN_SLOTS), -(-n // per_slot))
        size = min(max_part, max(min(slots, tail_part), -(-slots // MAX_PARTS)) if narrow else slots)
        size += -size % devices
        shapes.append([-(-slots // size), size])
    while max_slots is not None and sum(p * s for p, s in shapes) > max_slots:
        most = max(range(len(shapes)), key=lambda k: shapes[k])
        if shapes[most][0] > 1:
            shapes[most][0] -= 1
        elif shapes[most][1] > devices:
            shapes[most][1] -= devices
        else:
            break
    return Layout(
        part_size=max(s for _, s in shapes),
        families=tuple((templates[noisy], p) for noisy, (p, _) in zip(counts, shapes)),
        activations=tuple(dict.fromkeys(c.model.activation for c in configs)),
        initializers=tuple(dict.fromkeys(resolve_init(c.model.init, c.model.activation) for c in configs)),
        features=features_of(configs), part_sizes=tuple(s for _, s in shapes))


def holding_layout(configs: Sequence[RunConfig], devices: int = 1) -> Layout:
    """A layout with a slot for every variant of `configs` (one program, nothing queued): parts
    as wide as the largest structure (a multiple of `devices`), or narrower where that pads less."""
    biggest = max(Counter(structure_key(c) for c in configs).values())
    layout, _ = plan_chunks(configs, biggest + (-biggest % devices), 2**62, devices)
    return layout


#: A narrower part than the widest is taken only when it saves at least this share of the slots.
PADDING_SAVING = 0.1


def _part_size(rows: Sequence[int], max_part: int, max_program: int, devices: int) -> int:
    """The part size for structures of `rows` variants each, a multiple of `devices` (the
    variant axis is sharded). The widest is the smallest size that cuts the largest structure
    into as few parts of at most `max_part` variants as possible. Padding slots train at full
    cost, so a size down to half of it that trains the fewest slots replaces it when that
    saves at least PADDING_SAVING of them without needing more programs (chunks of at most
    `max_program` variants). E.g. structures of 4 and 2 variants in one program: parts of 2
    (6 slots), not 4 (8). Parts of one variant are taken only where the widest is one: a
    lone variant's step uses the device worse than a vmapped pair's (on a 2-core CPU an
    epoch of one 3x1024 dropout net took 0.90 of the time of two: 0.36 of the matmul peak
    against 0.61, `python -m jaxmlp.bench --variants 1` and `2`), so structures of 2 and 1
    variants train as two parts of 2, not three of 1."""
    biggest = max(rows)
    widest = -(-biggest // -(-biggest // max(1, max_part)))
    widest += -widest % devices

    def parts(p: int) -> int:
        return sum(-(-n // p) for n in rows)

    programs = _n_chunks(parts(widest), widest, max_program)
    narrowest = max(devices, widest // 2, min(widest, 2))
    candidates = [p for p in range(widest, narrowest - 1, -devices)
                  if _n_chunks(parts(p), p, max_program) <= programs]
    best = min(candidates, key=lambda p: (padded_slots(rows, p), -p))
    return best if padded_slots(rows, best) <= (1 - PADDING_SAVING) * padded_slots(rows, widest) else widest


def padded_slots(rows: Sequence[int], part_size: int) -> int:
    """Variant slots that structures of `rows` variants each fill in parts of `part_size`,
    the padding of each structure's last part included."""
    return sum(-(-n // part_size) * part_size for n in rows)


def _n_chunks(n_parts: int, part_size: int, max_program: int) -> int:
    """How many chunks (programs' runs) `n_parts` parts of `part_size` variants take, at most
    `max_program` variants (and at least one part) per chunk."""
    return -(-n_parts // max(1, min(n_parts, max_program // part_size)))
