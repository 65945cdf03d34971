"""Running a sweep: groups train one after another while one writer logs what has ended.

The engine trains; this module turns its results into MLflow runs through `Tracker`
calls submitted to an `AsyncWriter`, so logging overlaps training: a variant's run ends
in the epoch it stops, a setting's model is logged once its last variant ended. The calls
themselves run in a `TrackerProcess`: the writer's thread only waits on a pipe, so MLflow
never holds this process's GIL while it drives the training loop.
A failing group or a diverged variant never stops the others. Ctrl-C and SIGTERM mark
unfinished runs KILLED; `resume` skips variants already FINISHED (or
diverged, which is deterministic) under the sweep's newest parent run.
"""
from __future__ import annotations

import collections
import json
import math
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxmlp import report
from jaxmlp.checkpoint import checkpoint_files, checkpoint_meta, save_checkpoint
from jaxmlp.config import DataConfig
from jaxmlp.data import Dataset, load_dataset
from jaxmlp.models import count_params
from jaxmlp.sweep.plan import Group
from jaxmlp.sweep.spec import Sweep, Variant
from jaxmlp.tracking import DIVERGED_TAG, GROUP_TAG, SETTING_TAG
from jaxmlp.trainer import Trainer, VariantResult


class ResumeRefused(RuntimeError):
    """--resume found a parent run of a different sweep file content."""


@dataclass
class Options:
    tracking: bool = True
    tracking_uri: str | None = None
    resume: bool = False
    register: str | None = None
    progress: bool = True


@dataclass
class Outcome:
    records: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    failures: list[str]
    seconds: float
    compile_seconds: float = 0.0
    experiment_id: str | None = None
    parent_run_id: str | None = None
    tracking_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.tracking_errors


def _versions() -> dict[str, str]:
    import flax
    import jax
    import optax

    return {"jax_version": jax.__version__, "flax_version": flax.__version__,
            "optax_version": optax.__version__, "devices": ", ".join(str(d) for d in jax.devices()),
            "python_version": platform.python_version()}


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def variant_record(v: Variant, result: VariantResult | None, status: str, **extra: Any) -> dict[str, Any]:
    """The flat per-variant record that summaries and plots are built from."""
    record = {"setting": v.label, "seed": v.seed, "variant_key": v.key, "status": status, **extra}
    if result is not None:
        record.update(diverged=result.diverged, best_epoch=result.best_epoch, stopped_epoch=result.stopped_epoch,
                      n_params=count_params(result.params),
                      **{f"test_{k}": val for k, val in result.test.items()},
                      **{f"final_train_{k}": val for k, val in result.train_final.items()},
                      **{f"best_{k}": result.best.get(k) for k in ("val_loss", "val_accuracy")})
    return record


