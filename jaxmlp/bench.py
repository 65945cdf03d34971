"""`python -m jaxmlp.bench`: training speed as ratios and as a fraction of the matmul peak.

    python -m jaxmlp.bench                 # 784-512-512-10, K=8 vmapped variants, synthetic MNIST-sized data
    python -m jaxmlp.bench --hidden 128,128 --variants 32 --loop   # also the per-batch Python loop
    python -m jaxmlp.bench sweep           # the 50-variant digits sweep vs a per-batch loop, end to end
    python -m jaxmlp.bench scale           # the same sweep at 50, 400 and 2,000 variants, tracked and not
    python -m jaxmlp.bench search          # a grid with early stopping vs successive halving vs PBT
    python -m jaxmlp.bench refill          # continuous batching vs one variant at a time, utilisation
    python -m jaxmlp.bench optimize        # batched TPE vs TPE one at a time vs random, 64 digits settings
    python -m jaxmlp.bench tracking --variants 200   # what one child run costs the store, call by call
    python -m jaxmlp.bench activations     # the same net's epoch time per activation, as ratios to ReLU

Every figure is measured in the same process: the float32 matmul peak that JAX reaches
on a large square product, the engine's achieved FLOP/s (6 x weights per sample), and
for comparisons the same variants trained one at a time by a Python loop of per-batch
jitted steps (the engine's own `train_step`, so only the loop structure differs), in two
forms: minibatches gathered on the device from data already there (the engine's way),
and minibatches sliced from NumPy arrays on the host and passed to each step (the common
way of writing such a loop).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxmlp.runtime import JSON_HELP, json_line


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Float32 FLOP/s of the best of `repeats` jitted n x n matrix products."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = min(_timed(lambda: f(a, a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def peak_memory_bytes() -> int:
    """Peak device memory where the backend reports it, else the process's peak RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _configs(args: argparse.Namespace, n_samples: int) -> list:
    from jaxmlp.config import load_config

    base = {
        "data": {"name": "synthetic", "n_samples": n_samples, "n_features": 784, "n_classes": 10,
                 "val_size": 0.05, "test_size": 0.05},
        "model": {"hidden": args.hidden, "activation": args.activation, "dropout": args.dropout,
                  "input_dropout": args.input_dropout},
        "optimizer": {"name": args.optimizer, "learning_rate": args.lr, "max_norm": args.max_norm},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "early_stopping": {"patience": None}},
    }
    return [load_config({**base, "training": {**base["training"], "seed": s}}) for s in range(args.variants)]


def per_batch_step(s, hp, train):
    """The engine's `train_step` for one variant, jitted per minibatch (the baseline's unit):
    `step(carry, index, key)` takes a minibatch's indices into the training split on the device."""
    import jax

    from jaxmlp.engine import step_draws, train_step

    def step(carry, index, key):
        return train_step(s, hp, train, carry, (index, step_draws(s, key)))

    return jax.jit(step)


def host_batch_step(s, hp):
    """The same step taking the minibatch itself, `step(carry, x, y, key)`, as a loop over host
    (NumPy) data calls it: the common way of writing a training loop."""
    import jax
    import jax.numpy as jnp

    from jaxmlp.data import Split
    from jaxmlp.engine import step_draws, train_step

    def step(carry, x, y, key):
        return train_step(s, hp, Split(x, y), carry, (jnp.arange(s.batch_size), step_draws(s, key)))

    return jax.jit(step)


def one_variant(cfg, data):
    """Structure, hyperparameters, initial state and per-batch jitted step of one variant alone."""
    import jax
    import jax.numpy as jnp

    from jaxmlp.engine import hparams_of, init_state, structure_of

    s = structure_of([cfg], data)
    hp = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), hparams_of([cfg]))
    return s, hp, jax.jit(partial(init_state, s))(cfg.training.seed), per_batch_step(s, hp, data.train)


