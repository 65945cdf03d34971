"""`python -m jaxmlp.bench tracking --variants 200`: what one child run costs a fresh SQLite
store, call by call (the tracking layer alone: no training)."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any, Mapping


def bench_tracking(args: argparse.Namespace) -> dict[str, Any]:
    """What one child run costs in a fresh SQLite store, call by call: `--variants` children of
    a 64-128-128-10 digits net (26,122 parameters), each started with its ~30 params and ended
    with `--epochs`-long histories of 8 metrics, 15 final metrics, its dataset inputs and its
    checkpoint, as a sweep logs them. Reported per run, in milliseconds and as shares of the
    run's time: each MLflow client call, and jaxmlp's own work around them (the rest)."""
    import collections
    import os

    from jaxmlp.config import DataConfig, RunConfig
    from jaxmlp.records import VariantRecord
    from jaxmlp.tracking import Tracker

    config = RunConfig.model_validate({"data": {"name": "digits"}, "model": {"hidden": [128, 128]}})
    n_params = 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    epochs = max(args.epochs, 30)
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_accuracy": 1 - 1 / e,
                "val_accuracy": 1 - 1.1 / e, "learning_rate": 1e-3, "momentum": 0.9, "dead_fraction_0": 0.0,
                "dead_fraction_1": 0.01, "epoch_seconds": 0.1} for e in range(1, epochs + 1)]
    files = {"config.json": json.dumps(config.to_dict()).encode(), "params.msgpack": os.urandom(4 * n_params)}
    out: dict[str, Any] = {"benchmark": "tracking", "runs": args.variants, "history_points_per_run": epochs * 9}
    # with every history as MLflow metrics (sweeps up to execution.metric_histories_up_to), and
    # with final metrics only (larger sweeps: histories go to Parquet on the parent)
    for mode, logged_history in (("metric_histories", history), ("final_metrics_only", [])):
        spent: collections.Counter = collections.Counter()
        with tempfile.TemporaryDirectory() as tmp:
            tracker = Tracker(f"sqlite:///{tmp}/mlflow.db")
            client = tracker.client
            for name in ("create_run", "log_batch", "log_inputs", "log_artifacts", "set_terminated"):
                method = getattr(client, name)

                def timed(*a, _method=method, _name=name, **k):
                    tic = time.perf_counter()
                    try:
                        return _method(*a, **k)
                    finally:
                        spent[_name] += time.perf_counter() - tic
                setattr(client, name, timed)
            experiment = tracker.experiment("bench_tracking")
            parent = tracker.start_parent(experiment, "bench", sweep_name="bench_tracking", sweep_hash="0",
                                          sweep_file="-", note="", git_commit=None, environment={}, params={})
            tracker.dataset_inputs(config.data)  # described once per tracker, as in a sweep
            spent.clear()
            tic = time.perf_counter()
            for i in range(args.variants):
                run = tracker.start_child(experiment, parent, f"v{i}", variant_key=f"k{i}", index=i,
                                          setting={"optimizer.learning_rate": 0.001}, seed=i, group="g0",
                                          params=config.flat())
                record = VariantRecord(setting={"optimizer.learning_rate": 0.001}, seed=i, status="FINISHED",
                                       best_epoch=epochs, stopped_epoch=epochs, n_params=n_params,
                                       train_seconds=1.0, compile_seconds=1.0, epochs_trained=epochs,
                                       metrics={f"{p}_{m}": 0.5 for p in ("test", "final_train", "best_val")
                                                for m in ("loss", "accuracy")})
                tracker.finish_child(run, record, history=logged_history, files=files, reason=None,
                                     data=DataConfig(name="digits"))
            total = time.perf_counter() - tic
        per_run = {name: 1000 * seconds / args.variants for name, seconds in spent.most_common()}
        per_run["jaxmlp (the rest)"] = 1000 * total / args.variants - sum(per_run.values())
        out[mode] = {"ms_per_run": 1000 * total / args.variants, "ms_per_run_by_call": per_run,
                     "share_by_call": {name: ms / (1000 * total / args.variants) for name, ms in per_run.items()}}
    out["final_only_vs_metric_histories"] = (out["final_metrics_only"]["ms_per_run"]
                                             / out["metric_histories"]["ms_per_run"])
    return out


def format_tracking(result: Mapping[str, Any]) -> str:
    """Per mode, the milliseconds of a run and of each call in it, and their shares."""
    lines = []
    for mode in ("metric_histories", "final_metrics_only"):
        r = result[mode]
        lines.append(f"{result['runs']} child runs, {mode.replace('_', ' ')} "
                     f"({result['history_points_per_run'] if mode == 'metric_histories' else 0} history points "
                     f"each): {r['ms_per_run']:.1f} ms per run")
        lines += [f"  {name:<20} {ms:6.1f} ms  {r['share_by_call'][name]:5.0%}"
                  for name, ms in r["ms_per_run_by_call"].items()]
    lines.append(f"final metrics only / with histories: {result['final_only_vs_metric_histories']:.2f}")
    return "\n".join(lines)
