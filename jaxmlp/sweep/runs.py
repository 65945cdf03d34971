"""A sweep's runs in MLflow, the protocol the runner follows: one experiment per sweep name;
one parent run per invocation (with --resume, the sweep's newest, reopened); one child run
per variant, started when its group starts and ended in the epoch it stops; a setting's
model once its last variant ended; the sweep's best model, summary and plots on the parent,
which never stays RUNNING. The parent has one owner at a time (`ownership`): a resume of a
parent that a live process runs is refused; a fresh run marks parents left RUNNING by a
dead process KILLED. `register` names the registered model of the sweep's best and,
after an '@', the alias its new version gets ("digits-mlp@champion"; default alias champion).

Each method submits its tracking calls to one `AsyncWriter` thread and returns at once, so
logging overlaps training; the calls run in submission order. The tracker is usually a
`TrackerProcess`, so the writer's thread only waits on a pipe.
"""
from __future__ import annotations

import dataclasses
import platform
import subprocess
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from jaxmlp import report
from jaxmlp.checkpoint import checkpoint_files, save_checkpoint
from jaxmlp.engine import VariantResult
from jaxmlp.records import VariantRecord
from jaxmlp.sweep.best import BestVariant, overall_best
from jaxmlp.sweep.optimize_run import proposal_of_tag
from jaxmlp.sweep.ownership import HEARTBEAT_SECONDS, Lease, ResumeRefused, claim, kill_abandoned, refuse_if_held
from jaxmlp.sweep.plan import Group
from jaxmlp.sweep.spec import Sweep, Variant, n_variants
from jaxmlp.tracking import AsyncWriter
from jaxmlp.tracking.spool import Spool, default_spool_folder, replay_command


#: The registry alias a registered best model gets unless `register` names another.
DEFAULT_ALIAS = "champion"
#: A description longer than this is cut in the run's note (MLflow limits tags to 8,000
#: characters and an experiment's to 20,000); the whole text is the parent's artifact.
NOTE_LIMIT = 4000
DESCRIPTION_ARTIFACT = "sweep/description.md"
#: After this many tracking calls in a row failed, the store is taken to be down: the calls
#: still queued are not tried (each could wait out its retries), their results are spooled.
FAILURES_BEFORE_DOWN = 3


class StoreDown(RuntimeError):
    """A tracking call not tried: earlier calls found the store unusable."""


@dataclasses.dataclass
class Opened:
    """What opening the parent found: on resume, the records of the variants that need no
    training (FINISHED, or diverged, which is deterministic); `complete`: the parent already
    holds every variant and its summary, so nothing is logged; `notices` to print."""

    done: list[VariantRecord]
    notices: list[str]
    complete: bool = False
    trials: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # an optimised sweep's (`trial_tags`)


def _note(description: str) -> tuple[str, str | None]:
    """The note for the runs and experiment, and the whole description where the note had to be cut."""
    text = description.strip()
    if len(text) <= NOTE_LIMIT:
        return text, None
    tail = f" [... {len(text):,} characters in all; the whole description is the parent run's {DESCRIPTION_ARTIFACT}]"
    return text[:NOTE_LIMIT - len(tail)] + tail, text


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


def _registration(register: str) -> tuple[str, str]:
    """'digits-mlp@best' -> ('digits-mlp', 'best'); 'digits-mlp' -> ('digits-mlp', 'champion')."""
    name, at, alias = register.rpartition("@")
    return (name, alias) if at else (register, DEFAULT_ALIAS)


