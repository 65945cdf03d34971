"""Training an `optimize:` sweep: the sampler's proposals take the slots of a compiled program
as earlier settings stop (continuous batching).

One program per shape covers the space (one in all without structural parameters, see
`optimize_shapes`): its layout switches over every activation and initialiser the space can
propose and has on every feature a proposal can need (dropout, weight decay, ...), with
`batch` x seeds slots (memory permitting). The first `batch` proposals fill the slots;
whenever a trial's seeds have all stopped the study is told (`Optimizer.tell_setting`, in
trial order among those that stop in one epoch) and asked for the next proposal, whose
variants are queued into the program of their shape (`Trainer.add`, or the program started
for them) and take the freed slots before the next epoch. `Study` plays the executor for the
runner: its events are those of `executors.train_program`, plus

    ("asked", 0, (indices, (trial, proposal tag)))   a proposal's variants joined the program
    ("stopped", 0, {index: VariantResult})   variants a rung pruned after the last epoch
    ("told", 0, (variant keys, told tag, settings told, best so far))   a trial was told

Every trial's runs keep its proposal (with the program epoch it was asked after) and what the
study was told (with its position), so `--resume` rebuilds the study (`Optimizer.replay`),
and the trials in flight at the interruption enter the new program at the same epochs
relative to each other as before: each variant counts its own epochs, so while every
variant has a slot, they stop in the same order and the study goes on with the proposals of
an uninterrupted run. Under asynchronous successive halving, a told trial's tag also keeps
its score at each rung and the epoch it was judged in, and a resumed study judges the
settings in flight against them as an uninterrupted one did.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from typing import Any, Iterator

import numpy as np

from jaxmlp.config import RunConfig, load_config, set_dotted, switched_keys
from jaxmlp.data import Dataset
from jaxmlp.engine import Layout, VariantResult
from jaxmlp.engine.structure import features_of
from jaxmlp.engine.layout import TAIL_PART, family_of, plan_slots
from jaxmlp.engine.search import AsyncHalving, SuccessiveHalving
from jaxmlp.models import resolve_init
from jaxmlp.records import VariantRecord
from jaxmlp.sweep.distributions import checked
from jaxmlp.sweep.errors import SweepError
from jaxmlp.sweep.executors import Event
from jaxmlp.sweep.optimize import Proposal, Told
from jaxmlp.sweep.optimize_shapes import (Programs, Shape, check_shapes, joined, reshaped, shape_label, shapes_of,
                                          split, structural_keys)
from jaxmlp.sweep.plan import Footprint, Group, choose_devices, describe_plan, memory_budget, step_flops
from jaxmlp.sweep.spec import Sweep, Variant


#: Slots per part of a study's programs where they fill such parts (else a sweep's tail parts,
#: `engine.layout.TAIL_PART`): its slots stay busy until the last trials (each freed slot takes
#: the next proposal at once), so parts a little wider than the tail parts cost less per
#: slot-epoch. Counted on the 64-setting digits
#: study on a 2-core CPU (CPU seconds of the program's epochs per variant-epoch; parts of
#: 2, 4, 8, 16): one device 9.2, 8.5, 9.4, 10.0 ms; two devices 7.8, 6.9, 7.1, 8.3 ms.
STUDY_PART = 4


def check_optimizable(sweep: Sweep) -> None:
    """Refuse what the study's programs cannot train: structural parameters that are not
    choices or make too many shapes (`optimize_shapes.check_shapes`), a search other than
    asynchronous successive halving."""
    check_shapes(str(sweep.path), sweep.spec.optimize.params, sweep.base)
    search = sweep.search
    if search is not None and not (isinstance(search, SuccessiveHalving) and search.asynchronous):
        raise SweepError(f"{sweep.path}: search: optimize: takes the asynchronous successive halving only "
                         "(scheduler: successive_halving, asynchronous: true); remove the search or change it")


def space_templates(sweep: Sweep, shape: Shape = ()) -> list[RunConfig]:
    """Configurations of one shape that together need whatever any proposal can: every
    activation with every initialiser the space chooses from, and each number at either end
    of its range."""
    params, source = sweep.spec.optimize.params, str(sweep.path)
    base = reshaped(sweep.base, shape, source)
    raw, structural = base.to_dict(), structural_keys(params)
    ends = {key: list(checked(source, key, dist, "optimize.params")[1]) for key, dist in params.items()
            if key not in structural}
    switched = [ends.get(key, [base.flat()[key]]) for key in switched_keys()]
    configs = []
    for values in itertools.product(*switched):
        one = raw
        for key, value in zip(switched_keys(), values):
            one = set_dotted(one, key, value)
        configs.append(load_config(one, source=source))
    for key, values in ends.items():
        if key not in switched_keys():
            configs += [load_config(set_dotted(raw, key, value), source=source) for value in values]
    return configs


def first_batch(sweep: Sweep) -> list[Variant]:
    """The variants of the study's first `batch` proposals (a new study asks them again, the same)."""
    optimizer = sweep.optimizer()
    return [v for p in optimizer.ask(optimizer.batch) for v in sweep.proposal_variants(p)]


