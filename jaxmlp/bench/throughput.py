"""`python -m jaxmlp.bench [train]`: the engine's training throughput, as a fraction of the
matmul peak and as a ratio to a per-batch Python loop (`--loop`), on one device or sharded
over `--devices`.

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
import time
from functools import partial
from typing import Any

import numpy as np

from jaxmlp.bench.common import matmul_peak, peak_memory_bytes


def configs_of(args: argparse.Namespace, n_samples: int) -> list:
    """K variants (seeds 0..K-1) of the net the arguments describe, on synthetic data of
    MNIST's shape (784 features, 10 classes) with `n_samples` samples."""
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


def trained(trainer) -> tuple[float, float, int]:
    """Compile a `Trainer` and run it: its compile seconds, its steady epoch seconds (the
    median of the epochs after the first, which warms up) and the epochs it ran."""
    compile_seconds = trainer.compile()
    epoch_seconds = [r["epoch_seconds"] for r in trainer.run()]
    steady = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    return compile_seconds, float(np.median(steady)), len(epoch_seconds)


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """K variants of one net on synthetic MNIST-sized data: steady epoch time, samples and
    FLOP/s, the fraction of the matmul peak, compile seconds, peak memory; with `--loop` the
    same variants in the two per-batch loops."""
    import jax

    from jaxmlp.data import load_dataset
    from jaxmlp.engine import Trainer
    from jaxmlp.models import n_parameters

    n_train = args.samples
    configs = configs_of(args, int(round(n_train / 0.9)))
    host_data = load_dataset(configs[0].data)
    data = host_data.on_device()
    trainer = Trainer(configs, data, devices=args.devices)
    compile_seconds, steady, epochs = trained(trainer)
    s = trainer.structures[0]
    samples = s.steps_per_epoch * s.batch_size * len(configs)
    achieved = 6 * n_parameters([784, *args.hidden, 10], biases=False) * samples / steady
    peak = matmul_peak()
    out = {
        "benchmark": "train", "devices": [str(d) for d in jax.devices()[:args.devices]],
        "architecture": "-".join(map(str, [784, *args.hidden, 10])), "activation": args.activation,
        "dropout": args.dropout, "input_dropout": args.input_dropout, "max_norm": args.max_norm,
        "optimizer": args.optimizer, "batch_size": args.batch_size,
        "variants": len(configs), "train_samples": len(data.train), "epochs_timed": epochs,
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