def loop_seconds_per_epoch(configs, data, steps: int = 100, host_data=None) -> float:
    """Seconds for one epoch of every variant, trained one at a time by per-batch jitted steps.

    Times `steps` steps of the first variant (variants of one structure cost the same per
    step) and scales to a full epoch of all variants. The minibatches are gathered on the
    device from `data` (already there), or, given `host_data` (its NumPy twin), sliced on
    the host and passed to each step.
    """
    import jax
    import jax.numpy as jnp

    s, hp, state, step = one_variant(configs[0], data)
    carry = (state.params, state.opt_state, state.step)
    order = np.random.default_rng(0).permutation(len(data.train))
    keys = jax.random.split(state.key, steps + 5)
    indices = [order[(np.arange(s.batch_size) + i * s.batch_size) % len(order)] for i in range(steps + 5)]
    if host_data is None:
        calls = [(jnp.asarray(index), key) for index, key in zip(indices, keys)]
    else:
        host_step, x, y = host_batch_step(s, hp), host_data.train.x, host_data.train.y
        calls = list(zip(indices, keys))

        def step(carry, index, key):
            return host_step(carry, x[index], y[index], key)
    for call in calls[:5]:
        carry, _ = step(carry, *call)
    jax.block_until_ready(carry)
    tic = time.perf_counter()
    for call in calls[5:]:
        carry, _ = step(carry, *call)
    jax.block_until_ready(carry)
    return (time.perf_counter() - tic) / steps * s.steps_per_epoch * len(configs)


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    from jaxmlp.data import load_dataset
    from jaxmlp.engine import Trainer
    from jaxmlp.models import n_parameters

    n_train = args.samples
    configs = _configs(args, int(round(n_train / 0.9)))
    host_data = load_dataset(configs[0].data)
    data = host_data.on_device()
    trainer = Trainer(configs, data, devices=args.devices)
    compile_seconds = trainer.compile()
    epoch_seconds = [r["epoch_seconds"] for r in trainer.run()]
    steady = float(np.median(epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds))
    s = trainer.structures[0]
    samples = s.steps_per_epoch * s.batch_size * len(configs)
    achieved = 6 * n_parameters([784, *args.hidden, 10], biases=False) * samples / steady
    peak = matmul_peak()
    out = {
        "benchmark": "train", "devices": [str(d) for d in jax.devices()[:args.devices]],
        "architecture": "-".join(map(str, [784, *args.hidden, 10])), "activation": args.activation,
        "dropout": args.dropout, "input_dropout": args.input_dropout, "max_norm": args.max_norm,
        "optimizer": args.optimizer, "batch_size": args.batch_size,
        "variants": len(configs), "train_samples": len(data.train), "epochs_timed": len(epoch_seconds),
        "epoch_seconds": steady, "samples_per_second": samples / steady,
        "achieved_flops": achieved, "matmul_peak_flops": peak, "fraction_of_peak": achieved / peak,
        "compile_seconds": compile_seconds, "peak_memory_bytes": peak_memory_bytes(),
    }
    if args.loop:
        loop = loop_seconds_per_epoch(configs, data)
        host_loop = loop_seconds_per_epoch(configs, data, host_data=host_data)
        out.update(loop_epoch_seconds=loop, speedup_vs_loop=loop / steady,
                   host_batch_loop_epoch_seconds=host_loop, speedup_vs_host_batch_loop=host_loop / steady)
    return out


#: The activations `bench_activations` times, in this order, each against ReLU.
BENCH_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu")


