"""Grouping a sweep's variants into compiled programs, and describing the plan.

Variants that share their structure (everything but their numbers, `jaxmlp.config.HParams`,
and their seeds) train together, vmapped; structures that differ only in activation or
initialiser share one program (`engine.merge_key`) and one copy of its code
(`engine.families.Family`), since one program compiles much faster than several. A program's
slots are fed by queues (`engine.plan_slots`: about a third as many slots as variants, as
many as memory allows), so a stopped variant's slot takes the next one at once; under a
synchronous search (lockstep halving, PBT) every variant has a slot and a group larger than
`max_variants_per_program` is split into chunks. Each group also gets a device choice: small
networks run faster with the variant axis sharded over one XLA device per core, wide ones
keep all cores busy on one device.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from dataclasses import dataclass

from jaxmlp.config import RunConfig
from jaxmlp.data import dataset_shape, split_sizes
from jaxmlp.engine import EVAL_CHUNK, Layout, merge_key, plan_chunks, structure_key
from jaxmlp.engine.layout import QUEUE_PER_SLOT, family_of, plan_slots
from jaxmlp.models import n_parameters, random_width
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
        draws = random_width(c.model.hidden, n_in, input_dropout=True, dropout=True, noisy=True)  # at most
        transient = c.training.batch_size * (3 * width + n_in + draws) + 2 * min(EVAL_CHUNK, n_train) * width
        return Footprint(4 * state, 4 * transient, 4 * n_examples * (n_in + 1))

    def layout_bytes(self, layout: Layout, devices: int = 1) -> int:
        """One device's share of a program of `layout`: every slot's state, the widest part's transients."""
        shapes = [layout.family_shape(k) for k in range(len(layout.families))]
        return self.data + sum(p * -(-s // devices) for p, s in shapes) * self.state + \
            -(-max(s for _, s in shapes) // devices) * self.transient

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
        return self.footprint.layout_bytes(self.layout, self.devices)

    @property
    def queued(self) -> bool:
        """Whether the group's slots are fed by a queue (fewer slots than variants)."""
        return self.layout.n_slots < len(self.variants)


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


def lockstep(sweep: Sweep) -> bool:
    """Whether the sweep's variants must train in lockstep, each in a slot from the start: a
    synchronous search (halving with `asynchronous: false`, PBT) compares them epoch by epoch."""
    search = sweep.search
    return search is not None and not getattr(search, "asynchronous", False)


def plan_groups(sweep: Sweep, n_devices: int = 1, budget: int | None = None) -> list[Group]:
    """Variants that can share a program (`engine.merge_key`), one group per program (or per
    chunk, `execution.chunks`) whose slots are fed by queues (`engine.plan_slots`: parts of
    at most `max_variants_per_part` slots, as many slots as `budget` bytes per device,
    default `memory_budget()`, and `max_variants_per_program` allow). Under a lockstep search
    (`lockstep`) every variant has a slot: a program's variants are cut into chunks of one
    layout each (`engine.plan_chunks`), which train together."""
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
        programs.append((key, variants, devices))
    budget = memory_budget() if budget is None else budget
    groups: list[Group] = []
    for n, (key, variants, devices) in enumerate(programs):
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
        configs = [v.config for v in variants]
        footprint = Footprint.of(configs[0])
        if not lockstep(sweep):
            groups += _queued_groups(sweep, variants, devices, part_cap, budget, footprint, digest, f"p{n}", len(groups))
            continue
        probe, _ = plan_chunks(configs, part_cap, part_cap, devices)
        cap = min(execution.max_variants_per_program, footprint.max_variants(budget, probe.part_size, devices))
        layout, chunks = plan_chunks(configs, part_cap, cap, devices)
        for chunk in chunks:
            groups.append(Group(f"g{len(groups):02d}-{digest}", [variants[i] for i in chunk], devices, layout,
                                f"p{n}", footprint))
    return groups


def _queued_groups(sweep: Sweep, variants: list[Variant], devices: int, part_cap: int, budget: int,
                   footprint: Footprint, digest: str, program: str, first: int) -> list[Group]:
    """A program's variants as `execution.chunks` groups (every chunk-th variant each), each
    draining its own queue through slots of one layout (`engine.plan_slots`, covering the
    activations, initialisers and features of all of them, so the chunks share the program)."""
    execution = sweep.spec.execution
    configs = [v.config for v in variants]
    per_slot = QUEUE_PER_SLOT if sweep.search is not None or any(
        c.training.early_stopping.patience is not None for c in configs) else 1
    pieces = [variants[k::execution.chunks] for k in range(min(execution.chunks, len(variants)))]
    first_configs = [v.config for v in pieces[0]]
    probe = plan_slots(first_configs, part_cap, None, devices, per_slot)
    cap = min(execution.max_variants_per_program, footprint.max_variants(budget, max(probe.part_sizes), devices))
    whole = plan_slots(configs, part_cap, cap, devices, per_slot)
    layout = dataclasses.replace(plan_slots(first_configs, part_cap, cap, devices, per_slot),
                                 activations=whole.activations, initializers=whole.initializers,
                                 features=whole.features)
    layout = _with_families_of(layout, whole)
    return [Group(f"g{first + k:02d}-{digest}", piece, devices, layout, program, footprint)
            for k, piece in enumerate(pieces)]


def _with_families_of(layout: Layout, whole: Layout) -> Layout:
    """`layout` with a family for every family of `whole` (a chunk lacking one gets a part of its size)."""
    mine = {family_of(t): (t, n, layout.family_shape(k)[1]) for k, (t, n) in enumerate(layout.families)}
    families, sizes = [], []
    for k, (template, n) in enumerate(whole.families):
        t, parts, size = mine.get(family_of(template), (template, 1, min(whole.family_shape(k)[1], layout.part_size)))
        families.append((t, parts))
        sizes.append(size)
    return dataclasses.replace(layout, families=tuple(families), part_sizes=tuple(sizes))


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


def describe_plan(sweep: Sweep, groups: list[Group], budget: int | None = None, programs: int | None = None) -> str:
    """The --dry-run text: variants, groups, compiled programs, their layout (parts x slots
    per part, per family), the variants queued beyond the slots, devices and estimated memory
    per device. `programs`: how many programs compile where the groups do not tell (a study
    compiles one per shape of its one group)."""
    per_setting = Counter(v.label for v in sweep.variants)
    settings = set(per_setting)
    fewest, most = min(per_setting.values(), default=0), max(per_setting.values(), default=0)
    programs = len({g.program for g in groups}) if programs is None else programs
    budget = memory_budget() if budget is None else budget
    seeds = most if fewest == most else f"{fewest}-{most}"
    lines = [
        f"sweep '{sweep.spec.name}' ({sweep.path}): {_count(len(sweep.variants), 'variant')} = "
        f"{_count(len(settings), 'setting')} x {_count(seeds, 'seed')}; "
        f"{len(groups)} group(s), {programs} compiled program(s); memory budget {budget / 2**30:.1f} GiB per device",
        f"{'group':<14}{'variants':>9}{'structures':>11}{'devices':>8}{'params':>10}{'program':>8}{'parts':>9}"
        f"{'slots':>7}{'queued':>7}{'memory':>10}  structure",
    ]
    for g in groups:
        c = g.config
        activations = sorted({v.config.model.activation for v in g.variants})
        structure = (f"{c.data.name} {'-'.join(map(str, c.model.hidden))} {'/'.join(activations)} "
                     f"{c.optimizer.name} batch {c.training.batch_size}")
        parts = "+".join(f"{p}x{s}" for p, s in map(g.layout.family_shape, range(len(g.layout.families))))
        queued = max(0, len(g.variants) - g.layout.n_slots)
        lines.append(f"{g.id:<14}{len(g.variants):>9}{g.n_structures:>11}{g.devices:>8}{g.n_params:>10,}"
                     f"{g.program:>8}{parts:>9}{g.layout.n_slots:>7}{queued:>7}{g.memory_bytes / 2**20:>8.1f}MB"
                     f"  {structure}")
    return "\n".join(lines)
