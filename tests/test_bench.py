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

from engine_helpers import replay_early_stopping
from jaxmlp import bench, engine
from jaxmlp.data import load_dataset
from reference_mlp import classification_metrics


def small_configs(variants: int = 2):
    args = argparse.Namespace(hidden=[16], activation="relu", dropout=0.2, input_dropout=0.0, max_norm=None,
                              optimizer="adam", lr=1e-3, epochs=2, batch_size=25, variants=variants)
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


def test_input_dropout_and_max_norm_flags_reach_every_variant():
    """The paper-style nets (Srivastava et al. 2014) can be timed: input dropout and max-norm on."""
    args = bench.build_parser().parse_args(["--variants", "3", "--input-dropout", "0.2", "--max-norm", "2"])
    configs = bench._configs(args, 600)
    assert [(c.model.input_dropout, c.optimizer.max_norm, c.training.seed) for c in configs] == \
        [(0.2, 2.0, seed) for seed in range(3)]
    plain = bench._configs(bench.build_parser().parse_args([]), 600)[0]
    assert (plain.model.input_dropout, plain.optimizer.max_norm) == (0.0, None)


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
    # the FLOP count from the architecture: 6 x weights (784*16 + 16*10) x samples of an epoch (both variants)
    samples = out["train_samples"] // 50 * 50 * 2
    assert out["achieved_flops"] * out["epoch_seconds"] == pytest.approx(6 * (784 * 16 + 16 * 10) * samples, rel=1e-9)


class FakeClock:
    """A perf_counter that returns the given readings in turn (so timed code sees known durations)."""

    def __init__(self, *readings: float):
        self.readings = list(readings)

    def perf_counter(self) -> float:
        return self.readings.pop(0)


def test_matmul_peak_is_the_flops_of_the_fastest_product(monkeypatch):
    clock = FakeClock(0.0, 0.5, 1.0, 1.25, 2.0, 2.75)  # products of 0.5 s, 0.25 s and 0.75 s
    monkeypatch.setattr(bench, "time", clock)
    assert bench.matmul_peak(n=64, repeats=3) == 2 * 64**3 / 0.25
    assert clock.readings == []


@pytest.mark.parametrize("host", [False, True], ids=["device-batches", "host-batches"])
def test_loop_epoch_seconds_scale_the_timed_steps_to_an_epoch_of_every_variant(monkeypatch, host):
    configs = small_configs(variants=3)
    host_data = load_dataset(configs[0].data)
    steps_per_epoch = len(host_data.train) // 25
    clock = FakeClock(10.0, 12.0)  # 4 timed steps in 2 s
    monkeypatch.setattr(bench, "time", clock)
    seconds = bench.loop_seconds_per_epoch(configs, host_data.on_device(), steps=4,
                                           host_data=host_data if host else None)
    assert seconds == pytest.approx(2.0 / 4 * steps_per_epoch * 3, rel=1e-12)
    assert clock.readings == []