def bench_activations(args: argparse.Namespace) -> dict[str, Any]:
    """The steady epoch time of the same net (K variants, one compiled program each) per
    activation, trained in turn in one process on the same data, and its ratio to ReLU's."""
    from jaxmlp.data import load_dataset
    from jaxmlp.engine import Trainer

    out: dict[str, Any] = {"benchmark": "activations", "architecture": "-".join(map(str, [784, *args.hidden, 10])),
                           "variants": args.variants, "epochs_timed": args.epochs}
    data = None
    for name in BENCH_ACTIVATIONS:
        configs = _configs(argparse.Namespace(**{**vars(args), "activation": name}), int(round(args.samples / 0.9)))
        data = data or load_dataset(configs[0].data).on_device()
        trainer = Trainer(configs, data, devices=args.devices)
        trainer.compile()
        epoch_seconds = [r["epoch_seconds"] for r in trainer.run()]
        out[f"{name}_epoch_seconds"] = float(np.median(epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds))
    relu = out["relu_epoch_seconds"]
    out.update({f"{name}_vs_relu": out[f"{name}_epoch_seconds"] / relu for name in BENCH_ACTIVATIONS})
    return out


# -- the sweep benchmark ------------------------------------------------------------------

SWEEP_YAML = """\
name: bench_sweep
description: 50-variant digits sweep used by python -m jaxmlp.bench sweep
base:
  data: {name: digits}
  model: {hidden: [128, 128]}
  optimizer: {name: adam, learning_rate: 1.0e-3}
  training: {epochs: 200, batch_size: 32, early_stopping: {monitor: val_loss, patience: 10}}
grid:
  model.activation: [sigmoid, tanh, relu, leaky_relu, elu]
seeds: 10
"""


