"""Conditional parameters (`when:`) of a sweep's `random:` and `optimize:` sections.

    optimizer.momentum: {uniform: [0.5, 0.99], when: {optimizer.name: sgd}}
    model.leaky_slope: {loguniform: [0.001, 0.3], when: {model.activation: [leaky_relu]}}

A parameter is proposed only where its condition holds; elsewhere its key keeps the base
value, and the setting (and the sampler) never see it. A condition maps keys to a value, or to
a list of values any of which holds; every key must hold. Its keys are other parameters of
the section (a `choice` or an `int`), grid or zip keys, or configuration keys (their base
value). Checked before anything runs: an unknown key, a value the key never takes and
circular conditions are refused, naming the key.
"""
from __future__ import annotations

import graphlib
from typing import Any, Mapping

from jaxmlp.config import CONFIG_KEYS, did_you_mean
from jaxmlp.sweep.distributions import Distribution
from jaxmlp.sweep.errors import SweepError


def _plain(value: Any) -> Any:
    """Tuples as lists, so that a YAML list equals a configuration's tuple ([64, 64] == (64, 64))."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _options(wanted: Any) -> list[Any]:
    """The values a condition accepts: a list's items, or the one value."""
    return list(wanted) if isinstance(wanted, list) else [wanted]


def holds(condition: Mapping[str, Any] | None, values: Mapping[str, Any]) -> bool:
    """Whether every key of `condition` has one of its values in `values` (no condition: always)."""
    return all(_plain(values[key]) in [_plain(w) for w in _options(wanted)]
               for key, wanted in (condition or {}).items())


def _domain(source: str, section: str, key: str, on: str, params: Mapping[str, Distribution],
            axes: Mapping[str, list[Any]], base: Mapping[str, Any]) -> list[Any]:
    """The values key `on` can take where parameter `key`'s condition reads it."""
    where = f"{source}: {section}.{key}.when.{on}"
    if on in params:
        dist = params[on]
        if dist.choice is not None:
            values = list(dist.choice)
        elif dist.int is not None:
            values = list(range(dist.int[0], dist.int[1] + 1))
        else:
            raise SweepError(f"{where}: {on} is drawn from a continuous range, which a condition cannot compare; "
                             "condition on a choice, an int, a grid or zip key, or a base key")
        return values + ([base[on]] if dist.when and on in base else [])
    if on in axes:
        return list(axes[on])
    if on in CONFIG_KEYS:
        return [base[on]]
    raise SweepError(f"{where}: {on} is never set: not a parameter of {section}, a grid or zip key, nor a "
                     f"configuration key{did_you_mean(on, [*params, *axes, *CONFIG_KEYS])}")


def condition_order(source: str, section: str, params: Mapping[str, Distribution],
                    axes: Mapping[str, list[Any]], base: Mapping[str, Any]) -> list[str]:
    """The parameters in file order, except that each comes after the parameters its condition
    reads; refuses a condition on a key never set, a value the key never takes, and circular
    conditions (`axes`: the grid and zip lists; `base`: the base configuration by dotted key)."""
    for key, dist in params.items():
        for on, wanted in (dist.when or {}).items():
            domain = [_plain(v) for v in _domain(source, section, key, on, params, axes, base)]
            if not any(_plain(w) in domain for w in _options(wanted)):
                raise SweepError(f"{source}: {section}.{key}.when.{on}: {wanted!r} never holds; {on} takes "
                                 f"{', '.join(map(repr, domain))}")
    reads = {key: [on for on in (dist.when or {}) if on in params] for key, dist in params.items()}
    try:
        graphlib.TopologicalSorter(reads).prepare()
    except graphlib.CycleError as err:
        cycle = err.args[1]
        raise SweepError(f"{source}: {section}.{cycle[0]}.when: circular conditions "
                         f"({' -> '.join(reversed(cycle))}: each reads the next); remove one of these "
                         "conditions") from None
    order: list[str] = []
    while len(order) < len(params):
        order.append(next(k for k in params if k not in order and all(on in order for on in reads[k])))
    return order


def active(params: Mapping[str, Distribution], order: list[str], proposed: Mapping[str, Any],
           context: Mapping[str, Any]) -> dict[str, Any]:
    """The proposed values whose conditions hold (in file order), reading each condition in
    `context` (the grid, zip and base values by dotted key) and the active values before it."""
    values: dict[str, Any] = {}
    for key in order:
        if holds(params[key].when, {**context, **values}):
            values[key] = proposed[key]
    return {key: values[key] for key in params if key in values}