def plan_study(sweep: Sweep, n_devices: int = 1, budget: int | None = None) -> Group:
    """The programs of an optimised sweep, one per shape the space can propose
    (`optimize_shapes`), as one group whose layout joins theirs. Each program has a slot for
    each variant of the first batch (`plan_slots` with one variant per slot, in narrow parts
    of STUDY_PART slots where they fill them: a trial's slots are refilled by the next proposal as they free, and
    idle parts are skipped), as many as its share of the memory budget allows, its layout
    covering the space (`space_templates`). Its variants are added as they are asked."""
    execution, source = sweep.spec.execution, str(sweep.path)
    part_cap = min(execution.max_variants_per_part, execution.max_variants_per_program)
    first = [v.config for v in first_batch(sweep)]
    shapes = shapes_of(sweep.spec.optimize.params, sweep.base)
    per_shape = [_slot_configs([reshaped(c, shape, source) for c in first], space_templates(sweep, shape))
                 for shape in shapes]
    devices = choose_devices(execution.devices, step_flops(first[0]), min(len(per_shape[0]), part_cap),
                             min(n_devices, part_cap))
    budget = (memory_budget() if budget is None else budget) // len(shapes)  # every shape's program may run at once
    layouts = [_shape_layout(configs, templates, part_cap, devices, budget, execution.max_variants_per_program)
               for configs, templates in per_shape]
    layout = joined(layouts)
    digest = hashlib.sha256(repr((sweep.spec.name, layout.fingerprint)).encode()).hexdigest()[:8]
    return Group(f"g00-{digest}", [], devices, layout, "p0", Footprint.of(first[0]))


def _slot_configs(configs: list[RunConfig], templates: list[RunConfig]) -> tuple[list[RunConfig], list[RunConfig]]:
    """One shape's variants to plan slots for: `configs`, and a template per family only the templates need."""
    covered = {family_of(c) for c in configs}
    return configs + list({family_of(c): c for c in templates if family_of(c) not in covered}.values()), templates


def _shape_layout(configs: list[RunConfig], templates: list[RunConfig], part_cap: int, devices: int, budget: int,
                  max_slots: int) -> Layout:
    """One shape's program: a slot for each of `configs` (memory permitting), covering `templates`."""
    part = STUDY_PART if len(configs) % STUDY_PART == 0 else TAIL_PART  # (no slot idle for want of a variant)
    probe = plan_slots(configs, part_cap, None, devices, per_slot=1, narrow=True, tail_part=part)
    cap = min(max_slots, Footprint.of(configs[0]).max_variants(budget, max(probe.part_sizes), devices))
    return dataclasses.replace(
        plan_slots(configs, part_cap, cap, devices, per_slot=1, narrow=True, tail_part=part),
        activations=tuple(dict.fromkeys(c.model.activation for c in templates)),
        initializers=tuple(dict.fromkeys(resolve_init(c.model.init, c.model.activation) for c in templates)),
        features=features_of([*configs, *templates]))