def _run_sweep_cli(folder: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    """Wall time of `python -m jaxmlp.sweep` end to end (a fresh process), and its JSON summary."""
    cmd = [sys.executable, "-m", "jaxmlp.sweep", str(folder / "sweep.yaml"), "--json", "--no-progress",
           "--tracking-uri", f"sqlite:///{folder}/mlflow.db", *extra]
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def loop_sweep(sweep_path: Path) -> dict[str, Any]:
    """The same variants trained one at a time: per-batch jitted steps, host-side early stopping."""
    import jax
    import jax.numpy as jnp

    from jaxmlp.data import load_dataset
    from jaxmlp.sweep.spec import load_sweep
    from jaxmlp.engine import EarlyStopping, early_stopping_update, evaluate

    sweep = load_sweep(sweep_path)
    data = load_dataset(sweep.variants[0].config.data).on_device()
    tic = time.perf_counter()
    accuracies = []
    for v in sweep.variants:
        s, hp, state, step = one_variant(v.config, data)
        evaluate_fn = jax.jit(partial(evaluate, s))
        carry = (state.params, state.opt_state, state.step)
        es, best_params = EarlyStopping(np.inf, 0, 0), state.params
        rng, key = np.random.default_rng(v.seed), state.key
        for epoch in range(1, s.epochs + 1):
            order = rng.permutation(s.n_train)
            for i in range(s.steps_per_epoch):
                key, step_key = jax.random.split(key)
                carry, _ = step(carry, jnp.asarray(order[i * s.batch_size:(i + 1) * s.batch_size]), step_key)
            val_loss = float(evaluate_fn(carry[0], hp, data.val)["loss"])
            es, improved = early_stopping_update(es, val_loss, epoch, 0.0)
            if improved:
                best_params = carry[0]
            if int(es.bad_epochs) >= v.config.training.early_stopping.patience:
                break
        accuracies.append(float(evaluate_fn(best_params, hp, data.test)["accuracy"]))
    return {"seconds": time.perf_counter() - tic, "mean_test_accuracy": float(np.mean(accuracies)),
            "variants": len(sweep.variants)}


def bench_sweep(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "sweep.yaml").write_text(SWEEP_YAML)
        cache = ["--compile-cache", str(folder / "xla")]
        cold, summary = _run_sweep_cli(folder, *cache)
        warm, untracked = [], []
        for _ in range(args.repeats):  # alternated, so a slow spell of the machine hits both
            warm.append(_run_sweep_cli(folder, *cache)[0])
            untracked.append(_run_sweep_cli(folder, *cache, "--no-tracking")[0])
        loop = loop_sweep(folder / "sweep.yaml") if not args.no_loop else None
    warm_median, untracked_median = float(np.median(warm)), float(np.median(untracked))
    out = {
        "benchmark": "sweep", "variants": summary["n_variants"], "repeats": args.repeats,
        "sweep_seconds_cold": cold, "sweep_seconds_warm_cache": warm_median,
        "sweep_seconds_no_tracking_warm": untracked_median,
        "tracking_overhead": warm_median / untracked_median - 1,
        "sweep_seconds_warm_cache_all": warm, "sweep_seconds_no_tracking_warm_all": untracked,
        "compile_seconds_cold": summary["compile_seconds"],
        "mean_test_accuracy": summary["mean_test_accuracy"],
    }
    if loop:
        out.update(loop_seconds=loop["seconds"], loop_mean_test_accuracy=loop["mean_test_accuracy"],
                   speedup_vs_loop_cold=loop["seconds"] / cold)
    return out


# -- the scale benchmark ------------------------------------------------------------------

SCALE_SIZES = (50, 400, 2000)


def _scale_sweep(n_variants: int) -> str:
    """The bench sweep with as many seeds per activation as make `n_variants` variants."""
    seeds = n_variants // 5
    return SWEEP_YAML.replace("name: bench_sweep", f"name: bench_scale_{n_variants}").replace(
        "seeds: 10", f"seeds: {seeds}\nexecution: {{max_variants: {max(n_variants, 50_000)}}}")


def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    """The digits activation sweep at several sizes, each into a fresh store with a fresh
    compilation cache, tracked and not: wall time, compile time, compiled programs,
    training throughput and what tracking costs per run."""
    rows = []
    for n in args.sizes:
        row: dict[str, Any] = {"variants": n}
        for tracked in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / "sweep.yaml").write_text(_scale_sweep(n))
                extra = ["--compile-cache", str(folder / "xla")] + ([] if tracked else ["--no-tracking"])
                seconds, summary = _run_sweep_cli(folder, *extra)
            key = "tracked" if tracked else "untracked"
            row[f"{key}_seconds"] = seconds
            row[f"{key}_compile_seconds"] = summary["compile_seconds"]
            row[f"{key}_variant_epochs"] = summary["variant_epochs"]
            row["compiled_programs"] = summary["n_programs"]
            row["mean_test_accuracy"] = summary["mean_test_accuracy"]
        row["seconds_per_variant"] = row["tracked_seconds"] / n
        row["variant_epochs_per_second"] = row["untracked_variant_epochs"] / row["untracked_seconds"]
        row["tracking_seconds_per_run"] = (row["tracked_seconds"] - row["untracked_seconds"]) / n
        row["tracking_overhead"] = row["tracked_seconds"] / row["untracked_seconds"] - 1
        rows.append(row)
        if not args.json:
            print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  file=sys.stderr)
    first, last = rows[0], rows[-1]
    return {"benchmark": "scale", "sizes": rows,
            "compile_ratio_largest_to_smallest": last["tracked_compile_seconds"] / first["tracked_compile_seconds"],
            "seconds_per_variant_ratio_largest_to_middle": (
                last["seconds_per_variant"] / rows[-2]["seconds_per_variant"] if len(rows) > 2 else None)}


# -- the adaptive-search benchmark --------------------------------------------------------

