"""Running a sweep: groups train one after another while their runs are logged (`runs`).

The engine trains a group; as each variant stops, the runner records it (a `VariantRecord`),
considers it for its setting's best (`best`), and has its run ended while the others train;
once a setting has no variant left to train, its best variant's model is logged. A failing
group or a diverged variant never stops the others. Ctrl-C and SIGTERM mark unfinished runs
KILLED; `resume` skips variants already FINISHED (or diverged, which is deterministic) under
the sweep's newest parent run, and a chunk killed mid-training goes on from its snapshot
(`snapshots`, written by the local executor). An optimised sweep (`optimize:`) trains one
program whose variants are proposed as it trains (`optimize_run.Study`, its executor): the
runner starts their runs as they are asked and tags them with what the study was told.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxmlp import report
from jaxmlp.checkpoint import checkpoint_meta
from jaxmlp.config import DataConfig
from jaxmlp.data import Dataset, dataset_key, load_dataset
from jaxmlp.engine import VariantResult, structure_key
from jaxmlp.records import VariantRecord
from jaxmlp.sweep.best import BestVariant, consider, selection_score
from jaxmlp.sweep.executors import LocalExecutor, ProgramTask
from jaxmlp.sweep.optimize_run import Study
from jaxmlp.sweep.plan import Group
from jaxmlp.sweep.progress import ProgressBars
from jaxmlp.sweep.runs import Opened, ResumeRefused, SweepRuns
from jaxmlp.sweep.snapshots import Snapshots
from jaxmlp.sweep.signals import Interrupts
from jaxmlp.sweep.spec import Sweep, Variant


#: Where the runner's notices go (a resume's runs left by a dead process, a snapshot not used,
#: the tracking process's stderr): the command prints them; the library prints nothing unless
#: its user configures logging.
LOG = logging.getLogger("jaxmlp.sweep")
LOG.addHandler(logging.NullHandler())

#: Seconds the tracking store has to answer the probe (experiment, parent run written and
#: read back) before anything is compiled.
OPEN_TIMEOUT = 90.0
#: Seconds a store that is opening the parent run when a signal comes may take to finish, so that
#: the parent is marked KILLED rather than left RUNNING (a store that does not answer: abandoned).
INTERRUPTED_OPEN_GRACE = 5.0


class StoreUnavailable(RuntimeError):
    """The tracking store could not be opened, written and read back before training."""

    def __init__(self, tracking_uri: str, reason: str):
        from jaxmlp.tracking import store_fix

        reason = reason.strip().splitlines()[0] if reason.strip() else reason  # (SQLAlchemy adds SQL and links)
        super().__init__(f"the tracking store {tracking_uri} cannot be used: {reason}. Nothing was trained. "
                         f"Fix: {store_fix(tracking_uri, reason)}.")


@dataclass
class Options:
    tracking: bool = True
    tracking_uri: str | None = None
    resume: bool = False
    register: str | None = None
    progress: bool = True
    snapshot_every: float = 0.0  # seconds of training between two snapshots of a chunk (0: none)
    snapshot_dir: str | None = None


@dataclass
class Program:
    """One compiled program to train: its chunks (groups), the variants of each still to train, its task."""

    chunks: list[Group]
    todo: list[list[Variant]]
    task: ProgramTask


class Ended:
    """What a sweep's end says of itself, from its failures, tracking errors and epoch counts."""

    failures: list[str]
    tracking_errors: list[str]
    slot_epochs: int
    variant_epochs: int

    @property
    def utilisation(self) -> float | None:
        """The share of the slots' epochs that trained a variant (None where nothing trained)."""
        return self.variant_epochs / self.slot_epochs if self.slot_epochs else None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.tracking_errors


@dataclass
class Outcome(Ended):
    records: list[VariantRecord]
    rows: list[dict[str, Any]]
    failures: list[str]
    seconds: float
    compile_seconds: float = 0.0
    experiment_id: str | None = None
    parent_run_id: str | None = None
    tracking_errors: list[str] = field(default_factory=list)
    slot_epochs: int = 0  # epochs trained by all slots of the parts that ran (this invocation)
    variant_epochs: int = 0  # epochs trained by variants (this invocation)
    notices: list[str] = field(default_factory=list)  # what the user should know, as it was logged
    histories: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # per variant trained here