def test_sweep_loop_baseline_trains_every_variant_with_early_stopping(tmp_path, monkeypatch):
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
    runs = []  # per variant: its config and, per epoch, (epoch, validation loss, parameters)
    latest = {}
    real_one_variant, real_update = bench.one_variant, engine.early_stopping_update

    def one_variant(cfg, data):
        s, hp, state, step = real_one_variant(cfg, data)
        runs.append({"config": cfg, "epochs": []})

        def recording_step(carry, index, key):
            carry, out = step(carry, index, key)
            latest["params"] = carry[0]
            return carry, out

        return s, hp, state, recording_step

    def recording_update(es, metric, epoch, min_delta):
        runs[-1]["epochs"].append((epoch, metric, latest["params"]))
        return real_update(es, metric, epoch, min_delta)

    monkeypatch.setattr(bench, "one_variant", one_variant)
    monkeypatch.setattr(engine, "early_stopping_update", recording_update)
    out = bench.loop_sweep(path)
    assert out["variants"] == 2
    assert 0.85 < out["mean_test_accuracy"] <= 1.0
    # independently: each epoch's validation loss, where patience 2 stops, and the best epoch's test accuracy
    data = load_dataset(runs[0]["config"].data)
    accuracies, stopped_early = [], 0
    for run in runs:
        activation = run["config"].model.activation
        curve = [loss for _, loss, _ in run["epochs"]]
        assert [epoch for epoch, _, _ in run["epochs"]] == list(range(1, len(curve) + 1))
        for _, loss, params in run["epochs"]:
            assert loss == pytest.approx(classification_metrics(params, data.val.x, data.val.y, activation)["loss"],
                                         rel=1e-5)
        best_epoch, stop_epoch = replay_early_stopping(curve, 2, 0.0)
        assert len(curve) == (stop_epoch or 30)
        stopped_early += stop_epoch is not None
        best = run["epochs"][best_epoch - 1][2]
        accuracies.append(classification_metrics(best, data.test.x, data.test.y, activation)["accuracy"])
    assert [r["config"].model.activation for r in runs] == ["relu", "tanh"] and stopped_early >= 1
    assert out["mean_test_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-6)


@pytest.mark.parametrize("n", [50, 400, 2000])
def test_scale_sweeps_have_their_size_and_compile_one_program(tmp_path, n):
    from jaxmlp.sweep.plan import plan_groups
    from jaxmlp.sweep.spec import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(bench._scale_sweep(n))
    sweep = load_sweep(path)
    assert len(sweep.variants) == n
    assert len({g.program for g in plan_groups(sweep, 2, budget=2**33)}) == 1


@pytest.mark.parametrize("name", ["grid", "halving", "pbt"])
def test_search_bench_sweeps_share_grid_and_seeds(tmp_path, name):
    from jaxmlp.sweep.spec import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: s\n{bench.SEARCH_BASE}{bench.SEARCH_GRID}{bench.SEARCHES[name]}")
    sweep = load_sweep(path)
    assert len(sweep.variants) == 4 * 3 * 2 * 3
    assert type(sweep.search).__name__ == {"grid": "NoneType", "halving": "SuccessiveHalving",
                                           "pbt": "PopulationBasedTraining"}[name]


def test_figures_print_floats_short_and_everything_else_as_is():
    text = bench.format_figures({"devices": ["TFRT_CPU_0", "TFRT_CPU_1"], "epoch_seconds": 1.234567,
                                 "epochs": [0.5, 0.25], "variants": 6})
    assert text.splitlines() == ["devices        TFRT_CPU_0, TFRT_CPU_1", "epoch_seconds  1.235",
                                 "epochs         0.5, 0.25", "variants       6"]


@pytest.mark.parametrize("argv, message", [
    (["--variants", "0"], "argument --variants: '0': give a whole number, 1 or more"),
    (["--hidden", "512,x"], "argument --hidden: 'x': give a whole number, 1 or more"),
    (["scale", "--sizes", "50,7"], "argument --sizes: '50,7': give multiples of 5"),
])
def test_bad_numbers_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.build_parser().parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow  # six programs compiled: 20-60 s on two shared cores
def test_activations_benchmark_times_each_activation_against_relu():
    args = bench.build_parser().parse_args(["activations", "--hidden", "8", "--variants", "1", "--samples", "300",
                                            "--epochs", "2", "--batch-size", "50", "--dropout", "0"])
    out = bench.bench_activations(args)
    assert out["architecture"] == "784-8-10" and out["epochs_timed"] == 2
    for name in bench.BENCH_ACTIVATIONS:
        assert math.isfinite(out[f"{name}_epoch_seconds"]) and out[f"{name}_epoch_seconds"] > 0, name
        assert out[f"{name}_vs_relu"] == pytest.approx(out[f"{name}_epoch_seconds"] / out["relu_epoch_seconds"])
    assert out["relu_vs_relu"] == 1.0
    assert "gelu_vs_relu" in bench.format_figures(out)


def test_optimize_bench_reads_the_best_so_far_after_each_quarter_of_the_settings():
    steps, values = [3, 1, 2, 4, 5, 6, 7, 8], [0.6, 0.9, 0.7, 0.6, 0.6, 0.4, 0.4, 0.3]
    assert bench.best_after_quarters(steps, values, 8) == [0.7, 0.6, 0.4, 0.3]
    assert bench.best_after_quarters([3], [0.5], 8) == [None, 0.5, 0.5, 0.5]


def test_optimize_bench_modes_run_the_shipped_space_with_their_sampler_and_batch(tmp_path):
    from jaxmlp.sweep.spec import load_sweep

    for mode, (sampler, batch) in bench.OPTIMIZE_MODES.items():
        sweep = load_sweep(bench._optimize_file(tmp_path / mode, sampler, batch, 2, 8))
        spec = sweep.spec.optimize
        assert (spec.sampler, spec.batch, spec.seed, spec.trials) == (sampler, batch, 2, 8)
        assert sweep.base.training.epochs == 200 and sweep.base.training.early_stopping.patience == 10
        assert set(spec.params) == {"optimizer.learning_rate", "model.dropout", "model.activation"}