SEARCH_BASE = """\
description: CPU-sized learning-rate x dropout x width search on the embedded digits set
base:
  data: {name: digits}
  optimizer: {name: sgd, momentum: 0.9}
  training: {epochs: 120, batch_size: 32, early_stopping: {monitor: val_loss, patience: 12}}
"""
SEARCH_GRID = """\
grid:
  optimizer.learning_rate: [0.003, 0.01, 0.03, 0.1]
  model.dropout: [0.0, 0.2, 0.4]
  model.hidden: [[64, 64], [256, 256]]
seeds: 3
"""
SEARCHES = {
    "grid": "",
    "halving": "search: {scheduler: successive_halving, rungs: [3, 6, 12, 24], keep: 0.5}\n",
    "pbt": ("search: {scheduler: pbt, interval: 6, quantile: 0.25, seed: 0,\n"
            "         perturb: {optimizer.learning_rate: [0.8, 1.25], model.dropout: [0.8, 1.25]}}\n"),
}


def bench_search(args: argparse.Namespace) -> dict[str, Any]:
    """The full grid with early stopping, successive halving and PBT on the same grid and seeds
    (digits, a CPU-sized version of an MNIST search): variant-epochs, wall time and the best
    setting's test error (mean and std over seeds; the setting chosen by its validation loss), in
    fresh processes without tracking."""
    out: dict[str, Any] = {"benchmark": "search", "dataset": "digits (CPU-sized)"}
    for name, search in SEARCHES.items():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            text = f"name: bench_search_{name}\n{SEARCH_BASE}{SEARCH_GRID}{search}"
            (folder / "sweep.yaml").write_text(text)
            seconds, summary = _run_sweep_cli(folder, "--no-tracking", "--compile-cache", str(folder / "xla"))
        rows = [r for r in summary["rows"] if r.get("best_val_loss") == r.get("best_val_loss")]
        best = min(rows, key=lambda r: r["best_val_loss"])  # chosen on validation, as a user would
        out[name] = {"seconds": seconds, "variant_epochs": summary["variant_epochs"],
                     "pruned": summary["n_pruned"], "best_setting": best["setting"],
                     "best_test_error_percent": 100 * (1 - best["test_accuracy"]),
                     "best_test_error_std": 100 * best["test_accuracy_std"]}
    grid = out["grid"]
    for name in ("halving", "pbt"):
        run = out[name]
        run["variant_epochs_vs_grid"] = run["variant_epochs"] / grid["variant_epochs"]
        run["within_one_std_of_grid"] = (run["best_test_error_percent"]
                                         <= grid["best_test_error_percent"] + grid["best_test_error_std"])
    return out


# -- the continuous-batching benchmark ----------------------------------------------------

REFILL_SWEEPS = ("digits_random.yaml", "activations.yaml")
REFILL_MODES = {"slots": (), "one_at_a_time": ("--max-variants", "1")}


def _sweep_file(name: str, settings: int | None, folder: Path) -> Path:
    """A copy of the project's `sweeps/<name>` in `folder`, its random search drawn `settings` times."""
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / name).read_text())
    if settings and "random" in spec:
        spec["random"]["samples"] = settings
        spec.setdefault("execution", {})["max_variants"] = max(settings * 10, 50_000)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def bench_refill(args: argparse.Namespace) -> dict[str, Any]:
    """Continuous batching against one variant at a time (`--max-variants 1`: one compiled
    program of one slot), untracked, in fresh processes sharing a warm compilation cache:
    wall time, variant-epochs, slot-epochs and utilisation (variant-epochs / slot-epochs) on
    the 64-setting digits random search and the README's activation sweep. Each mode runs
    once to fill the cache, then `--repeats` times alternated (medians)."""
    out: dict[str, Any] = {"benchmark": "refill"}
    for name in REFILL_SWEEPS:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _sweep_file(name, args.settings, folder)
            common = ("--no-tracking", "--compile-cache", str(folder / "xla"))
            seconds: dict[str, list[float]] = {mode: [] for mode in REFILL_MODES}
            summaries: dict[str, dict] = {}
            for mode, extra in REFILL_MODES.items():
                _, summaries[mode] = _run_sweep_cli(folder, *common, *extra)  # fills the compilation cache
            for _ in range(args.repeats):
                for mode, extra in REFILL_MODES.items():
                    seconds[mode].append(_run_sweep_cli(folder, *common, *extra)[0])
        row: dict[str, Any] = {}
        for mode, summary in summaries.items():
            row[mode] = {"seconds": float(np.median(seconds[mode])), "seconds_all": seconds[mode],
                         "variant_epochs": summary["variant_epochs"], "slot_epochs": summary["slot_epochs"],
                         "utilisation": summary["utilisation"], "mean_test_accuracy": summary["mean_test_accuracy"]}
        row["variants"] = summaries["slots"]["n_variants"]
        row["slots_vs_one_at_a_time"] = row["slots"]["seconds"] / row["one_at_a_time"]["seconds"]
        out[name.removesuffix(".yaml")] = row
    return out