class SweepRunner:
    """`tracker`: a `Tracker` or `TrackerProcess` (default: `TrackerProcess.for_sweep`); the runner closes it."""

    def __init__(self, sweep: Sweep, groups: list[Group], options: Options, tracker=None, executor=None,
                 interrupts: Interrupts | None = None):
        self.sweep, self.groups, self.options = sweep, groups, options
        snapshots = None
        if options.tracking and options.snapshot_every > 0 and options.snapshot_dir and sweep.search is None:
            snapshots = Snapshots(options.snapshot_dir, options.snapshot_every)  # (resume needs the store)
        self.study = Study(sweep, groups[0]) if sweep.spec.optimize else None  # asks, trains and tells
        self.executor = executor or self.study or LocalExecutor(snapshots)
        self.interrupts = interrupts or Interrupts()
        self.runs: SweepRuns | None = None
        if options.tracking:
            from jaxmlp.tracking import TrackerProcess

            self.runs = SweepRuns(sweep, groups, tracker or TrackerProcess.for_sweep(options.tracking_uri),
                                  resume=options.resume, register=options.register)
            if hasattr(self.runs.tracker, "write_line"):  # the tracking process's stderr
                self.runs.tracker.write_line = LOG.warning
        self.records: list[VariantRecord] = []
        self.failures: list[str] = []
        self.closed: set[str] = set()  # keys of the variants whose run has ended
        self.best: dict[str, BestVariant] = {}  # per setting label
        self.datasets: dict[str, Dataset] = {}
        self.compile_seconds = 0.0
        self.plot_errors: list[str] = []
        self.open_per_setting: collections.Counter = collections.Counter()  # variants left to train, per setting
        self._figures_prepared = False
        self.bars: ProgressBars | None = None
        self.snapshot_keys: dict[str, str] = {}  # per group id, where the executor keeps snapshots
        self.slot_epochs = 0
        self.variant_epochs = 0
        self.notices: list[str] = []
        self.histories: dict[str, dict[str, np.ndarray]] = {}  # per variant key: `epoch_columns` of its epochs

    def notice(self, line: str) -> None:
        """Something the user should know: kept for the outcome and logged (`LOG`)."""
        self.notices.append(line)
        LOG.warning(line)

    @property
    def tracker(self):
        """The tracker the sweep logs to (None without tracking)."""
        return self.runs.tracker if self.runs else None

    def _dataset(self, cfg: DataConfig) -> Dataset:
        key = dataset_key(cfg)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(cfg)
        return self.datasets[key]

    def _resumed(self, records: list[VariantRecord]) -> set[str]:
        """Take over the records of variants finished by an earlier invocation; return their keys."""
        by_key = {v.key: v for v in self.sweep.variants}
        for record in records:
            v = by_key[record.variant_key]
            if record.diverged:
                self.failures.append(self._diverged(v, record.stopped_epoch))
            self.closed.add(v.key)
            consider(self.best, BestVariant(selection_score(v, record), v))
            self.records.append(record)
        return {r.variant_key for r in records}

    def _program(self, chunks: list[Group]) -> Program | None:
        """The task of one compiled program (groups of one layout), None when it has nothing to
        train: its chunks train one after another, or, under an adaptive search, together epoch
        by epoch. A chunk keeps its shape on resume: variants finished earlier ride along frozen
        (a search retrains them all, its decisions need every variant, and logs only those not
        finished), so every variant's numbers are those of an uninterrupted run."""
        search = self.sweep.search
        todo = [[v for v in g.variants if v.key not in self.closed] for g in chunks]
        if not any(todo):
            return None
        if search is None:  # (a search ranks every chunk, finished or not)
            chunks, todo = zip(*[(g, t) for g, t in zip(chunks, todo) if t])
        labels = {label: n for n, label in enumerate(dict.fromkeys(v.label for v in self.sweep.variants))}
        task = ProgramTask(
            chunks=tuple(tuple(v.config for v in g.variants) for g in chunks),
            frozen=tuple(tuple(bool(search is None and v.key in self.closed) for v in g.variants) for g in chunks),
            layout=chunks[0].layout, devices=chunks[0].devices, search=search,
            settings=tuple(np.asarray([labels[v.label] for v in g.variants]) for g in chunks),
            populations=tuple(np.asarray([hash(structure_key(v.config)) for v in g.variants]) for g in chunks),
            snapshot_keys=tuple(self.snapshot_keys[g.id] for g in chunks) if self.snapshot_keys else ())
        return Program(list(chunks), list(todo), task)

    def _snapshots(self) -> None:
        """Name each chunk's snapshot (store and sweep name, then parent run, sweep file, the
        chunk's variants and layout) and remove the sweep's older ones; nothing where the
        executor keeps no snapshots."""
        snapshots = getattr(self.executor, "snapshots", None)
        if snapshots is None or self.runs is None:
            return
        sweep = Snapshots.digest(self.runs.tracker.tracking_uri or "", self.sweep.spec.name)
        parent = (self.runs.parent_run_id or "", self.sweep.hash)
        self.snapshot_keys = {
            g.id: f"{sweep}-{Snapshots.digest(*parent, g.id, g.layout.fingerprint, *(v.key for v in g.variants))}"
            for g in self.groups}
        snapshots.prune(sweep, set(self.snapshot_keys.values()))

    def _train_program(self, program: Program, bars: ProgressBars) -> None:
        """Train one program on the executor, logging each variant as it ends; a failing program
        fails its groups' unfinished variants and nothing else."""
        search, chunks, todo, task = self.sweep.search, program.chunks, program.todo, program.task
        compile_seconds = [0.0] * len(chunks)
        epochs: list[list[dict]] = [[] for _ in chunks]
        resumed: dict[int, int] = {}
        shown, events = 0, None
        try:
            data = self._dataset(chunks[0].layout.families[0][0].data)  # (the template of its first family)
            meta = checkpoint_meta(data)
            events = self.executor.run(task, data)
            for kind, k, payload in events:
                if kind == "compiled":
                    compile_seconds[k] = payload
                    self.compile_seconds += payload
                    self._prepare_figures()
                elif kind == "resumed":
                    resumed[k] = payload
                    self.notice(f"{chunks[k].id}: goes on from its snapshot after epoch {payload}")
                elif kind == "notice":
                    self.notice(f"{chunks[k].id}: {payload}")
                elif kind == "epoch":
                    if not epochs[k] and (search is None or k == 0):
                        queued = chunks[k].queued
                        bars.start_group(chunks[k], sum(map(len, todo if search and not queued else [todo[k]])),
                                         None if queued else chunks[k].config.training.epochs,
                                         initial=resumed.get(k, 0), slots=chunks[k].layout.n_slots)
                    if search is None or payload["epoch"] > shown or chunks[k].queued:
                        shown = payload["epoch"]
                        bars.epoch(payload)
                    epochs[k].append(payload)
                    self.slot_epochs += int(payload["slot_epochs"])
                    self.variant_epochs += int(payload["trained"][~np.asarray(task.frozen[k], bool)].sum())
                    for i in payload["started"]:  # a run starts when its variant enters a slot
                        self._start_run(chunks[k], i)
                    for i, r in payload["finished"].items():  # variants that stopped: logged while the others train
                        self._end_variant(chunks[k], i, r, meta, compile_seconds[k])
                elif kind == "stopped":  # pruned by an optimised sweep's search, ended before the study is told
                    for i, r in payload.items():
                        self._end_variant(chunks[k], i, r, meta, compile_seconds[k])
                elif kind == "asked":  # an optimised sweep's proposal joined the program
                    self._asked(chunks[k], *payload)
                elif kind == "told":
                    if self.runs:
                        self.runs.log_told(*payload)
                else:
                    for i, r in zip(payload[0], payload[1].variants):
                        self._end_variant(chunks[k], i, r, meta, compile_seconds[k])
                    if self.runs:
                        self.runs.log_epoch_seconds(chunks[k], epochs[k])
                    if search is None:
                        bars.end_group()
                if self.runs:
                    self.runs.heartbeat()
                self.interrupts.check()  # after every event: compiled, an epoch, a chunk's end
        except Exception as err:  # noqa: BLE001 - a failing program must not stop the sweep
            self.executor.discard(task)  # (its chunks may be training on a cluster, unread)
            for g in chunks:
                self._fail_group(g, [v for v in g.variants if v.key not in self.closed],
                                 f"group {g.id} failed: {type(err).__name__}: {err}")
        finally:
            if hasattr(events, "close"):  # now, not when collected: a chunk keeps its snapshot
                events.close()
            if self.runs:
                for g in chunks:
                    self.runs.log_histories(g)
        bars.end_group()

    def _start_run(self, group: Group, i: int, trial: tuple[int, str] | None = None) -> None:
        """Start the run of the group's variant `i` (once; not for a variant an earlier invocation
        finished); `trial`: an optimised setting's number and proposal, kept on the run."""
        v = group.variants[i]
        if self.runs and v.key not in self.closed and v.key not in self.runs.run_ids:
            self.runs.start_child(v, group, trial)

    def _asked(self, group: Group, indices: list[int], trial: tuple[int, str]) -> None:
        """Variants of an optimised setting joined the program: they count as open, and their runs start now."""
        for i in indices:
            self.open_per_setting[group.variants[i].label] += 1
            self._start_run(group, i, trial)
        if self.bars is not None:
            self.bars.sweep.total += len(indices)

    def _fail_group(self, group: Group, todo: list[Variant], reason: str) -> None:
        """Record the group's variants that had not ended as FAILED, and end their runs (started
        now where their variant never entered a slot)."""
        self.failures.append(reason)
        for i, v in enumerate(group.variants):
            if v.key in self.closed or v not in todo:
                continue
            self.records.append(VariantRecord(setting=dict(v.setting), seed=v.seed, status="FAILED",
                                              variant_key=v.key, index=v.index, config=v.config.flat()))
            if self.runs:
                self._start_run(group, i)
                self.runs.end_unfinished(v.key, "FAILED", reason)
            self._close(v)

    def _end_variant(self, group: Group, i: int, r: VariantResult, meta: dict, compile_seconds: float) -> None:
        """Record the group's trained variant `i` and submit the end of its run (unless it ended
        already, or an earlier invocation finished it); once a setting has no variant left to
        train, its best variant's model is logged too."""
        v = group.variants[i]
        if v.key in self.closed:
            return
        r.lineage = [{"epoch": step["epoch"], "source": group.variants[step["source"]].index} for step in r.lineage]
        self._start_run(group, i)
        if r.diverged:
            self.failures.append(self._diverged(v, r.stopped_epoch))
        record = r.record(dict(v.setting), variant_key=v.key, index=v.index, compile_seconds=compile_seconds)
        self.records.append(record)
        self.histories[v.key] = epoch_columns(r.history)
        consider(self.best, BestVariant(selection_score(v, record), v, r, meta))
        if self.runs:
            self.runs.end_child(v, group, record, r, meta)
        self._close(v)

    @staticmethod
    def _diverged(v: Variant, epoch: int | None) -> str:
        return (f"{v.run_name}: diverged (loss NaN, infinite or above training.divergence_factor x its initial "
                f"loss) in epoch {epoch}")

    def _close(self, v: Variant) -> None:
        self.closed.add(v.key)
        if self.bars is not None:
            self.bars.variant_done()
        self.open_per_setting[v.label] -= 1
        if self.runs and not self.open_per_setting[v.label] and v.label in self.best:
            self.runs.log_setting_model(self.best[v.label])

    def _open(self) -> Opened | None:
        """Open the parent run and wait for it (bounded): the store's probe before any training."""
        if self.runs is None:
            return None
        from jaxmlp.tracking import unsupported_scheme, unwritable_sqlite

        uri = self.runs.tracker.tracking_uri
        reason = unsupported_scheme(uri) or unwritable_sqlite(uri)
        if reason:
            self.runs.abandon()
            raise StoreUnavailable(uri, reason)
        future = self.runs.open()
        try:
            for _ in range(int(OPEN_TIMEOUT / 0.2)):  # in slices: a signal is honoured during the probe
                self.interrupts.check()
                if concurrent.futures.wait([future], timeout=0.2).done:
                    break
            opened = future.result(timeout=0)
        except KeyboardInterrupt:
            self._end_interrupted_open(future)
            raise
        except ResumeRefused:
            self.runs.close()
            raise
        except concurrent.futures.TimeoutError:
            self.runs.abandon()
            raise StoreUnavailable(uri, f"no answer within {OPEN_TIMEOUT:.0f} s") from None
        except Exception as err:  # noqa: BLE001 - whatever the store raised, said with the fix
            self.runs.abandon()
            raise StoreUnavailable(uri, f"{type(err).__name__}: {err}") from err
        for notice in opened.notices:
            self.notice(notice)
        return opened

    def _end_interrupted_open(self, future: concurrent.futures.Future) -> None:
        """A signal while the parent run opens. A store that answers within
        `INTERRUPTED_OPEN_GRACE` finishes opening, and the parent it wrote (or reopened) is marked
        KILLED as after any interruption: left RUNNING, it would pass for a live sweep's until
        its lease ran out. A store that does not answer is abandoned at once, as on a second signal."""
        try:
            answered = concurrent.futures.wait([future], timeout=INTERRUPTED_OPEN_GRACE).done
        except KeyboardInterrupt:  # asked twice: now
            answered = set()
        if not answered:
            self.runs.abandon()
        elif future.exception() is None and not future.result().complete:
            self.runs.kill({r.variant_key for r in future.result().done})  # (a resume's finished runs stay)
        else:  # refused (another sweep's parent: not ours to end) or nothing to do
            self.runs.close()

    def run(self) -> Outcome:
        start = time.perf_counter()
        opened = self._open()
        if self.study is not None and opened is not None:
            self.study.restore(opened.trials, opened.done)  # (the sweep then knows the variants proposed so far)
        done = self._resumed(opened.done) if opened is not None else set()
        if opened is not None and opened.complete:  # a finished sweep resumed: nothing to train, nothing logged
            errors = self.runs.close()
            return Outcome(self.records, report.summarize(self.records), self.failures,
                           time.perf_counter() - start, 0.0, self.runs.experiment_id, self.runs.parent_run_id,
                           errors, notices=self.notices)
        self._snapshots()
        todo = [[v for v in g.variants if v.key not in done] for g in self.groups]
        self.open_per_setting = collections.Counter(v.label for variants in todo for v in variants)
        bars = self.bars = ProgressBars(sum(map(len, todo)), self.options.progress)
        self.interrupts.install()
        try:
            programs = [self._program([g for g in self.groups if g.program == p])
                        for p in dict.fromkeys(g.program for g in self.groups)] if self.study is None else \
                [Program(self.groups, [[None] * self.groups[0].layout.n_slots], self.study)]  # (the bar counts slots)
            programs = [p for p in programs if p is not None]
            self.executor.submit([p.task for p in programs])  # a cluster trains them at once
            for program in programs:
                self.interrupts.check()
                self._train_program(program, bars)
            self.interrupts.check()
            bars.close()
            rows = report.summarize(self.records)
            if self.runs:
                if self.best:
                    self.runs.log_models(self.best)
                self.runs.close_parent(self.records, rows, self._figures(rows), self.failures)
        except KeyboardInterrupt:
            bars.close()
            if self.runs:
                self.runs.kill(self.closed)
            raise
        finally:
            self.interrupts.restore()
            self.executor.close()
        errors = (self.runs.close() if self.runs else []) + self.plot_errors
        ids = (self.runs.experiment_id, self.runs.parent_run_id) if self.runs else (None, None)
        return Outcome(self.records, rows, self.failures, time.perf_counter() - start, self.compile_seconds,
                       *ids, errors, self.slot_epochs, self.variant_epochs, self.notices, self.histories)

    def _prepare_figures(self) -> None:
        """Start matplotlib in a thread while the first group trains (after its compilation,
        which needs the GIL): the figures drawn at the end then cost about 0.15 s, not 0.6 s."""
        if self.runs and not self._figures_prepared:
            self._figures_prepared = True
            threading.Thread(target=_quietly, args=(report.prepare_figures,), name="jaxmlp-figures",
                             daemon=True).start()

    def _figures(self, rows: list[dict[str, Any]]) -> dict[str, bytes]:
        """The sweep's plots, drawn here while the tracking process logs the models; a plot
        that fails is reported with the tracking errors and costs the parent nothing else."""
        try:
            return report.sweep_figures(self.records, rows)
        except Exception as err:  # noqa: BLE001
            self.plot_errors.append(f"the sweep's plots could not be drawn: {type(err).__name__}: {err}")
            return {}


def epoch_columns(history: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """A variant's per-epoch records as one float64 array per metric (NaN where an epoch lacks
    it): the sweep keeps every variant's, so its result's histories need no store, compactly
    (a sweep of thousands of variants would hold a dict per epoch of each)."""
    names = dict.fromkeys(name for row in history for name in row)
    return {name: np.asarray([row.get(name, np.nan) for row in history], np.float64) for name in names}


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - a preparation only; the real call reports its errors
        pass