def _resolved(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class SweepRuns:
    """The runs of one sweep invocation. `tracker`: a `Tracker` or `TrackerProcess`; `close`
    and `kill` close it."""

    def __init__(self, sweep: Sweep, groups: list[Group], tracker, *, resume: bool, register: str | None):
        self.sweep, self.groups, self.tracker = sweep, groups, tracker
        self.resume, self.register = resume, register
        self.writer = AsyncWriter()
        self.run_ids: dict[str, Future] = {}  # variant key -> its child run's id
        self.model_uris: dict[str, str] = {}  # per setting, its best variant's logged model (writer thread)
        self.experiment_id = self.parent_run_id = None
        self.registered_uri: str | None = None  # models:/NAME@ALIAS once the best model is registered
        self.lease = Lease.mine()
        self._heartbeat_at = time.monotonic()
        self._failures_in_a_row = 0
        self.store_down: str | None = None  # the error that made the store count as down
        self.report_errors: list[str] = []  # tables or plots of the summary that could not be drawn
        spec = sweep.spec
        # Up to a size, every child's history is MLflow metrics; above it only each setting's
        # best's, and all of them go in Parquet per group (`log_histories`).
        self.n_variants = len(sweep.variants) or n_variants(spec)  # (an optimised sweep's: trials x seeds)
        self.metric_histories = self.n_variants <= spec.execution.metric_histories_up_to
        self._histories: dict[str, list] = {}  # group id -> (variant key, index, history) not yet written
        self.spool = Spool(default_spool_folder(spec.name), {
            "sweep_name": spec.name, "sweep_hash": sweep.hash, "sweep_file": str(sweep.path),
            "note": _note(spec.description)[0], "tracking_uri": tracker.tracking_uri,
            "params": {"sweep": spec.name, "n_variants": self.n_variants, "n_programs": len(groups)}})

    def _submit(self, fn, *args) -> Future:
        return self.writer.submit(self._guarded, fn, *args)

    def _guarded(self, fn, *args):
        """Run one tracking call (in the writer thread), unless the store counts as down."""
        if self.store_down is not None:
            raise StoreDown(self.store_down)
        try:
            result = fn(*args)
        except Exception as err:
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= FAILURES_BEFORE_DOWN:
                self.store_down = f"{type(err).__name__}: {err}"
            raise
        self._failures_in_a_row = 0
        return result

    def open(self) -> Future:
        """Experiment and parent run, written and read back (the store's probe before any
        training); the future's result: what was found (`Opened`)."""
        return self._submit(self._open_parent)

    def _changed(self, then: str) -> str:
        """Why a resume is refused: the sweep file's content or its data files changed."""
        now, files = self.sweep.hash, self.sweep.data_files
        what = (f"its data file {', '.join(files)} changed" if files and then.split("-")[0] == now.split("-")[0]
                else "its content changed")
        return (f"{self.sweep.path}: {what} since parent run {self.parent_run_id} was started (sweep hash {then} "
                f"then, {now} now); a resume would mix two different sweeps. Restore the "
                f"{'data' if 'data' in what else 'file'}, or run without --resume to start a new parent run.")

    def _open_parent(self) -> Opened:
        t, spec = self.tracker, self.sweep.spec
        self.experiment_id = t.experiment(spec.name)
        found = t.find_parent(self.experiment_id, spec.name) if self.resume else None
        if found is None:
            notices = kill_abandoned(t, self.experiment_id, spec.name)
            if self.resume:
                notices.insert(0, f"--resume: no earlier parent run of sweep {spec.name!r} in {t.tracking_uri}; "
                                  "a new one is started")
            note, whole = _note(spec.description)
            t.experiment(spec.name, note=note)
            git_commit, environment = _git_commit(self.sweep.path.resolve().parent), _versions()
            self.spool.note(git_commit=git_commit, environment=environment)
            self.parent_run_id = t.start_parent(
                self.experiment_id, f"{spec.name} {time.strftime('%Y-%m-%d %H:%M:%S')}", sweep_name=spec.name,
                sweep_hash=self.sweep.hash, sweep_file=str(self.sweep.path), note=note,
                git_commit=git_commit, environment=environment,
                params={"sweep": spec.name, "n_variants": self.n_variants, "n_programs": len(self.groups)},
                lease=self.lease.encode())
            t.log_file(self.parent_run_id, self.sweep.path)
            if whole is not None:
                folder, name = DESCRIPTION_ARTIFACT.rsplit("/", 1)
                t.log_folder(self.parent_run_id, {name: whole.encode()}, folder)
            self.spool.note(parent_run_id=self.parent_run_id)
            written = t.parent(self.parent_run_id)  # read back what was written
            if written is None or Lease.decode(written.lease) != self.lease:
                raise RuntimeError(f"the parent run {self.parent_run_id} just written reads back differently")
            return Opened([], notices)
        self.parent_run_id = found.run_id
        if found.sweep_hash != self.sweep.hash:
            raise ResumeRefused(self._changed(found.sweep_hash or ""))
        refuse_if_held(found, self.lease, self.sweep.path)
        self.spool.note(parent_run_id=self.parent_run_id)
        records = t.variant_records(self.parent_run_id)
        trials = t.trial_tags(self.parent_run_id) if self.sweep.spec.optimize else []
        proposed = [v for tags in trials for v in self.sweep.proposal_variants(proposal_of_tag(tags["proposal"])[0])]
        by_key = {v.key: v for v in [*self.sweep.variants, *proposed]}
        done = [dataclasses.replace(r, setting=dict(by_key[r.variant_key].setting)) for r in records
                if r.variant_key in by_key and (r.finished or (r.status == "FAILED" and r.diverged))]
        self.run_ids.update({r.variant_key: _resolved(r.run_id) for r in done})
        if found.summarized and found.status != "RUNNING" and {r.variant_key for r in done} >= set(by_key):
            return Opened(done, [f"nothing to do: parent run {found.run_id} already holds every variant of "
                                 f"{self.sweep.path} and its summary (status {found.status}); nothing was logged"],
                          complete=True)
        claim(t, found, self.lease, self.sweep.path)
        t.mark_killed([r.run_id for r in records if r.status == "RUNNING"])
        t.reopen(self.parent_run_id)
        return Opened(done, [], trials=trials)

    def heartbeat(self) -> None:
        """Renew the parent's lease, at most every `HEARTBEAT_SECONDS` (call it as often as convenient)."""
        if time.monotonic() - self._heartbeat_at < HEARTBEAT_SECONDS or self.parent_run_id is None:
            return
        self._heartbeat_at = time.monotonic()
        self.lease = self.lease.renewed()
        self._submit(self.tracker.set_lease, self.parent_run_id, self.lease.encode())

    def start_child(self, v: Variant, group: Group, trial: tuple[int, str] | None = None) -> None:
        """Start a variant's run (`trial`: an optimised setting's number and proposal JSON)."""
        self.run_ids[v.key] = self._submit(self._start_child, v, group, trial)

    def _start_child(self, v: Variant, group: Group, trial: tuple[int, str] | None) -> str:
        return self.tracker.start_child(self.experiment_id, self.parent_run_id, v.run_name, variant_key=v.key,
                                        index=v.index, setting=dict(v.setting), seed=v.seed, group=group.id,
                                        params=v.config.flat(), trial=trial)

    def log_told(self, keys: list[str], told: str, settings_told: int, best_so_far: float | None) -> None:
        """What the study was told of a trial (JSON), on its seeds' runs; the study's best so far on the parent."""
        spec = self.sweep.spec.optimize
        self._submit(lambda: self.tracker.tag_told([self.run_ids[k].result() for k in keys], told))
        self._submit(self.tracker.log_study, self.parent_run_id, spec.sampler, spec.seed, settings_told, best_so_far)

    def end_child(self, v: Variant, group: Group, record: VariantRecord, result: VariantResult,
                  meta: dict) -> None:
        """End a trained variant's run: history, final metrics, checkpoint, status; spooled
        where the store fails."""
        self.writer.submit(self._finish_or_spool, v, group, record, result, meta)

    def _finish_or_spool(self, v: Variant, group: Group, record: VariantRecord, result: VariantResult,
                         meta: dict) -> None:
        reason = (f"diverged: loss NaN, infinite or above training.divergence_factor x its initial loss in epoch "
                  f"{record.stopped_epoch}" if record.diverged
                  else None)
        files = checkpoint_files(v.config, result.params, meta)
        if not self.metric_histories:
            self._histories.setdefault(group.id, []).append((v.key, v.index, result.history))
        try:
            self._guarded(lambda: self.tracker.finish_child(
                self.run_ids[v.key].result(), record, history=result.history if self.metric_histories else [],
                files=files, reason=reason, data=v.config.data))
        except Exception:
            self.spool.child(run_id=self._run_id(v.key), run_name=v.run_name, group=group.id,
                             record=dataclasses.replace(record, config=v.config.flat()), history=result.history,
                             files=files, reason=reason)
            raise

    def _run_id(self, key: str) -> str | None:
        """The child run's id where it was created."""
        future = self.run_ids.get(key)
        try:
            return future.result() if future is not None else None
        except Exception:  # noqa: BLE001 - its creation failed
            return None

    def log_histories(self, group: Group) -> None:
        """The per-epoch histories of the group's variants ended so far, as one Parquet file on
        the parent (a large sweep's; see `metric_histories`)."""
        self.writer.submit(self._log_histories, group)

    def _log_histories(self, group: Group) -> None:
        from jaxmlp.tracking.histories import to_parquet

        rows = self._histories.pop(group.id, [])
        if not rows:
            return
        data, name = to_parquet(rows), f"{self.lease.token[:12]}-{len(rows)}"
        try:
            self._guarded(self.tracker.log_histories, self.parent_run_id, group.id, name, data)
        except Exception:
            self.spool.histories(group.id, name, data)
            raise

    def end_unfinished(self, key: str, status: str, reason: str) -> None:
        """End the run of a variant that did not train to its end (its group failed, or Ctrl-C)."""
        self._submit(lambda: self.tracker.finish(self.run_ids[key].result(), status, reason))

    def log_epoch_seconds(self, group: Group, epochs: list[dict]) -> None:
        """The group's epoch wall times (its `Trainer.run` records), once, on the parent."""
        seconds = [(int(r["epoch"]), float(r["epoch_seconds"])) for r in epochs]
        self._submit(lambda: self.tracker.log_epoch_seconds(self.parent_run_id, group.id, seconds))

    def _checkpoint(self, best: BestVariant, tmp: str) -> Path:
        """A folder with the checkpoint of a setting's best variant: written from its result,
        or downloaded from its run after a resume."""
        if best.result is None:
            return Path(self.tracker.download_checkpoint(self.run_ids[best.variant.key].result(), tmp))
        folder = Path(tmp, "checkpoint")
        save_checkpoint(folder, best.variant.config, best.result.params, best.meta)
        return folder

    def log_setting_model(self, best: BestVariant) -> None:
        """The pyfunc model of a setting's best variant, on its run (kept if a resumed run has one)."""
        self._submit(self._log_setting_model, best)

    def _log_setting_model(self, best: BestVariant) -> None:
        run_id = self.run_ids[best.variant.key].result()
        logged = self.tracker.model_uris(run_id) if best.result is None else []
        if not self.metric_histories and best.result is not None:  # the UI charts each setting's best
            self.tracker.log_child_history(run_id, best.result.history)
        if not logged:
            with tempfile.TemporaryDirectory() as tmp:
                logged = [self.tracker.log_model(run_id, self._checkpoint(best, tmp))]
        self.model_uris[best.variant.label] = logged[0]

    def log_models(self, best: dict[str, BestVariant]) -> None:
        """Models of the settings not logged yet, and the sweep's best on the parent (registered
        where asked)."""
        self._note_best(best)
        self._submit(self._log_models, dict(best))

    def _note_best(self, best: dict[str, BestVariant]) -> None:
        """Which variants are the settings' and the sweep's best, for a replay of the spool."""
        overall = overall_best(best)
        self.spool.note(best_of_settings={label: b.variant.key for label, b in best.items()},
                        best=overall.variant.key if overall else None)

    def _log_models(self, best: dict[str, BestVariant]) -> None:
        for label, entry in best.items():
            if label not in self.model_uris:
                self._log_setting_model(entry)
        overall = overall_best(best)
        if overall is None:
            return
        uri = self.model_uris[overall.variant.label]
        with tempfile.TemporaryDirectory() as tmp:
            self.tracker.mark_best(self.parent_run_id, self._checkpoint(overall, tmp),
                                   run_id=self.run_ids[overall.variant.key].result(),
                                   setting=overall.variant.label, model_uri=uri)
        if self.register:
            self.registered_uri = self.tracker.register_best(self.parent_run_id, uri, *_registration(self.register))

    def close_parent(self, records: list[VariantRecord], rows: list[dict[str, Any]], figures: dict[str, bytes],
                     failures: list[str]) -> None:
        """The summary of `rows` (`summarize`: files, table, each setting's mean and std), the
        plots and the counts on the parent, then end it: FAILED where a variant or group failed."""
        summary = report.sweep_summary(records, rows, len(failures))
        status = "FAILED" if failures else "FINISHED"
        reason = "; ".join(failures)[:5000] or None
        files, figures, front, front_keys = self._objective_report(records, summary.files, figures)
        ending = dict(status=status, reason=reason, summary_files=files, figures=figures,
                      metrics=summary.metrics, best_setting=summary.best_setting, table=summary.table,
                      front=front, front_keys=front_keys)

        def close_or_spool() -> None:
            try:
                self._guarded(lambda: self.tracker.close_parent(self.parent_run_id, **ending))
            except Exception:
                self.spool.summary(**ending)
                raise

        self.writer.submit(close_or_spool)

    def _objective_report(self, records: list[VariantRecord], files: dict[str, bytes], figures: dict[str, bytes]):
        """The summary files and figures with the objectives' sections and figures added (the Pareto
        front of several objectives; for random and optimised sweeps which swept keys mattered),
        the front by column and the variant keys on it (None with one objective); where they
        cannot be drawn, the files and figures as they were, and the error with the tracking errors."""
        spec = self.sweep.spec
        try:
            found = report.objective_report(records, self.sweep.objectives,
                                            importance=bool(spec.random or spec.optimize))
        except Exception as err:  # noqa: BLE001 - the summary is logged without them
            self.report_errors.append(f"the objectives' tables and plots could not be drawn: "
                                      f"{type(err).__name__}: {err}")
            return files, figures, None, None
        if found.sections:
            files = {**files, "objectives.md": report.sections_markdown(found.sections).encode()}
        on_front = set(found.front["setting"]) if found.front else set()
        keys = [r.variant_key for r in records if r.label in on_front] if found.front else None
        return files, {**figures, **found.figures}, found.front, keys

    def close(self) -> list[str]:
        """Wait for every submitted call, close the tracker; return the calls' errors (the
        calls not tried once the store counted as down, as one line)."""
        errors = self.writer.close(raise_errors=False)
        skipped = sum(isinstance(e, StoreDown) for e in errors)
        lines = self.report_errors + [f"{type(e).__name__}: {e}" for e in errors if not isinstance(e, StoreDown)]
        if skipped:
            lines.append(f"{skipped} later tracking call(s) not tried: the store failed {FAILURES_BEFORE_DOWN} "
                         "times in a row")
        if self.spool.used:
            self.spool.note()
            lines.append(f"nothing trained is lost: {self.spool.n_children} child run(s)"
                         f"{' and the summary' if self.spool.has_summary else ''} not logged are kept in "
                         f"{self.spool.folder}; log them with: "
                         f"{replay_command(self.spool.folder, self.tracker.tracking_uri)}")
        self._close_tracker()
        return lines

    def kill(self, ended: set[str]) -> None:
        """After Ctrl-C or SIGTERM: mark every started run not in `ended` (variant keys) and the
        parent KILLED, close the tracker."""
        for key in [k for k in self.run_ids if k not in ended]:
            self.end_unfinished(key, "KILLED", "interrupted")
        self._submit(lambda: self.parent_run_id and self.tracker.end_parent(self.parent_run_id, "KILLED",
                                                                             "interrupted"))
        self.close()

    def abandon(self) -> None:
        """The store did not answer: end the tracking process now (its waiting call fails) and
        stop the writer without waiting for a call that may never return."""
        if hasattr(self.tracker, "kill"):
            self.tracker.kill()
        self.writer.abandon()

    def _close_tracker(self) -> None:
        if hasattr(self.tracker, "close"):
            self.tracker.close()