#: `python -m jaxmlp.bench optimize`: the sampler and settings asked at once of each mode.
OPTIMIZE_MODES = {"tpe_batch16": ("tpe", 16), "tpe_batch1": ("tpe", 1), "random": ("random", 16)}


def _optimize_file(folder: Path, sampler: str, batch: int, seed: int, trials: int | None) -> Path:
    """`sweeps/digits_optimize.yaml` in `folder`, with this sampler, batch, sampler seed and trials."""
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "digits_optimize.yaml").read_text())
    spec["optimize"].update(sampler=sampler, batch=batch, seed=seed, trials=trials or spec["optimize"]["trials"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def best_after_quarters(steps: Sequence[int], values: Sequence[float], trials: int) -> list[float | None]:
    """The study's best so far (a metric logged after each setting told, step: settings told)
    once a quarter, half, three quarters and all of `trials` settings were told (None before one)."""
    order = np.argsort(steps, kind="stable")
    steps, values = np.asarray(steps)[order], np.asarray(values, float)[order]
    out = []
    for quarter in range(1, 5):
        seen = values[steps <= quarter * trials / 4]
        out.append(float(seen[-1]) if len(seen) else None)
    return out


def _optimize_once(folder: Path, sampler: str, batch: int, seed: int, trials: int | None,
                   cache: str) -> dict[str, Any]:
    """One optimised sweep in a fresh process and store: wall time, its best setting's
    validation loss and test accuracy, the best so far after each quarter, settings per minute."""
    from jaxmlp.tracking import Tracker

    _optimize_file(folder, sampler, batch, seed, trials)
    seconds, summary = _run_sweep_cli(folder, "--compile-cache", cache)
    best = min(summary["rows"], key=lambda r: r["best_val_loss"] if r["best_val_loss"] is not None else math.inf)
    steps, values = Tracker(f"sqlite:///{folder}/mlflow.db").metric_history(summary["parent_run_id"], "best_so_far")
    return {"seconds": seconds, "compile_seconds": summary["compile_seconds"], "best_val_loss": best["best_val_loss"],
            "best_setting_test_accuracy": best["test_accuracy"], "settings": len(summary["rows"]),
            "best_val_loss_after_quarters": best_after_quarters(steps, values, len(summary["rows"])),
            "settings_per_minute": 60 * len(summary["rows"]) / seconds}


def bench_optimize(args: argparse.Namespace) -> dict[str, Any]:
    """Batched TPE (16 settings asked at once into the slots of one program) against TPE asking
    one at a time (one slot, as Optuna is usually run, on this engine) and random sampling at
    the same budget, on `sweeps/digits_optimize.yaml` (`--settings` settings, default its 64),
    over `--seeds` sampler seeds, each run a fresh process and store (tracked); each mode first
    runs one batch to fill the compilation cache. Means and standard deviations over seeds."""
    out: dict[str, Any] = {"benchmark": "optimize", "sampler_seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "xla")
        for mode, (sampler, batch) in OPTIMIZE_MODES.items():
            _optimize_once(Path(tmp) / mode / "warm", sampler, batch, 0, min(batch, args.settings or batch), cache)
            runs = [_optimize_once(Path(tmp) / mode / str(seed), sampler, batch, seed, args.settings, cache)
                    for seed in range(args.seeds)]
            row: dict[str, Any] = {"runs": runs}
            for key in ("seconds", "best_val_loss", "best_setting_test_accuracy", "settings_per_minute"):
                row[key], row[f"{key}_std"] = float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs]))
            out[mode] = row
    out["tpe_batch1_seconds_vs_batch16"] = out["tpe_batch1"]["seconds"] / out["tpe_batch16"]["seconds"]
    return out