def describe_study(sweep: Sweep, group: Group, budget: int | None = None) -> str:
    """The --dry-run text of an optimised sweep: its programs as `describe_plan` shows one (its
    first batch's variants; later proposals take their slots), then the study and, where the
    space proposes several shapes, each shape's program: its slots and memory."""
    spec, layout = sweep.spec.optimize, group.layout
    first = first_batch(sweep)
    seeds = len(first) // max(1, min(spec.batch, spec.trials))
    keys = structural_keys(spec.params)
    layouts = split(layout, keys)
    head = (f"optimize: {spec.sampler} (seed {spec.seed}) proposes {spec.trials} settings x {seeds} seed(s), "
            f"{min(spec.batch, spec.trials)} at a time, into the slots of {_programs(len(layouts))} covering the "
            f"space: activations {', '.join(layout.activations)}; initialisers {', '.join(layout.initializers)}; "
            f"features {', '.join(sorted(layout.features)) or 'none'}")
    lines = [f"  shape {shape_label(shape)}: parts "
             + "+".join(f"{p}x{s}" for p, s in map(shaped.family_shape, range(len(shaped.families))))
             + f", {shaped.n_slots} slots, {_megabytes(shaped, group.devices):.1f}MB"
             for shape, shaped in layouts.items()] if keys else []
    shown = dataclasses.replace(group, variants=first)
    plan = describe_plan(Sweep(sweep.path, sweep.spec, first), [shown], budget, programs=len(layouts))
    return "\n".join([plan, head, *lines])


def _megabytes(layout: Layout, devices: int) -> float:
    """A program's estimated memory per device, in MiB."""
    return Footprint.of(layout.families[0][0]).layout_bytes(layout, devices) / 2**20


def _programs(n: int) -> str:
    return "one program" if n == 1 else f"{n} programs, one per shape (each compiled once, started when a " \
                                         "proposal of its shape trains)"


def proposal_tag(proposal: Proposal, asked_at: int) -> str:
    """A proposal as its runs keep it: the proposal and the program epoch it was asked after."""
    return json.dumps({"proposal": dataclasses.asdict(proposal), "asked_at": asked_at})


def proposal_of_tag(text: str) -> tuple[Proposal, int]:
    fields = json.loads(text)
    return Proposal(**fields["proposal"]), int(fields["asked_at"])


#: A setting's judgement at a rung of asynchronous successive halving: (rung, score, program epoch).
Judged = tuple[int, float, int]


def _told_tag(told: Told, position: int, epoch: int, judged: list[Judged]) -> str:
    """An outcome as its trial's runs keep it: with its position among the outcomes, the program
    epoch told in and, under a search, its score at each rung it reached (a resumed study's
    rungs judge later settings against them)."""
    return json.dumps({"told": dataclasses.asdict(told), "position": position, "told_at": epoch,
                       "rungs": [[r, score if math.isfinite(score) else None, at] for r, score, at in judged]})


def _told_of_tag(text: str) -> tuple[Told, int, int, list[Judged]]:
    fields = json.loads(text)
    told = Told(**{**fields["told"], "values": tuple(fields["told"]["values"])})
    judged = [(int(r), math.inf if score is None else float(score), int(at))
              for r, score, at in fields.get("rungs", [])]  # (none in a store written before rungs were kept)
    return told, int(fields["position"]), int(fields["told_at"]), judged


@dataclasses.dataclass
class _Trial:
    """A proposal in flight: the program epoch it was asked after, its variants (one per
    seed) and the records of those that stopped."""

    proposal: Proposal
    asked_at: int
    variants: list[Variant]
    records: dict[str, VariantRecord] = dataclasses.field(default_factory=dict)
    judged: list[Judged] = dataclasses.field(default_factory=list)  # under a search, at the rungs it reached

    @property
    def complete(self) -> bool:
        return len(self.records) == len(self.variants)

    @property
    def stopped_at(self) -> int:
        """The program epoch after which its last seed stopped (it counts its epochs from `asked_at`)."""
        return self.asked_at + max(r.epochs_trained for r in self.records.values())


