"""`python -m jaxmlp.sweep`: the sweep command over `jaxmlp.run_sweep` (see `--help`). It parses
the arguments, sets up the runtime (signal handlers, progress bars, the library's notices on
stderr, the compilation cache), calls the library and prints the outcome; errors exit 2."""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, Sequence

from jaxmlp.api.sweeps import (DEVICES, SNAPSHOT_EVERY, WHOLE_NUMBER, checked, plan_sweep, ray_executor, run_sweep,
                               with_execution)
from jaxmlp.data.errors import DataError
from jaxmlp.runtime import CACHE_ENV, COMPILE_CACHE_HELP, DEFAULT_CACHE_ROOT, JSON_HELP, compile_cache_dir, json_line
from jaxmlp.sweep.signals import Interrupts
from jaxmlp.sweep.spec import Sweep, SweepError, load_sweep, unavailable_data
from jaxmlp.tracking import TRACKING_URI_HELP


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds, 0 or more")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: {WHOLE_NUMBER}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxmlp.sweep",
        description="Train every variant of a YAML sweep (vmapped groups, early stopping on validation, "
                    "test metrics of the selected parameters) and log them to MLflow: one experiment per "
                    "sweep name, one parent run per invocation, one nested child run per variant.",
        epilog="Example: python -m jaxmlp.sweep sweeps/activations.yaml && mlflow ui")
    p.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the expanded plan (variants, groups, programs, devices, memory) and exit")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep's newest parent run: train only variants not finished there")
    p.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    p.add_argument("--no-tracking", action="store_true", help="train and summarise without logging to MLflow")
    p.add_argument("--register", metavar="NAME", help="register the sweep's best model in the Model Registry")
    p.add_argument("--alias", default="champion",
                   help="with --register: the registry alias the new version gets (default: champion); "
                        "load it with mlflow.pyfunc.load_model('models:/NAME@ALIAS')")
    p.add_argument("--system-metrics", action="store_true",
                   help="log MLflow's system metrics (CPU, memory; GPU with nvidia-ml-py) on the parent run")
    p.add_argument("--devices", choices=DEVICES,
                   help="shard variants over devices: auto (by network size), one, all (overrides the file)")
    p.add_argument("--max-variants", type=_positive_int, metavar="N",
                   help="at most N variants training at once in a compiled program (its slots; the others queue)")
    p.add_argument("--chunks", type=_positive_int, metavar="N",
                   help="split each program's queue into N chunks with slots of their own (with --executor ray, "
                        "one task each, e.g. one GPU each)")
    p.add_argument("--compile-cache", metavar="DIR", help=COMPILE_CACHE_HELP)
    p.add_argument("--snapshot-every", type=_seconds, default=SNAPSHOT_EVERY, metavar="SECONDS",
                   help="snapshot a training chunk after the first epoch this many seconds after its last "
                        f"snapshot, and when interrupted, so that --resume goes on from there (default: "
                        f"{SNAPSHOT_EVERY:g}; 0: never; local executor, without a search)")
    p.add_argument("--snapshot-dir", metavar="DIR",
                   help=f"where snapshots are kept (default: ${CACHE_ENV}/snapshots or {DEFAULT_CACHE_ROOT}/snapshots)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where programs train: this process (local) or a Ray cluster (needs the ray extra)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: the cluster to join (default: start a local one)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--json", action="store_true", help=JSON_HELP.format("the outcome"))
    return p


def main(argv: Sequence[str] | None = None, interrupts: Interrupts | None = None) -> int:
    """The sweep command; `interrupts`: the signal handlers `python -m jaxmlp.sweep` installed first."""
    args = build_parser().parse_args(argv)
    interrupts = interrupts or Interrupts()
    interrupts.install()
    try:
        return _main(args, interrupts)
    except KeyboardInterrupt:
        print("interrupted: unfinished runs were marked KILLED; continue with --resume", file=sys.stderr)
        return interrupts.exit_code
    finally:
        interrupts.restore()


