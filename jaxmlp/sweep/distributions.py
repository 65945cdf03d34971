"""The distributions of a sweep's random search and model-based optimisation: checked, and drawn
from with a seeded generator (`random:`) or handed to a sampler (`optimize:`)."""
from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np
from pydantic import BaseModel

from jaxmlp.config import STRICT
from jaxmlp.sweep.errors import SweepError


class Distribution(BaseModel):
    """Exactly one of: choice (list), uniform / loguniform ([low, high]), int ([low, high] inclusive);
    `when`: the condition under which the parameter is proposed (`jaxmlp.sweep.conditions`)."""

    model_config = STRICT
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # the field shadows int inside this class
    when: dict[str, Any] | None = None


#: The kinds of distribution a parameter may name.
KINDS = ("choice", "uniform", "loguniform", "int")


def checked(source: str, key: str, dist: Distribution, section: str = "random.params") -> tuple[str, Any]:
    """The one kind a distribution names and its argument, checked: ranges [low, high] with
    low <= high (log-uniform ones positive), choices not empty."""
    kinds = [k for k in KINDS if getattr(dist, k) is not None]
    if len(kinds) != 1:
        raise SweepError(f"{source}: {section}.{key}: give exactly one of {', '.join(KINDS)} "
                         f"(got {', '.join(kinds) or 'none'})")
    kind, arg = kinds[0], getattr(dist, kinds[0])
    where = f"{source}: {section}.{key}.{kind}"
    if kind == "choice" and not arg:
        raise SweepError(f"{where}: empty list; give at least one value")
    if kind != "choice" and arg[0] > arg[1]:
        raise SweepError(f"{where}: {list(arg)} is reversed; give [low, high], e.g. {[arg[1], arg[0]]}")
    if kind == "loguniform" and min(arg) <= 0:
        raise SweepError(f"{where}: {list(arg)} must be positive")
    return kind, arg


def draw(kind: str, arg: Any, rng: np.random.Generator) -> Any:
    """One value of a random distribution (the sweep's `random.params` entry)."""
    if kind == "choice":
        return arg[int(rng.integers(len(arg)))]
    if kind == "uniform":
        return float(rng.uniform(*arg))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
    return int(rng.integers(arg[0], arg[1] + 1))
