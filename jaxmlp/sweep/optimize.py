"""Model-based search (`optimize:`): an Optuna study, driven by ask and tell, proposes the settings.

    optimize:
      sampler: tpe        # tpe (default), gp, cmaes, nsga2, qmc, random: Optuna's samplers, seeded
      trials: 64          # settings proposed in all
      batch: 16           # settings asked at once and trained together
      seed: 0
      params:             # the distributions of `random:`, `when:` included
        optimizer.learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
        optimizer.momentum: {uniform: [0.5, 0.99], when: {optimizer.name: sgd}}

The `Optimizer` knows nothing of training: `ask(n)` proposes settings (each a trial number and
its values by dotted key, inactive conditional parameters left out), `tell`, `tell_failed` and
`tell_pruned` report a setting's outcome (`tell_setting` from its seeds' records). TPE runs
with its constant liar, so settings still training count as such; the same file and seed give
the same proposals on the same devices. Each `Proposal` and `Told` is plain data to keep with the runs: `replay`
brings a new study to where an earlier invocation stopped (`--resume`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import warnings
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from jaxmlp.records import VariantRecord
from jaxmlp.report.importance import optuna_quietly
from jaxmlp.report.objectives import Objective, mean_values
from jaxmlp.sweep.conditions import holds
from jaxmlp.sweep.distributions import Distribution
from jaxmlp.sweep.errors import SweepError

#: The packages a sampler needs besides Optuna, and how to install them.
SAMPLER_NEEDS = {"gp": ("torch", "pip install torch"), "cmaes": ("cmaes", "pip install cmaes")}
#: Samplers that optimise one objective only.
SINGLE_OBJECTIVE = ("cmaes",)


class OptimizeSpec(BaseModel):
    """A sweep file's `optimize:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sampler: Literal["tpe", "gp", "cmaes", "nsga2", "qmc", "random"] = "tpe"
    trials: int = Field(gt=0, description="settings proposed in all")
    batch: int = Field(16, gt=0, description="settings asked at once and trained together (at most trials)")
    seed: int = 0
    params: dict[str, Distribution]


