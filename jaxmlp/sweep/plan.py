"""Grouping a sweep's variants into compiled programs, and describing the plan.

Variants that share their structure (everything but the numbers declared vmapped in
`jaxmlp.config`) train together, vmapped; structures that differ only in activation or
initialiser share one program (`engine.merge_key`) and, with as many variants each, one
copy of its code (`engine.trainer._Family`), since one program compiles much faster than several.
A group larger than `max_variants_per_program` is split. Each group also gets a device choice: small
networks run faster with the variant axis sharded over one XLA device per core, wide
ones keep all cores busy on one device.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from jaxmlp.data import dataset_shape
from jaxmlp.sweep.spec import Sweep, Variant
from jaxmlp.engine import merge_key, structure_key
from jaxmlp.models import n_parameters

#: Below this many multiply-adds per training step and variant, sharding variants pays off.
SHARD_BELOW_FLOPS = 1e8
_OPTIMIZER_SLOTS = {"sgd": 1, "rmsprop": 2, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class Group:
    id: str
    variants: list[Variant]
    devices: int

    @property
    def config(self):
        return self.variants[0].config

    @property
    def n_structures(self) -> int:
        return len({structure_key(v.config) for v in self.variants})

    @property
    def n_params(self) -> int:
        n_in, n_out, _ = dataset_shape(self.config.data)
        return n_parameters([n_in, *self.config.model.hidden, n_out])

    @property
    def step_flops(self) -> float:
        """Training FLOPs per step and variant: forward + backward is about 6 x weights x batch."""
        return 6.0 * self.n_params * self.config.training.batch_size

    @property
    def memory_bytes(self) -> int:
        """Rough device memory: parameters, best copy, optimizer slots, activations, data."""
        c, k = self.config, len(self.variants)
        n_in, _, n_examples = dataset_shape(c.data)
        slots = 2 + _OPTIMIZER_SLOTS[c.optimizer.name]
        activations = (c.training.batch_size * 3 + n_examples * 0.15) * sum(c.model.hidden)
        return int(4 * (k * (slots * self.n_params + activations) + n_examples * n_in))


def choose_devices(mode: str, step_flops: float, n_variants: int, n_devices: int) -> int:
    """How many devices a group's variant axis is sharded over."""
    if mode == "one" or n_devices == 1 or n_variants == 1:
        return 1
    if mode == "all":
        return n_devices
    return n_devices if step_flops < SHARD_BELOW_FLOPS else 1


def plan_groups(sweep: Sweep, n_devices: int = 1) -> list[Group]:
    """Variants grouped by structure (first appearance order), split at the size limit."""
    by_program: dict[tuple, list[Variant]] = {}
    for v in sweep.variants:
        by_program.setdefault(merge_key(v.config), []).append(v)
    limit = sweep.spec.execution.max_variants_per_program
    groups = []
    for key, variants in by_program.items():
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
        for start in range(0, len(variants), limit):
            chunk = variants[start:start + limit]
            probe = Group("", chunk, 1)
            devices = choose_devices(sweep.spec.execution.devices, probe.step_flops, len(chunk), n_devices)
            groups.append(Group(f"g{len(groups):02d}-{digest}", chunk, devices))
    return groups


def describe_plan(sweep: Sweep, groups: list[Group]) -> str:
    """The --dry-run text: variants, groups, programs, devices and memory per group."""
    settings = {v.label for v in sweep.variants}
    lines = [
        f"sweep '{sweep.spec.name}' ({sweep.path}): {len(sweep.variants)} variants = "
        f"{len(settings)} settings x {len(sweep.variants) // max(1, len(settings))} seeds; "
        f"{len(groups)} compiled program(s)",
        f"{'group':<14}{'variants':>9}{'structures':>11}{'devices':>8}{'params':>10}{'memory':>10}  structure",
    ]
    for g in groups:
        c = g.config
        activations = sorted({v.config.model.activation for v in g.variants})
        structure = (f"{c.data.name} {'-'.join(map(str, c.model.hidden))} {'/'.join(activations)} "
                     f"{c.optimizer.name} batch {c.training.batch_size}")
        lines.append(f"{g.id:<14}{len(g.variants):>9}{g.n_structures:>11}{g.devices:>8}{g.n_params:>10,}"
                     f"{g.memory_bytes / 2**20:>8.1f}MB  {structure}")
    return "\n".join(lines)
