"""Grouping a sweep's variants into compiled programs, and describing the plan.

Variants that share their structure (everything but the numbers declared vmapped in
`jaxmlp.config`) train together, vmapped; structures that differ only in activation or
initialiser share one program (`engine.merge_key`) and, with as many variants each, one
copy of its code (`engine.families.Family`), since one program compiles much faster than several.
A group larger than `max_variants_per_program` is split. Each group also gets a device choice: small
networks run faster with the variant axis sharded over one XLA device per core, wide
ones keep all cores busy on one device.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass

from jaxmlp.config import RunConfig
from jaxmlp.data import dataset_shape, split_sizes
from jaxmlp.engine import EVAL_CHUNK, Layout, merge_key, plan_chunks, structure_key
from jaxmlp.engine.layout import PADDING_SAVING, padded_slots
from jaxmlp.models import n_parameters
from jaxmlp.sweep.spec import Sweep, Variant

#: Below this many multiply-adds per training step and variant, sharding variants pays off.
SHARD_BELOW_FLOPS = 1e8
#: The share of a device's memory (a CPU's: of the host's, split over its XLA devices) that
#: the states of one program may take.
MEMORY_FRACTION = 0.5
_OPTIMIZER_SLOTS = {"sgd": 1, "rmsprop": 2, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class Footprint:
    """Estimated device bytes of a structure's program (float32 everywhere): per variant, what
    lives for the whole run (parameters, best parameters, optimizer slots, gradients and
    updates of a step, the epoch's shuffle); per variant of the part being stepped or
    evaluated, what lives only then (a minibatch's activations and random draws, an
    evaluation chunk's activations); and the dataset, once."""

    state: int
    transient: int
    data: int

    @staticmethod
    def of(c: RunConfig) -> "Footprint":
        n_in, n_out, n_examples = dataset_shape(c.data)
        n_train = split_sizes(c.data)[0]
        params = _n_params(c)
        width = sum(c.model.hidden)
        state = (4 + _OPTIMIZER_SLOTS[c.optimizer.name]) * params + 3 * n_train
        draws = n_in + 2 * width  # input dropout, hidden dropout and noise at most
        transient = c.training.batch_size * (3 * width + n_in + draws) + 2 * min(EVAL_CHUNK, n_train) * width
        return Footprint(4 * state, 4 * transient, 4 * n_examples * (n_in + 1))

    def program_bytes(self, part_size: int, n_parts: int, devices: int = 1) -> int:
        """One device's share of a program of `n_parts` parts of `part_size` variants."""
        per_device = -(-part_size // devices)
        return self.data + per_device * (n_parts * self.state + self.transient)

    def max_variants(self, budget: int, part_size: int, devices: int = 1) -> int:
        """The most variants (whole parts of `part_size`) whose program fits in `budget` bytes per device."""
        per_device = -(-part_size // devices)
        parts = (budget - self.data - per_device * self.transient) // max(1, per_device * self.state)
        return max(1, int(parts)) * part_size


def memory_budget() -> int:
    """Bytes one program may use per device: MEMORY_FRACTION of the device's memory where the
    backend reports it (GPUs, TPUs), else of the host's memory over its XLA devices."""
    import jax

    devices = jax.devices()
    stats = devices[0].memory_stats() or {}
    total = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // len(devices)
    return int(MEMORY_FRACTION * total)


@dataclass(frozen=True)
class Group:
    """One chunk of variants that trains in one call of a compiled program; groups with the
    same `program` run the same compiled program (their layout and structure agree)."""

    id: str
    variants: list[Variant]
    devices: int
    layout: Layout
    program: str
    footprint: Footprint

    @property
    def config(self):
        return self.variants[0].config

    @property
    def n_structures(self) -> int:
        return len({structure_key(v.config) for v in self.variants})

    @property
    def n_params(self) -> int:
        return _n_params(self.config)

    @property
    def step_flops(self) -> float:
        return step_flops(self.config)

    @property
    def memory_bytes(self) -> int:
        """Estimated memory per device of the program the group runs."""
        return self.footprint.program_bytes(self.layout.part_size, self.layout.n_parts, self.devices)


def _n_params(c: RunConfig) -> int:
    n_in, n_out, _ = dataset_shape(c.data)
    return n_parameters([n_in, *c.model.hidden, n_out])


def step_flops(c: RunConfig) -> float:
    """Training FLOPs per step and variant: forward + backward is about 6 x weights x batch."""
    return 6.0 * _n_params(c) * c.training.batch_size


def choose_devices(mode: str, step_flops: float, n_variants: int, n_devices: int) -> int:
    """How many devices a group's variant axis is sharded over."""
    if mode == "one" or n_devices == 1 or n_variants == 1:
        return 1
    if mode == "all":
        return n_devices
    return n_devices if step_flops < SHARD_BELOW_FLOPS else 1


#: Variants of several structures share a program in parts of one size, padded with copies;
#: on a CPU a padding slot trains at full cost (a GPU runs it beside the others on capacity
#: the parts leave idle), so there such a program is split into one per structure where that
#: trains at least `layout.PADDING_SAVING` fewer slots and the padding it saves costs more
#: than this many training FLOPs (1e13: over a minute on a 2-core CPU, far more than
#: compiling a program).
SPLIT_ABOVE_FLOPS = 1e13


def _slots(configs: list[RunConfig], part_cap: int, devices: int) -> int:
    """Variant slots the parts of a program of `configs` train (padding included, frozen parts not)."""
    layout, _ = plan_chunks(configs, part_cap, part_cap, devices)
    return padded_slots(list(Counter(structure_key(c) for c in configs).values()), layout.part_size)


def _split_padded(variants: list[Variant], part_cap: int, devices: int) -> list[list[Variant]]:
    """The variants of one program, or of one program per structure where the shared one's
    padding costs more than SPLIT_ABOVE_FLOPS and PADDING_SAVING of its slots."""
    by_structure: dict[tuple, list[Variant]] = {}
    for v in variants:
        by_structure.setdefault(structure_key(v.config), []).append(v)
    if len(by_structure) == 1:
        return [variants]
    shared = _slots([v.config for v in variants], part_cap, devices)
    split = sum(_slots([v.config for v in vs], part_cap, devices) for vs in by_structure.values())
    c = variants[0].config
    slot_flops = step_flops(c) * (split_sizes(c.data)[0] // c.training.batch_size) * max(
        v.config.training.epochs for v in variants)
    if split <= (1 - PADDING_SAVING) * shared and (shared - split) * slot_flops > SPLIT_ABOVE_FLOPS:
        return list(by_structure.values())
    return [variants]


def plan_groups(sweep: Sweep, n_devices: int = 1, budget: int | None = None,
                on_cpu: bool | None = None) -> list[Group]:
    """Variants that can share a program (`engine.merge_key`; split by structure where the
    shared program's padding is costly, `_split_padded`), cut into chunks of one layout
    each (`engine.plan_chunks`): parts of at most
    `max_variants_per_part`, as many parts per program as `budget` bytes per device (default:
    `memory_budget()`) and `max_variants_per_program` allow. Programs are split only where
    they train on CPUs (`on_cpu`; default: this process's JAX backend is a CPU, the executor
    may know better), and never under an adaptive search (it ranks a program's variants
    together)."""
    import jax

    if on_cpu is None:
        on_cpu = jax.default_backend() == "cpu"
    execution = sweep.spec.execution
    part_cap = min(execution.max_variants_per_part, execution.max_variants_per_program)
    by_program: dict[tuple, list[Variant]] = {}
    for v in sweep.variants:
        by_program.setdefault(merge_key(v.config), []).append(v)
    programs: list[tuple[tuple, list[Variant], int]] = []
    for key, variants in by_program.items():
        # a part smaller than the devices is not sharded (its variant axis would be padded past the cap)
        devices = choose_devices(execution.devices, step_flops(variants[0].config), min(len(variants), part_cap),
                                 min(n_devices, part_cap))
        splittable = sweep.spec.search is None and on_cpu
        pieces = _split_padded(variants, part_cap, devices) if splittable else [variants]
        programs += [(key if len(pieces) == 1 else (key, structure_key(p[0].config)), p, devices) for p in pieces]
    budget = memory_budget() if budget is None else budget
    groups: list[Group] = []
    for n, (key, variants, devices) in enumerate(programs):
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
        configs = [v.config for v in variants]
        footprint = Footprint.of(configs[0])
        probe, _ = plan_chunks(configs, part_cap, part_cap, devices)
        cap = min(execution.max_variants_per_program, footprint.max_variants(budget, probe.part_size, devices))
        layout, chunks = plan_chunks(configs, part_cap, cap, devices)
        for chunk in chunks:
            groups.append(Group(f"g{len(groups):02d}-{digest}", [variants[i] for i in chunk], devices, layout,
                                f"p{n}", footprint))
    return groups


def oversized(groups: list[Group], budget: int | None = None) -> str | None:
    """Why the plan cannot train here: the first group whose program (one part, at least) needs
    more than the memory budget per device; None where every one fits."""
    budget = memory_budget() if budget is None else budget
    for g in groups:
        if g.memory_bytes > budget:
            c = g.config
            return (f"group {g.id} ({c.data.name} {'-'.join(map(str, c.model.hidden))} {c.optimizer.name} batch "
                    f"{c.training.batch_size}, {g.n_params:,} parameters) needs about {g.memory_bytes / 2**30:,.1f} "
                    f"GiB per device, above the memory budget of {budget / 2**30:,.1f} GiB ({MEMORY_FRACTION:.0%} "
                    "of a device's memory); shrink model.hidden, training.batch_size or data.train_limit")
    return None


def _count(n: int | str, noun: str) -> str:
    """'1 seed', '3 seeds', '2-3 seeds'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def describe_plan(sweep: Sweep, groups: list[Group], budget: int | None = None) -> str:
    """The --dry-run text: variants, groups, compiled programs, their layout (parts x variants
    per part), devices and estimated memory per device."""
    per_setting = Counter(v.label for v in sweep.variants)
    settings = set(per_setting)
    fewest, most = min(per_setting.values(), default=0), max(per_setting.values(), default=0)
    programs = len({g.program for g in groups})
    budget = memory_budget() if budget is None else budget
    seeds = most if fewest == most else f"{fewest}-{most}"
    lines = [
        f"sweep '{sweep.spec.name}' ({sweep.path}): {_count(len(sweep.variants), 'variant')} = "
        f"{_count(len(settings), 'setting')} x {_count(seeds, 'seed')}; "
        f"{len(groups)} group(s), {programs} compiled program(s); memory budget {budget / 2**30:.1f} GiB per device",
        f"{'group':<14}{'variants':>9}{'structures':>11}{'devices':>8}{'params':>10}{'program':>8}{'parts':>9}"
        f"{'memory':>10}  structure",
    ]
    for g in groups:
        c = g.config
        activations = sorted({v.config.model.activation for v in g.variants})
        structure = (f"{c.data.name} {'-'.join(map(str, c.model.hidden))} {'/'.join(activations)} "
                     f"{c.optimizer.name} batch {c.training.batch_size}")
        parts = f"{g.layout.n_parts}x{g.layout.part_size}"
        lines.append(f"{g.id:<14}{len(g.variants):>9}{g.n_structures:>11}{g.devices:>8}{g.n_params:>10,}"
                     f"{g.program:>8}{parts:>9}{g.memory_bytes / 2**20:>8.1f}MB  {structure}")
    return "\n".join(lines)