def _main(args: argparse.Namespace, interrupts: Interrupts) -> int:
    try:
        sweep = checked(load_sweep(args.sweep), args.executor)
    except (SweepError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    interrupts.check()
    if args.dry_run:
        return _dry_run(sweep, args)
    if args.register is not None and not args.no_tracking:
        from jaxmlp.tracking import registration_problem

        problem = registration_problem(args.register, args.alias)
        if problem:  # before anything trains: the registry would refuse it only after
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if args.system_metrics and not args.no_tracking:
        from jaxmlp.tracking import request_system_metrics

        request_system_metrics()
    from jaxmlp.sweep.runner import StoreUnavailable
    from jaxmlp.sweep.runs import ResumeRefused

    try:
        with _notices_printed():
            result = run_sweep(
                sweep, tracking=not args.no_tracking, tracking_uri=args.tracking_uri, resume=args.resume,
                register=f"{args.register}@{args.alias}" if args.register else None, progress=not args.no_progress,
                devices=args.devices, max_variants=args.max_variants, chunks=args.chunks,
                executor=args.executor, ray_address=args.ray_address,
                compile_cache=compile_cache_dir(args.compile_cache), snapshot_every=args.snapshot_every,
                snapshot_dir=str(Path(args.snapshot_dir).expanduser()) if args.snapshot_dir else None,
                interrupts=interrupts)
    except ImportError as err:
        if args.executor != "ray":
            raise
        return _no_ray(err)
    except (SweepError, DataError, ResumeRefused, StoreUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json_line(outcome_json(result)))
    else:
        print_outcome(result)
    return 0 if result.ok else 1


def _dry_run(sweep: Sweep, args: argparse.Namespace) -> int:
    """Print the plan (programs, slots, devices, memory; a cluster's chunks), what data is
    missing, and refuse a plan that cannot fit; nothing is trained or logged."""
    sweep = with_execution(sweep, args.devices, args.max_variants, args.chunks)
    executor = None
    if args.executor == "ray":
        try:
            executor = ray_executor(sweep, args.ray_address, compile_cache_dir(args.compile_cache))
        except ImportError as err:
            return _no_ray(err)
    from jaxmlp.sweep.optimize_run import describe_study
    from jaxmlp.sweep.plan import describe_plan, oversized

    groups = plan_sweep(sweep, executor)
    print(describe_study(sweep, groups[0]) if sweep.spec.optimize else describe_plan(sweep, groups))
    for problem in unavailable_data(sweep):
        print(f"data: {problem}")
    if executor:
        print(executor.describe(groups, search=sweep.spec.search is not None))
    too_large = None if executor else oversized(groups)  # (a cluster's workers have their own memory)
    if too_large:
        print(f"error: {sweep.path}: {too_large}", file=sys.stderr)
        return 2
    return 0


def _no_ray(err: ImportError) -> int:
    print(f"error: --executor ray needs Ray ({err}); install it with: pip install -e \".[ray]\"", file=sys.stderr)
    return 2


@contextlib.contextmanager
def _notices_printed() -> Iterator[None]:
    """The library's notices (the `jaxmlp` loggers) printed to stderr while the sweep runs,
    above its progress bars, once each (not again by a handler a library put on the root)."""
    handler, logger = _StderrLines(), logging.getLogger("jaxmlp")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class _StderrLines(logging.Handler):
    """Each record's message as a line on the current stderr, above any progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(record.getMessage(), file=sys.stderr)


def outcome_json(result) -> dict:
    """The outcome as the --json object: counts, seconds, the summary rows, where it is tracked."""
    records = result.records
    finished = [r for r in records if r.finished]
    accuracies = [r.metric("test_accuracy") for r in finished if r.metric("test_accuracy") is not None]
    return {
        "sweep": result.sweep.spec.name, "n_variants": len(records), "n_finished": len(finished),
        "seconds": result.seconds, "compile_seconds": result.compile_seconds, "n_programs": result.n_programs,
        "variant_epochs": sum(r.epochs_trained or 0 for r in records),
        "slot_epochs": result.slot_epochs, "utilisation": result.utilisation,
        "n_pruned": sum(r.pruned_at is not None for r in records),
        "mean_test_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
        "rows": _rows_with_selection_metric(result), "failures": result.failures,
        "tracking_errors": result.tracking_errors, "tracking_uri": result.tracking_uri,
        "experiment_id": result.experiment_id, "parent_run_id": result.parent_run_id,
        "registered_model_uri": result.registered_model_uri,
    }


def _rows_with_selection_metric(result) -> list[dict]:
    """The summary rows (in sweep order), each with its seeds' mean validation metric that
    selects models (e.g. best_val_loss), as the printed table shows it."""
    key = f"best_{result.monitor}"
    score = {r["setting"]: r[key] for r in result.ranked()[1]}
    return [{**row, key: score.get(row["setting"])} for row in result.rows]


def print_outcome(result) -> None:
    from jaxmlp import report

    used = f", slots {result.utilisation:.0%} busy" if result.utilisation is not None else ""
    print(f"\nsweep '{result.sweep.spec.name}': {len(result.records)} variants in {result.seconds:.1f} s "
          f"(compile {result.compile_seconds:.1f} s{used})")
    header, ranked = result.ranked()
    print(header)
    print(report.to_text(report.with_pareto(ranked, result.records, result.sweep.objectives)))
    objectives = result.sweep.objectives
    if len(objectives) > 1:
        print(f"pareto: yes where no other setting matches or beats it in every objective "
              f"({', '.join(map(str, objectives))}); the best model is the setting best in "
              f"{objectives[0].metric}, the first objective")
    searched = report.search_text(result.records)
    if searched:
        print(f"\n{searched}")
    for failure in result.failures:
        print(f"FAILED: {failure}")
    for error in result.tracking_errors:
        print(f"TRACKING ERROR: {error}")
    if result.tracking_uri is not None and result.experiment_id is not None:
        from jaxmlp.tracking import run_page_url, runs_page_url, ui_base_url, ui_command

        uri, experiment, parent = result.tracking_uri, result.experiment_id, result.parent_run_id
        print(f"\nMLflow: parent run {parent} in experiment '{result.sweep.spec.name}'")
        print(f"  open the UI:  {ui_command(uri)}")
        validated = any(v.config.data.validated for v in result.sweep.variants)
        monitor = result.monitor if validated else None  # (the ranking above)
        print(f"  runs page:    {runs_page_url(ui_base_url(uri), experiment, parent, monitor)}")
        print(f"  parent run:   {run_page_url(ui_base_url(uri), experiment, parent)}")
        if result.registered_model_uri:
            print(f"  best model:   {result.registered_model_uri}  (mlflow.pyfunc.load_model loads it)")