def _child_history(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """A variant's per-epoch metrics for its run; the epoch's wall time belongs to the group
    (every variant in it shares it) and goes on the parent run once."""
    return [{k: val for k, val in row.items() if k != "epoch_seconds"} for row in history]


def _selection_score(v: Variant, best: dict[str, float], diverged: bool) -> float:
    """Lower is better: the monitored validation metric at the best epoch (`best`: that epoch's record)."""
    monitor = v.config.training.early_stopping.monitor
    value = best.get(monitor, math.nan)
    score = value if monitor == "val_loss" else -value
    return score if math.isfinite(score) and not diverged else math.inf


class SweepRunner:
    """`tracker`: a `Tracker` or `TrackerProcess` (default: `TrackerProcess.for_sweep`); the runner closes it."""

    def __init__(self, sweep: Sweep, groups: list[Group], options: Options, tracker=None):
        self.sweep, self.groups, self.options = sweep, groups, options
        self.tracker = self.writer = None
        if options.tracking:
            from jaxmlp.tracking import AsyncWriter, TrackerProcess

            self.tracker = tracker or TrackerProcess.for_sweep(options.tracking_uri)
            self.writer = AsyncWriter()
        self.records: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.child_runs: dict[str, Future] = {}
        self.closed: set[str] = set()
        # per setting: score, variant, and its result and data (None: finished by an earlier invocation)
        self.best: dict[str, tuple[float, Variant, VariantResult | None, Dataset | None]] = {}
        self.datasets: dict[str, Dataset] = {}
        self.compile_seconds = 0.0
        self.experiment_id = self.parent_run_id = None
        self._signals: list[int] = []  # Ctrl-C / SIGTERM received (see _on_signal)
        self.plot_errors: list[str] = []
        self.open_per_setting: collections.Counter = collections.Counter()  # variants left to train, per setting
        self.model_uris: dict[str, str] = {}  # per setting, its best variant's logged model (writer thread)
        self._figures_prepared = False

    # -- tracking jobs (they run in the writer's thread, in submission order) --
    def _submit(self, fn, *args) -> Future | None:
        return self.writer.submit(fn, *args) if self.writer else None

    def _open_parent(self) -> set[str]:
        """Experiment and parent run; on resume, the keys of variants that need no training."""
        from jaxmlp.tracking import SWEEP_HASH_TAG, SWEEP_NAME_TAG

        t, spec = self.tracker, self.sweep.spec
        self.experiment_id = t.experiment(spec.name, {})
        found = t.find_parent(self.experiment_id, spec.name) if self.options.resume else None
        if found is None:
            t.experiment(spec.name, {"mlflow.note.content": spec.description.strip()})
            tags = {SWEEP_NAME_TAG: spec.name, SWEEP_HASH_TAG: self.sweep.hash, "jaxmlp.sweep_file": str(self.sweep.path),
                    "mlflow.note.content": spec.description.strip(), **_versions()}
            commit = _git_commit(self.sweep.path.resolve().parent)
            if commit:
                tags["mlflow.source.git.commit"] = commit
            params = {"sweep": spec.name, "n_variants": len(self.sweep.variants), "n_programs": len(self.groups)}
            self.parent_run_id = t.start_parent(self.experiment_id, f"{spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                                tags, params)
            t.log_file(self.parent_run_id, self.sweep.path)
            return set()
        self.parent_run_id, tags = found
        if tags.get(SWEEP_HASH_TAG) != self.sweep.hash:
            raise ResumeRefused(
                f"{self.sweep.path}: its content changed since parent run {self.parent_run_id} was started "
                f"(sweep hash {tags.get(SWEEP_HASH_TAG)} then, {self.sweep.hash} now); a resume would mix "
                "two different sweeps. Restore the file, or run without --resume to start a new parent run.")
        children = t.children(self.parent_run_id)
        t.mark_killed([c["run_id"] for c in children if c["status"] == "RUNNING"])
        t.reopen(self.parent_run_id)
        done = set()
        by_key = {v.key: v for v in self.sweep.variants}
        for c in children:
            record = report.record_from_run(c)
            key, diverged = record["variant_key"], record["diverged"]
            if key in by_key and (c["status"] == "FINISHED" or (c["status"] == "FAILED" and diverged)):
                done.add(key)
                self.child_runs[key] = Future()
                self.child_runs[key].set_result(c["run_id"])
                self.closed.add(key)
                best = {k: record.get(f"best_{k}", math.nan) for k in ("val_loss", "val_accuracy")}
                self._consider_for_best(by_key[key], _selection_score(by_key[key], best, diverged))
                self.records.append(record)
        return done

    def _start_child(self, v: Variant, group: Group) -> str:
        params = {**v.config.flat(), "variant_key": v.key, "group": group.id}
        tags = {SETTING_TAG: v.label, GROUP_TAG: group.id, "seed": str(v.seed)}
        return self.tracker.start_child(self.experiment_id, self.parent_run_id, v.run_name, v.key, params, tags)

    def _log_child(self, run_id: Future, v: Variant, r: VariantResult, meta: dict, seconds: dict) -> None:
        final = {f"test_{k}": val for k, val in r.test.items()}
        final.update({f"final_train_{k}": val for k, val in r.train_final.items()})
        final.update({f"best_{k}": r.best[k] for k in ("val_loss", "val_accuracy") if k in r.best},
                     best_epoch=r.best_epoch, stopped_epoch=r.stopped_epoch, diverged=float(r.diverged),
                     n_params=count_params(r.params), **seconds)
        reason = f"diverged: loss became NaN or infinite in epoch {r.stopped_epoch}" if r.diverged else None
        self.tracker.finish(run_id.result(), "FAILED" if r.diverged else "FINISHED", reason,
                            history=_child_history(r.history),
                            metrics=final, step=r.best_epoch, tags={DIVERGED_TAG: str(r.diverged).lower()},
                            files=checkpoint_files(v.config, r.params, meta), artifact_path="checkpoint")

    def _checkpoint(self, best: tuple, tmp: str) -> Path:
        """A folder with the checkpoint of a setting's best variant (`best`: an entry of
        `self.best`): written from its result, or downloaded from its run after a resume."""
        score, v, r, data = best
        if r is None:
            return Path(self.tracker.download(self.child_runs[v.key].result(), "checkpoint", tmp))
        folder = Path(tmp, "checkpoint")
        save_checkpoint(folder, v.config, r.params, checkpoint_meta(data))
        return folder

    def _log_setting_model(self, label: str, best: tuple) -> None:
        """The pyfunc model of a setting's best variant, on its run (kept if a resumed run has one)."""
        run_id = self.child_runs[best[1].key].result()
        logged = self.tracker.model_uris(run_id) if best[2] is None else []
        if not logged:
            with tempfile.TemporaryDirectory() as tmp:
                logged = [self.tracker.log_model(run_id, self._checkpoint(best, tmp))]
        self.model_uris[label] = logged[0]

    def _log_models(self, best: dict[str, tuple]) -> None:
        """Models of the settings not logged yet, and the sweep's best on the parent."""
        t = self.tracker
        for label, entry in best.items():
            if label not in self.model_uris:
                self._log_setting_model(label, entry)
        overall = min(best.values(), key=lambda item: item[0], default=None)
        if overall is None:
            return
        v, run_id = overall[1], self.child_runs[overall[1].key].result()
        with tempfile.TemporaryDirectory() as tmp:
            t.log_model(self.parent_run_id, self._checkpoint(overall, tmp), "best_model")
        uri = self.model_uris[v.label]
        t.set_tags(self.parent_run_id, {"jaxmlp.best_run_id": run_id, "jaxmlp.best_setting": v.label,
                                        "jaxmlp.best_model_uri": uri})
        if self.options.register:
            version = t.register_model(uri, self.options.register)
            t.set_tags(self.parent_run_id, {"jaxmlp.registered_model": f"{self.options.register} v{version.version}"})

    def _close_parent(self, rows: list[dict[str, Any]], figures: dict[str, bytes], status: str,
                      reason: str | None) -> None:
        """Summary, plots and metrics on the parent, then end it; it never stays RUNNING."""
        t, pid = self.tracker, self.parent_run_id
        try:
            files, metrics, tags = report.sweep_summary(self.records, rows, len(self.failures))
            t.log_folder(pid, files, "summary")
            t.log_folder(pid, figures, "plots")
        except Exception as err:
            why = f"the sweep summary could not be logged: {type(err).__name__}: {err}"
            t.finish(pid, "FAILED", "; ".join(filter(None, [reason, why]))[:5000])
            raise
        t.finish(pid, status, reason, metrics=metrics, tags=tags)

    def _consider_for_best(self, v: Variant, score: float, result: VariantResult | None = None,
                           data: Dataset | None = None) -> None:
        if score < self.best.get(v.label, (math.inf,))[0]:
            self.best[v.label] = (score, v, result, data)

    # -- the main thread --
    def _dataset(self, cfg: DataConfig) -> Dataset:
        key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(cfg).on_device()
        return self.datasets[key]

    def _train_group(self, group: Group, todo: list[Variant], bars) -> None:
        for v in todo:
            self.child_runs[v.key] = self._submit(self._start_child, v, group)
        try:
            data = self._dataset(todo[0].config.data)
            trainer = Trainer([v.config for v in todo], data, devices=group.devices)
            self.compile_seconds += trainer.compile()
            self._prepare_figures()
            bars.start_group(group, len(todo), trainer.epochs)
            records = []
            meta = checkpoint_meta(data)
            for record in trainer.run():
                bars.epoch(record)
                records.append(record)
                for i, r in record["finished"].items():  # variants that stopped: logged while the others train
                    self._end_variant(todo[i], r, data, meta, trainer.compile_seconds)
                self._check_signals()
            result = trainer.result
        except Exception as err:  # noqa: BLE001 - a failing group must not stop the sweep
            reason = f"group {group.id} failed: {type(err).__name__}: {err}"
            self.failures.append(reason)
            for v in todo:
                if v.key in self.closed:
                    continue
                self.records.append(variant_record(v, None, "FAILED"))
                if self.writer:
                    self._submit(lambda fut, why=reason: self.tracker.finish(fut.result(), "FAILED", why),
                                 self.child_runs[v.key])
                self._close(v)
            bars.end_group(len(todo))
            return
        if self.writer:
            group_seconds = [{"epoch": r["epoch"], f"epoch_seconds_{group.id}": r["epoch_seconds"]} for r in records]
            self._submit(lambda: self.tracker.log_history(self.parent_run_id, group_seconds))
        for v, r in zip(todo, result.variants):
            if v.key not in self.closed:
                self._end_variant(v, r, data, meta, result.compile_seconds)
        bars.end_group(len(todo))

    def _end_variant(self, v: Variant, r: VariantResult, data: Dataset, meta: dict, compile_seconds: float) -> None:
        """Record a trained variant and submit the end of its run; once a setting has no
        variant left to train, its best variant's model is logged too."""
        status = "FAILED" if r.diverged else "FINISHED"
        if r.diverged:
            self.failures.append(f"{v.run_name}: diverged (NaN/inf loss) in epoch {r.stopped_epoch}")
        seconds = {"compile_seconds": compile_seconds, "train_seconds": r.train_seconds}
        self.records.append(variant_record(v, r, status, **seconds))
        self._consider_for_best(v, _selection_score(v, r.best, r.diverged), r, data)
        if self.writer:
            self._submit(self._log_child, self.child_runs[v.key], v, r, meta, seconds)
        self._close(v)

    def _close(self, v: Variant) -> None:
        self.closed.add(v.key)
        self.open_per_setting[v.label] -= 1
        if self.writer and not self.open_per_setting[v.label] and v.label in self.best:
            self._submit(self._log_setting_model, v.label, self.best[v.label])

    def run(self) -> Outcome:
        start = time.perf_counter()
        opened = self._submit(self._open_parent)
        done: set[str] = set()
        if opened is not None and self.options.resume:
            done = opened.result()  # resume must know what is finished before planning work
        todo = [[v for v in g.variants if v.key not in done] for g in self.groups]
        self.open_per_setting = collections.Counter(v.label for variants in todo for v in variants)
        bars = _Bars(sum(map(len, todo)), self.options.progress)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for group, variants in zip(self.groups, todo):
                self._check_signals()
                if variants:
                    self._train_group(group, variants, bars)
            self._check_signals()
            bars.close()
            rows = report.summarize(self.records)
            if self.writer:
                opened.result()
                if self.best:
                    self._submit(self._log_models, dict(self.best))
                status = "FAILED" if self.failures else "FINISHED"
                self._submit(self._close_parent, rows, self._figures(rows), status,
                             "; ".join(self.failures)[:5000] or None)
        except KeyboardInterrupt:
            bars.close()
            self._kill_unfinished()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        errors = [f"{type(e).__name__}: {e}" for e in self.writer.close(raise_errors=False)] if self.writer else []
        errors += self.plot_errors
        self._close_tracker()
        return Outcome(self.records, rows, self.failures, time.perf_counter() - start, self.compile_seconds,
                       self.experiment_id, self.parent_run_id, errors)

    def _prepare_figures(self) -> None:
        """Start matplotlib in a thread while the first group trains (after its compilation,
        which needs the GIL): the figures drawn at the end then cost about 0.15 s, not 0.6 s."""
        if self.writer and not self._figures_prepared:
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

    def _on_signal(self, signum, frame) -> None:
        """Ctrl-C or SIGTERM: raise KeyboardInterrupt, and remember the signal. Raised inside a
        garbage-collector callback (JAX registers one), the exception is swallowed; then the
        next `_check_signals` (every epoch) raises it again."""
        self._signals.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    def _check_signals(self) -> None:
        if self._signals:
            raise KeyboardInterrupt(f"signal {self._signals[0]}")

    def _kill_unfinished(self) -> None:
        if not self.writer:
            return
        for key, fut in self.child_runs.items():
            if key not in self.closed:
                self._submit(lambda f: self.tracker.finish(f.result(), "KILLED", "interrupted"), fut)
        self._submit(lambda: self.parent_run_id and self.tracker.finish(self.parent_run_id, "KILLED", "interrupted"))
        self.writer.close(raise_errors=False)
        self._close_tracker()

    def _close_tracker(self) -> None:
        if hasattr(self.tracker, "close"):
            self.tracker.close()


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - a preparation only; the real call reports its errors
        pass


class _Bars:
    """One progress bar for the sweep (variants) and one for the current group (epochs)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.enabled = enabled
        self.sweep = tqdm(total=total, desc="sweep", unit="variant", position=0, file=sys.stderr,
                          disable=not enabled or None, dynamic_ncols=True)
        self.group = None

    def start_group(self, group: Group, n: int, epochs: int) -> None:
        self.n = n
        self.group = self._tqdm(total=epochs, desc=f"{group.id} ({n} variants)", unit="ep", position=1,
                                leave=False, file=sys.stderr, disable=not self.enabled or None, dynamic_ncols=True)

    def epoch(self, record: dict) -> None:
        best = record["val_loss"][record["trained"]]
        self.group.set_postfix(active=f"{int(record['active'].sum())}/{self.n}",
                               best_val_loss=f"{best.min():.4f}" if best.size else "-")
        self.group.update()

    def end_group(self, n: int) -> None:
        if self.group is not None:
            self.group.close()
        self.sweep.update(n)

    def close(self) -> None:
        self.sweep.close()