def format_optimize(result: dict[str, Any]) -> str:
    """The optimize benchmark as a table: one row per mode, means ± std over sampler seeds."""
    lines = [f"{'mode':<13}{'seconds':>16}{'best val loss':>20}{'test accuracy':>18}{'settings/min':>15}"
             f"  best val loss after each quarter (mean)"]
    for mode in OPTIMIZE_MODES:
        r = result[mode]
        quarters = np.nanmean([[np.nan if v is None else v for v in run["best_val_loss_after_quarters"]]
                               for run in r["runs"]], axis=0)
        lines.append(f"{mode:<13}{r['seconds']:>9.1f} ± {r['seconds_std']:<4.1f}"
                     f"{r['best_val_loss']:>12.4f} ± {r['best_val_loss_std']:.4f}"
                     f"{r['best_setting_test_accuracy']:>10.4f} ± {r['best_setting_test_accuracy_std']:.4f}"
                     f"{r['settings_per_minute']:>15.1f}  {', '.join(f'{q:.4f}' for q in quarters)}")
    lines.append(f"TPE one at a time / batched, wall time: {result['tpe_batch1_seconds_vs_batch16']:.2f}x "
                 f"(over {result['sampler_seeds']} sampler seed(s))")
    return "\n".join(lines)


# -- the tracking benchmark ---------------------------------------------------------------

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


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 1 or more")
    return int(text)


