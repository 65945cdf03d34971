"""`python -m jaxmlp.bench sweep`: the 50-variant digits activation sweep through
`jaxmlp.run_sweep` in this process, tracked and not, against the same variants trained one at
a time by a per-batch Python loop with early stopping on the host (the baseline that is the
point of this benchmark)."""
from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxmlp.bench.common import in_process, mean_test_accuracy
from jaxmlp.bench.throughput import one_variant

#: The benchmark's sweep: 5 activations x 10 seeds of a 64-128-128-10 digits net.
SWEEP = {
    "name": "bench_sweep",
    "description": "50-variant digits sweep used by python -m jaxmlp.bench sweep",
    "base": {"data": {"name": "digits"}, "model": {"hidden": [128, 128]},
             "optimizer": {"name": "adam", "learning_rate": 1.0e-3},
             "training": {"epochs": 200, "batch_size": 32,
                          "early_stopping": {"monitor": "val_loss", "patience": 10}}},
    "grid": {"model.activation": ["sigmoid", "tanh", "relu", "leaky_relu", "elu"]},
    "seeds": 10,
}


def loop_sweep(configs: Sequence) -> dict[str, Any]:
    """The same variants trained one at a time: per-batch jitted steps, host-side early stopping."""
    import jax
    import jax.numpy as jnp

    from jaxmlp.data import load_dataset
    from jaxmlp.engine import EarlyStopping, early_stopping_update, evaluate

    data = load_dataset(configs[0].data).on_device()
    tic = time.perf_counter()
    accuracies = []
    for cfg in configs:
        s, hp, state, step = one_variant(cfg, data)
        evaluate_fn = jax.jit(partial(evaluate, s))
        carry = (state.params, state.opt_state, state.step)
        es, best_params = EarlyStopping(np.inf, 0, 0), state.params
        rng, key = np.random.default_rng(cfg.training.seed), state.key
        for epoch in range(1, s.epochs + 1):
            order = rng.permutation(s.n_train)
            for i in range(s.steps_per_epoch):
                key, step_key = jax.random.split(key)
                carry, _ = step(carry, jnp.asarray(order[i * s.batch_size:(i + 1) * s.batch_size]), step_key)
            val_loss = float(evaluate_fn(carry[0], hp, data.val)["loss"])
            es, improved = early_stopping_update(es, val_loss, epoch, 0.0)
            if improved:
                best_params = carry[0]
            if int(es.bad_epochs) >= cfg.training.early_stopping.patience:
                break
        accuracies.append(float(evaluate_fn(best_params, hp, data.test)["accuracy"]))
    return {"seconds": time.perf_counter() - tic, "mean_test_accuracy": float(np.mean(accuracies)),
            "variants": len(configs)}


def bench_sweep(args: argparse.Namespace, spec: Mapping[str, Any] = SWEEP) -> dict[str, Any]:
    """The sweep's first run in this process (cold: it compiles its programs), then `--repeats`
    runs tracked and untracked, alternated so that a slow spell of the machine hits both (warm:
    the programs compiled by the first run are reused, as in a notebook); medians. Then, unless
    `--no-loop`, the loop baseline on the same variants."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cold, first = in_process(spec, folder)
        warm, untracked = [], []
        for _ in range(args.repeats):
            warm.append(in_process(spec, folder)[0])
            untracked.append(in_process(spec)[0])
    warm_median, untracked_median = float(np.median(warm)), float(np.median(untracked))
    out = {
        "benchmark": "sweep", "variants": len(first.records), "repeats": args.repeats,
        "sweep_seconds_cold": cold, "sweep_seconds_warm_cache": warm_median,
        "sweep_seconds_no_tracking_warm": untracked_median,
        "tracking_overhead": warm_median / untracked_median - 1,
        "sweep_seconds_warm_cache_all": warm, "sweep_seconds_no_tracking_warm_all": untracked,
        "compile_seconds_cold": first.compile_seconds,
        "mean_test_accuracy": mean_test_accuracy(first),
    }
    if not args.no_loop:
        loop = loop_sweep([v.config for v in first.sweep.variants])
        out.update(loop_seconds=loop["seconds"], loop_mean_test_accuracy=loop["mean_test_accuracy"],
                   speedup_vs_loop_cold=loop["seconds"] / cold)
    return out