def check_sampler(spec: OptimizeSpec, n_objectives: int, source: str) -> None:
    """Refuse a sampler that cannot run here (a missing package) or on these objectives."""
    if spec.sampler in SAMPLER_NEEDS and importlib.util.find_spec(SAMPLER_NEEDS[spec.sampler][0]) is None:
        package, fix = SAMPLER_NEEDS[spec.sampler]
        raise SweepError(f"{source}: optimize.sampler: {spec.sampler!r} needs {package}, which is not installed; "
                         f"{fix}, or use one of tpe, nsga2, qmc, random")
    if spec.sampler in SINGLE_OBJECTIVE and n_objectives > 1:
        raise SweepError(f"{source}: optimize.sampler: {spec.sampler!r} optimises one objective, but objectives "
                         f"names {n_objectives}; use tpe or nsga2 for several")


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A proposed setting: its trial number, its values by dotted key (active parameters only,
    in file order) and how many outcomes the study had been told when it was asked."""

    trial: int
    values: dict[str, Any]
    asked_after: int

    def to_json(self) -> str:
        """The proposal as JSON text (a run's tag keeps it for `Optimizer.replay`)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Proposal:
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class Told:
    """An outcome the study was told: state complete (`values`, one per objective), failed
    (diverged or broken), or pruned (`values`: the first objective at rung `rung_epoch`)."""

    trial: int
    state: Literal["complete", "failed", "pruned"]
    values: tuple[float, ...] = ()
    rung_epoch: int | None = None

    def to_json(self) -> str:
        """The outcome as JSON text (a run's tag keeps it, with its position among the outcomes told)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Told:
        fields = json.loads(text)
        return cls(**{**fields, "values": tuple(fields["values"])})


def _sampler(name: str, seed: int, batch: int, conditional: bool):
    """Optuna's sampler of that name, seeded; TPE multivariate (grouped where parameters are
    conditional) with its constant liar, NSGA-II with one batch per generation."""
    import optuna

    samplers = optuna.samplers
    with warnings.catch_warnings():  # multivariate and grouped TPE are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {"tpe": lambda: samplers.TPESampler(seed=seed, multivariate=True, group=conditional,
                                                   constant_liar=True),
                "gp": lambda: samplers.GPSampler(seed=seed),
                "cmaes": lambda: samplers.CmaEsSampler(seed=seed),
                "nsga2": lambda: samplers.NSGAIISampler(seed=seed, population_size=max(2, batch)),
                "qmc": lambda: samplers.QMCSampler(seed=seed, scramble=True),
                "random": lambda: samplers.RandomSampler(seed=seed)}[name]()


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class Optimizer:
    """An Optuna study over `params` (`order`: the order their conditions are read, see
    `conditions.condition_order`; `context`: the base configuration by dotted key, which
    conditions read where no parameter sets the key)."""

    def __init__(self, spec: OptimizeSpec, order: Sequence[str], context: Mapping[str, Any],
                 objectives: Sequence[Objective], name: str = "jaxmlp"):
        import optuna

        self.spec, self.order, self.context, self.objectives = spec, list(order), dict(context), list(objectives)
        conditional = any(d.when for d in spec.params.values())
        with optuna_quietly():
            self.study = optuna.create_study(
                study_name=name, directions=[o.direction for o in objectives],
                sampler=_sampler(spec.sampler, spec.seed, self.batch, conditional))
        self.running: dict[int, Any] = {}  # trial number -> Optuna trial, asked and not told
        self.asked: list[Proposal] = []
        self.told: list[Told] = []

    @property
    def batch(self) -> int:
        """Settings asked at once: `batch`, at most `trials`."""
        return min(self.spec.batch, self.spec.trials)

    @property
    def remaining(self) -> int:
        """Settings still to propose."""
        return self.spec.trials - len(self.asked)

    def ask(self, n: int) -> list[Proposal]:
        """Up to `n` new settings (fewer once `trials` were proposed)."""
        return [self._ask_one() for _ in range(min(n, self.remaining))]

    def _ask_one(self) -> Proposal:
        trial = self.study.ask()
        values: dict[str, Any] = {}
        for key in self.order:
            if holds(self.spec.params[key].when, {**self.context, **values}):
                values[key] = _suggest(trial, key, self.spec.params[key])
        proposal = Proposal(trial.number, {k: values[k] for k in self.spec.params if k in values}, len(self.told))
        self.running[trial.number] = trial
        self.asked.append(proposal)
        return proposal

    def tell(self, trial: int, values: Sequence[float]) -> Told:
        """A setting's objective values (the mean over its seeds, one per objective); a value
        that is not finite makes it failed."""
        values = tuple(float(v) for v in values)
        if len(values) != len(self.objectives):
            raise ValueError(f"trial {trial}: {len(values)} values for {len(self.objectives)} objectives")
        if not all(map(math.isfinite, values)):
            return self.tell_failed(trial)
        return self._tell(Told(trial, "complete", values))

    def tell_failed(self, trial: int) -> Told:
        """A setting that diverged or could not train: the sampler learns no number from it."""
        return self._tell(Told(trial, "failed"))

    def tell_pruned(self, trial: int, rung_epoch: int, value: float) -> Told:
        """A setting stopped by successive halving at `rung_epoch`, with its first objective there."""
        return self._tell(Told(trial, "pruned", (float(value),), int(rung_epoch)))

    def tell_setting(self, trial: int, records: Sequence[VariantRecord]) -> Told:
        """Tell a setting's outcome from the records of its seeds (all stopped): failed where one
        diverged or failed, pruned where successive halving stopped them, else the mean values."""
        if not records or any(r.diverged or not r.finished for r in records):
            return self.tell_failed(trial)
        values = mean_values(records, self.objectives)
        rungs = [r.pruned_at for r in records if r.pruned_at is not None]
        if rungs:
            return self.tell_pruned(trial, max(rungs), values[0]) if math.isfinite(values[0]) \
                else self.tell_failed(trial)
        return self.tell(trial, values)

    def _tell(self, told: Told) -> Told:
        from optuna.trial import TrialState

        if told.trial not in self.running:
            raise ValueError(f"trial {told.trial} is not running (asked: {len(self.asked)}, "
                             f"told already: {told.trial in {t.trial for t in self.told}})")
        trial = self.running.pop(told.trial)
        with optuna_quietly():
            if told.state == "complete":
                self.study.tell(trial, list(told.values))
            elif told.state == "pruned":
                if len(self.objectives) == 1:  # (Optuna keeps intermediate values of one objective only)
                    trial.report(told.values[0], told.rung_epoch)
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, state=TrialState.FAIL)
        self.told.append(told)
        return told

    def best_value(self) -> float | None:
        """The best first objective among the complete settings so far (None before one)."""
        values = [t.values[0] for t in self.told if t.state == "complete"]
        if not values:
            return None
        return max(values) if self.objectives[0].maximize else min(values)

    def replay(self, proposals: Sequence[Proposal], told: Sequence[Told]) -> list[Proposal]:
        """Bring this new study to where an earlier invocation stopped: ask again as it asked
        (each proposal after as many outcomes as then) and tell again what it was told, in the
        order it was told, so that it goes on with the proposals an uninterrupted study makes.
        Returns the proposals asked but never told, whose settings train again."""
        proposals = sorted(proposals, key=lambda p: p.trial)
        if [p.trial for p in proposals] != list(range(len(proposals))):
            raise SweepError(f"the study cannot be rebuilt: trials {[p.trial for p in proposals]} are kept, "
                             f"not 0 to {len(proposals) - 1}")
        pending = iter(proposals)
        upcoming = next(pending, None)
        for position in range(len(told) + 1):
            while upcoming is not None and upcoming.asked_after <= position:
                again = self._ask_one()
                if (again.trial, again.values) != (upcoming.trial, upcoming.values):
                    raise SweepError(f"the study cannot be rebuilt: trial {upcoming.trial} proposed "
                                     f"{upcoming.values} then, {again.values} now (a different sampler, seed, "
                                     "space or Optuna version)")
                upcoming = next(pending, None)
            if position < len(told):
                self._tell(told[position])
        told_trials = {t.trial for t in told}
        return [p for p in self.asked if p.trial not in told_trials]


def _suggest(trial, key: str, dist: Distribution) -> Any:
    """A trial's value of one parameter; choices that are not plain values (lists, such as
    model.hidden) go to Optuna as their JSON text."""
    if dist.choice is not None:
        if all(map(_primitive, dist.choice)):
            return trial.suggest_categorical(key, list(dist.choice))
        return json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in dist.choice]))
    if dist.int is not None:
        return trial.suggest_int(key, *dist.int)
    if dist.loguniform is not None:
        return trial.suggest_float(key, *dist.loguniform, log=True)
    return trial.suggest_float(key, *dist.uniform)
