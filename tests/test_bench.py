"""The benchmark's parts compute what they claim; no timing is asserted here."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import bench
from jaxmlp.data import load_dataset


def small_configs(variants: int = 2):
    args = argparse.Namespace(hidden=[16], activation="relu", dropout=0.2, optimizer="adam", lr=1e-3,
                              epochs=2, batch_size=25, variants=variants)
    return bench._configs(args, 600)


def test_both_loop_baselines_take_the_same_steps():
    """Host-sliced minibatches and minibatches gathered on the device give the same training."""
    cfg = small_configs()[0]
    host = load_dataset(cfg.data)
    data = host.on_device()
    s, hp, state, device_step = bench.one_variant(cfg, data)
    host_step = bench.host_batch_step(s, hp)
    order = np.random.default_rng(1).permutation(len(host.train))
    keys = jax.random.split(state.key, 4)
    a = b = (state.params, state.opt_state, state.step)
    for i, key in enumerate(keys):
        index = order[i * s.batch_size:(i + 1) * s.batch_size]
        a, out_a = device_step(a, jnp.asarray(index), key)
        b, out_b = host_step(b, host.train.x[index], host.train.y[index], key)
        np.testing.assert_allclose(out_a[0], out_b[0], rtol=1e-6)
    for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-5, atol=1e-7)
    assert int(a[2]) == 4
    assert not np.allclose(jax.tree_util.tree_leaves(a[0])[0], jax.tree_util.tree_leaves(state.params)[0])


def test_train_benchmark_prints_every_figure_as_json():
    cmd = [sys.executable, "-m", "jaxmlp.bench", "--hidden", "16", "--variants", "2", "--samples", "900",
           "--epochs", "2", "--batch-size", "50", "--loop", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["architecture"] == "784-16-10" and out["variants"] == 2
    assert out["train_samples"] == pytest.approx(900, abs=5)
    for key in ("epoch_seconds", "samples_per_second", "achieved_flops", "matmul_peak_flops", "compile_seconds",
                "peak_memory_bytes", "loop_epoch_seconds", "host_batch_loop_epoch_seconds"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert out["samples_per_second"] == pytest.approx(
        out["train_samples"] // 50 * 50 * 2 / out["epoch_seconds"])
    assert out["fraction_of_peak"] == pytest.approx(out["achieved_flops"] / out["matmul_peak_flops"])
    assert out["speedup_vs_loop"] == pytest.approx(out["loop_epoch_seconds"] / out["epoch_seconds"])


def test_sweep_loop_baseline_trains_every_variant_with_early_stopping(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(textwrap.dedent("""\
        name: loop_baseline
        base:
          data: {name: digits}
          model: {hidden: [32]}
          optimizer: {name: adam, learning_rate: 1.0e-2}
          training: {epochs: 30, batch_size: 64, early_stopping: {monitor: val_loss, patience: 2}}
        grid:
          model.activation: [relu, tanh]
        """))
    out = bench.loop_sweep(path)
    assert out["variants"] == 2
    assert 0.85 < out["mean_test_accuracy"] <= 1.0
