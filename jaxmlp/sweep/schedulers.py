"""A sweep's `search` section: validated, and turned into the engine's scheduler
(`jaxmlp.engine.search`)."""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from jaxmlp.config import MAX_SEED, STRICT, bounds, did_you_mean, numeric_fields
from jaxmlp.sweep.distributions import checked, draw
from jaxmlp.sweep.errors import SweepError

if TYPE_CHECKING:  # the engine (and JAX) are imported only when a sweep has a search
    from jaxmlp.engine.search import PopulationBasedTraining, SuccessiveHalving

SCHEDULERS = ("successive_halving", "pbt")
_HALVING_KEYS = ("rungs", "min_epochs", "reduction_factor", "keep", "aggregate", "asynchronous")
_PBT_KEYS = ("interval", "quantile", "perturb", "resample_probability", "seed")


class SearchSpec(BaseModel):
    """Adaptive search inside the compiled loop (see `jaxmlp.engine.search`)."""

    model_config = STRICT

    scheduler: Literal[SCHEDULERS]  # type: ignore[valid-type]
    metric: Literal["val_loss", "val_accuracy"] | None = None  # default: the early-stopping monitor
    rungs: list[int] | None = None
    min_epochs: int | None = Field(None, gt=0)
    reduction_factor: float | None = Field(None, gt=1)
    keep: float | None = Field(None, gt=0, lt=1)
    aggregate: Literal["mean", "median", "best"] | None = None
    asynchronous: bool | None = None  # successive halving: decide as settings reach a rung (default) or in lockstep
    interval: int | None = Field(None, gt=0)
    quantile: float | None = None
    perturb: dict[str, list[float]] | None = None
    resample_probability: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


def search_of(s: SearchSpec, random_params: dict[str, Any], epochs: int, monitor: str,
              source: str) -> SuccessiveHalving | PopulationBasedTraining:
    """The engine's scheduler for a sweep's `search` section `s` (`random_params`: the sweep's
    random distributions, for resampling; `epochs` and `monitor`: its budget and early-stopping
    metric), validated: unknown or misplaced
    keys, rungs not increasing or past the epoch budget, a quantile outside (0, 0.5] and
    perturbed keys that are not vmapped numbers are refused with the key and what is allowed."""
    from jaxmlp.engine.search import PopulationBasedTraining, SuccessiveHalving

    where = f"{source}: search"
    given = {k for k, v in s.model_dump().items() if v is not None}
    own, other = (_HALVING_KEYS, _PBT_KEYS) if s.scheduler == "successive_halving" else (_PBT_KEYS, _HALVING_KEYS)
    misplaced = sorted(given & set(other))
    if misplaced:
        raise SweepError(f"{where}.{misplaced[0]}: not a {s.scheduler} key; its keys are scheduler, metric, "
                         f"{', '.join(own)}")
    metric = s.metric or monitor
    if s.scheduler == "successive_halving":
        return SuccessiveHalving(rungs=_rungs(s, epochs, where), metric=metric, aggregate=s.aggregate or "mean",
                                 keep=s.keep if s.keep is not None else 1 / (s.reduction_factor or 2),
                                 asynchronous=s.asynchronous is not False)
    if s.interval is None:
        raise SweepError(f"{where}.interval: missing; give the epochs between exploit steps, e.g. interval: 4")
    quantile = 0.25 if s.quantile is None else s.quantile
    if not 0 < quantile <= 0.5:
        raise SweepError(f"{where}.quantile: {quantile}; give a fraction in (0, 0.5], e.g. 0.25")
    perturb = s.perturb or {}
    if not perturb:
        raise SweepError(f"{where}.perturb: missing; give the numbers to perturb and their factors, "
                         "e.g. {optimizer.learning_rate: [0.8, 1.25]}")
    numeric = [f.key for f in numeric_fields() if f.dtype != "bool"]
    resample = {}
    for key, factors in perturb.items():
        if key not in numeric:
            raise SweepError(f"{where}.perturb.{key}: not a number that can change during training"
                             f"{did_you_mean(key, numeric)}; allowed keys: {', '.join(numeric)}")
        if not factors or min(factors) <= 0:
            raise SweepError(f"{where}.perturb.{key}: {factors}; give positive factors, e.g. [0.8, 1.25]")
        dist = random_params.get(key)
        if dist is not None:
            kind, arg = checked(source, key, dist)
            resample[key] = partial(draw, kind, arg)
    return PopulationBasedTraining(
        interval=s.interval, quantile=quantile, perturb=perturb, metric=metric, seed=s.seed or 0,
        resample_probability=s.resample_probability or 0.0, resample=resample,
        bounds={key: bounds(key) for key in perturb})


def _rungs(s: SearchSpec, epochs: int, where: str) -> tuple[int, ...]:
    if s.rungs is not None:
        rungs = list(s.rungs)
        if not rungs or any(b <= a for a, b in zip(rungs, rungs[1:])) or rungs[0] < 1 or rungs[-1] >= epochs:
            raise SweepError(f"{where}.rungs: {rungs}; give increasing epochs between 1 and {epochs - 1} "
                             f"(the epoch budget is {epochs}), e.g. [2, 4, 8]")
        return tuple(rungs)
    if s.min_epochs is None:
        raise SweepError(f"{where}: give rungs (e.g. rungs: [2, 4, 8]) or min_epochs with reduction_factor")
    factor, rungs, rung = s.reduction_factor or 2.0, [], float(s.min_epochs)
    while round(rung) < epochs:
        if not rungs or round(rung) > rungs[-1]:
            rungs.append(int(round(rung)))
        rung *= factor
    if not rungs:
        raise SweepError(f"{where}.min_epochs: {s.min_epochs} is not below the epoch budget of {epochs}")
    return tuple(rungs)