def _positives(text: str, multiple: int = 1) -> list[int]:
    """'a,b,...' of whole numbers 1 or more (multiples of `multiple`)."""
    values = [_positive(x) for x in text.split(",")]
    if any(v % multiple for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give multiples of {multiple}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxmlp.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?",
                   choices=["train", "sweep", "scale", "search", "refill", "optimize", "tracking", "activations"],
                   default="train",
                   help="what to measure (default: train; see the examples above)")
    p.add_argument("--sizes", type=lambda t: _positives(t, 5), default=list(SCALE_SIZES),
                   help="scale: sweep sizes (variants, multiples of 5), e.g. 50,400,2000")
    p.add_argument("--hidden", type=_positives, default=[512, 512], help="hidden layer widths, e.g. 512,512")
    p.add_argument("--variants", type=_positive, default=8, help="K, variants trained at once")
    p.add_argument("--activation", default="relu", help="hidden units' activation (a model.activation name)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--input-dropout", type=float, default=0.0)
    p.add_argument("--max-norm", type=float, default=None, help="bound on each unit's incoming weight norm")
    p.add_argument("--optimizer", default="adam", help="an optimizer.name: sgd, adam, adamw, rmsprop")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--batch-size", type=_positive, default=128)
    p.add_argument("--samples", type=_positive, default=60_000, help="training samples per epoch")
    p.add_argument("--epochs", type=_positive, default=3, help="epochs timed (the median after the first counts)")
    p.add_argument("--devices", type=_positive, default=1, help="shard the variants over this many devices")
    p.add_argument("--loop", action="store_true", help="also time a per-batch Python loop over variants")
    p.add_argument("--no-loop", action="store_true", help="sweep: skip the slow one-at-a-time baseline")
    p.add_argument("--repeats", type=_positive, default=3,
                   help="sweep, refill: warm runs of each mode, alternated (medians are reported)")
    p.add_argument("--settings", type=_positive, default=None,
                   help="refill: settings of the random search; optimize: settings proposed (default: the "
                        "sweep file's 64)")
    p.add_argument("--seeds", type=_positive, default=3, help="optimize: sampler seeds of each mode (default: 3)")
    p.add_argument("--json", action="store_true", help=JSON_HELP.format("the results"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = {"sweep": bench_sweep, "scale": bench_scale, "search": bench_search, "train": bench_train,
              "tracking": bench_tracking, "refill": bench_refill, "optimize": bench_optimize,
              "activations": bench_activations}[args.what](args)
    if args.json:
        print(json_line(result))
    elif args.what == "search":
        print(f"adaptive search on {result['dataset']}")
        for name in SEARCHES:
            r = result[name]
            extra = (f"  {r['variant_epochs_vs_grid']:.0%} of the grid's variant-epochs, within one std of its "
                     f"best: {r['within_one_std_of_grid']}" if name != "grid" else "")
            print(f"{name:<8} {r['variant_epochs']:>7} variant-epochs  {r['seconds']:7.1f} s  best "
                  f"{r['best_test_error_percent']:.2f} ± {r['best_test_error_std']:.2f}% ({r['best_setting']}){extra}")
    elif args.what == "refill":
        print(format_refill(result))
    elif args.what == "optimize":
        print(format_optimize(result))
    elif args.what == "tracking":
        for mode in ("metric_histories", "final_metrics_only"):
            r = result[mode]
            print(f"{result['runs']} child runs, {mode.replace('_', ' ')} "
                  f"({result['history_points_per_run'] if mode == 'metric_histories' else 0} history points each): "
                  f"{r['ms_per_run']:.1f} ms per run")
            for name, ms in r["ms_per_run_by_call"].items():
                print(f"  {name:<20} {ms:6.1f} ms  {r['share_by_call'][name]:5.0%}")
        print(f"final metrics only / with histories: {result['final_only_vs_metric_histories']:.2f}")
    elif args.what == "scale":
        columns = list(result["sizes"][0])
        cells = [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in result["sizes"]]
        widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
        for row in [columns, *cells]:
            print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        print(f"compile seconds, largest / smallest sweep: {result['compile_ratio_largest_to_smallest']:.3g}")
        if result["seconds_per_variant_ratio_largest_to_middle"] is not None:
            print(f"seconds per variant, largest / middle sweep: "
                  f"{result['seconds_per_variant_ratio_largest_to_middle']:.3g}")
    else:
        print(format_figures(result))
    return 0


def format_refill(result: dict[str, Any]) -> str:
    """The refill benchmark as a table: one row per sweep and mode."""
    lines = [f"{'sweep':<16}{'mode':<15}{'seconds':>9}{'variant-epochs':>16}{'slot-epochs':>13}{'utilisation':>13}"
             f"{'vs one at a time':>18}"]
    for name in (n.removesuffix(".yaml") for n in REFILL_SWEEPS):
        row = result[name]
        for mode in REFILL_MODES:
            r = row[mode]
            ratio = f"{r['seconds'] / row['one_at_a_time']['seconds']:.2f}x"
            lines.append(f"{name:<16}{mode:<15}{r['seconds']:>9.1f}{r['variant_epochs']:>16}{r['slot_epochs']:>13}"
                         f"{r['utilisation']:>13.2f}{ratio:>18}")
    return "\n".join(lines)


def format_figures(result: dict[str, Any]) -> str:
    """One `key  value` line per figure; floats (alone or in lists) to four significant digits."""
    def shown(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(map(shown, value))
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    width = max(map(len, result))
    return "\n".join(f"{key:<{width}}  {shown(value)}" for key, value in result.items())


if __name__ == "__main__":
    if "--devices" in sys.argv:
        from jaxmlp.runtime import use_one_cpu_device_per_core

        use_one_cpu_device_per_core()
    raise SystemExit(main())