class Study:
    """The executor of an optimised sweep's one program (`group`), in this process: it asks,
    trains and tells (see the module docstring). `restore` rebuilds it from the store first
    (--resume)."""

    def __init__(self, sweep: Sweep, group: Group):
        self.sweep, self.group = sweep, group
        self.optimizer = sweep.optimizer()
        self.in_flight: dict[int, _Trial] = {}
        self.offset = 0  # the program epoch (of the first invocation) this program's epoch 0 is
        self.programs: Programs | None = None
        self.halving: AsyncHalving | None = None
        self._backlog: list[Event] = []  # told before this program trains (resume)
        self._trial_of: dict[str, _Trial] = {}  # variant key -> its trial, once it entered the program
        self._started: set[int] = set()  # trials whose variants entered the program
        self._earlier: list[Judged] = []  # rung scores of the settings told before a resume, not yet judged against
        self._decided: set[tuple[int, int]] = set()  # (rung, trial) judged so far

    @property
    def frozen(self) -> tuple[np.ndarray, ...]:
        """As a `ProgramTask`'s: no variant of the program rides along frozen."""
        return (np.zeros(len(self.group.variants), bool),)

    def restore(self, trials: list[dict[str, Any]], done: list[VariantRecord]) -> None:
        """Rebuild the study from the runs' trial tags (`Tracker.trial_tags`) and the records of
        the variants finished before (`done`): ask and tell again as then; the trials whose
        seeds all finished but whose outcome was not kept are told now (in the order they
        stopped), each followed by the proposal asked after it."""
        proposals: dict[int, tuple[Proposal, int]] = {}
        told: dict[int, tuple[Told, int, int, list[Judged]]] = {}
        for tags in trials:
            proposals.setdefault(tags["trial"], proposal_of_tag(tags["proposal"]))
            if tags["told"]:
                told.setdefault(tags["trial"], _told_of_tag(tags["told"]))
        in_order = sorted(told.values(), key=lambda t: t[1])
        asked_again = self.optimizer.replay([p for p, _ in proposals.values()], [t for t, _, _, _ in in_order])
        self._earlier = sorted((j for *_, judged in in_order for j in judged), key=lambda j: j[2])  # by epoch
        untold = {p.trial for p in asked_again}
        last_told_at = in_order[-1][2] if in_order else 0
        while self.optimizer.remaining and len(self.optimizer.asked) < self.optimizer.batch + len(in_order):
            proposal = self.optimizer.ask(1)[0]  # asked after the last outcome kept, but not kept itself
            proposals[proposal.trial] = (proposal, last_told_at)
            untold.add(proposal.trial)
        records = {r.variant_key: r for r in done}
        for trial, (proposal, asked_at) in sorted(proposals.items()):
            variants = self._known(proposal)
            if trial in untold:
                self.in_flight[trial] = _Trial(proposal, asked_at, variants,
                                               {v.key: records[v.key] for v in variants if v.key in records})
        for trial in sorted((t for t in self.in_flight.values() if t.complete), key=lambda t: (t.stopped_at,
                                                                                                t.proposal.trial)):
            self._backlog.append(self._tell(trial, trial.stopped_at))
            for proposal in self.optimizer.ask(1):
                self.in_flight[proposal.trial] = _Trial(proposal, trial.stopped_at, self._known(proposal))
        self.offset = min((t.asked_at for t in self.in_flight.values()), default=0)

    def _known(self, proposal: Proposal) -> list[Variant]:
        """A proposal's variants, added to the sweep's."""
        variants = self.sweep.proposal_variants(proposal)
        self.sweep.variants.extend(variants)
        return variants

    def _tell(self, trial: _Trial, epoch: int) -> Event:
        told = self.optimizer.tell_setting(trial.proposal.trial, [trial.records[v.key] for v in trial.variants])
        del self.in_flight[trial.proposal.trial]
        position = len(self.optimizer.told) - 1
        return "told", 0, ([v.key for v in trial.variants], _told_tag(told, position, epoch, trial.judged),
                           position + 1, self.optimizer.best_value())

    # -- the executor's side --
    def submit(self, tasks: list) -> None:
        """Nothing ahead: the study's one program trains when `run` is read."""

    def discard(self, task) -> None:
        """Nothing to stop."""

    def close(self) -> None:
        self.programs = None

    def run(self, task, data: Dataset) -> Iterator[Event]:
        """Train the study to `trials` proposals (`task`: this study itself, as the runner's program)."""
        yield from self._backlog
        if not self.in_flight and not self.optimizer.told:
            for proposal in self.optimizer.ask(self.optimizer.batch):
                self.in_flight[proposal.trial] = _Trial(proposal, 0, self._known(proposal))
        entering = self._due(self.offset)
        if not entering:
            return
        keys = structural_keys(self.sweep.spec.optimize.params)
        self.programs = programs = Programs(split(self.group.layout, keys), keys, data.on_device(),
                                            self.group.devices)
        if self.sweep.search is not None:
            self.halving = AsyncHalving(self.sweep.search, np.zeros(0, int))
        yield from self._entered(entering)
        compile_seconds = 0.0
        while True:
            for seconds in programs.compile():
                compile_seconds += seconds
                yield "compiled", 0, seconds
            record = programs.step()
            if record is None:
                break
            pruned = self._halving(record, self.offset + record["epoch"]) if self.halving else []
            yield "epoch", 0, record
            stopped = programs.stop(pruned) if pruned else {}
            if stopped:  # the runner ends their runs before the study is told
                yield "stopped", 0, stopped
            epoch = self.offset + record["epoch"]
            yield from self._told({**record["finished"], **stopped}, epoch)
            yield from self._entered(self._due(epoch))
        result = programs.result(compile_seconds, sum(t.result.train_seconds for t in programs.started))
        yield "result", 0, (list(range(programs.n)), result)

    def _halving(self, record: dict[str, Any], epoch: int) -> list[int]:
        """Asynchronous successive halving after program epoch `epoch`: the variants it prunes.
        The rung scores of settings told before a resume join the rungs at the epochs they were
        judged in then (ties with settings judged in the same epoch aside), so that a resumed
        study prunes as an uninterrupted one; each setting judged now keeps its score."""
        halving = self.halving
        while self._earlier and self._earlier[0][2] <= epoch:
            rung, score, _ = self._earlier.pop(0)
            halving.judged[rung].append(score)
        before = {rung: len(scores) for rung, scores in halving.judged.items()}
        pruned = halving.after_epoch(None, record)
        for rung, scores in halving.judged.items():  # the settings judged now, in the order judged
            settings = [int(s) for s in dict.fromkeys(halving.settings[list(halving.noted[rung])].tolist())
                        if (rung, s) in halving.decided and (rung, int(s)) not in self._decided]
            for setting, score in zip(settings, scores[before[rung]:], strict=True):
                self._decided.add((rung, setting))
                self.in_flight[setting].judged.append((rung, score, epoch))
        return pruned

    def _due(self, epoch: int) -> list[_Trial]:
        """The trials in flight asked after program epoch `epoch`, in trial order."""
        return [t for n, t in sorted(self.in_flight.items()) if t.asked_at == epoch and n not in self._started]

    def _todo(self, trial: _Trial) -> list[Variant]:
        """A trial's variants still to train (not finished before a resume)."""
        return [v for v in trial.variants if v.key not in trial.records]

    def _entered(self, trials: list[_Trial]) -> Iterator[Event]:
        """Queue the trials' variants to train into the program of their shape and let the
        runner start their runs."""
        for trial in trials:
            todo = self._todo(trial)
            indices = self.programs.add([v.config for v in todo])
            self.group.variants.extend(todo)
            self._trial_of.update({v.key: trial for v in todo})
            self._started.add(trial.proposal.trial)
            if self.halving is not None:
                self.halving.settings = np.concatenate([self.halving.settings, [trial.proposal.trial] * len(todo)])
                self.halving.best = np.concatenate([self.halving.best, np.full(len(todo), np.inf)])
            yield "asked", 0, (indices, (trial.proposal.trial, proposal_tag(trial.proposal, trial.asked_at)))

    def _told(self, finished: dict[int, VariantResult], epoch: int) -> Iterator[Event]:
        """Tell the trials whose last seed stopped after this epoch (`finished`: the record's
        and those a rung pruned; in trial order), each followed by the next proposal, asked
        after this epoch."""
        stopped = set()
        for i, result in finished.items():
            v = self.group.variants[i]
            trial = self._trial_of[v.key]
            if v.key not in trial.records:  # (a pruned variant comes again with the next record)
                trial.records[v.key] = result.record(dict(v.setting))
                stopped.add(trial.proposal.trial)
        for number in sorted(stopped):
            trial = self.in_flight[number]
            if not trial.complete:
                continue
            yield self._tell(trial, epoch)
            for proposal in self.optimizer.ask(1):
                self.in_flight[proposal.trial] = _Trial(proposal, epoch, self._known(proposal))
