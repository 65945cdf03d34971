"""The benchmarks' parts compute what they claim; no timing is asserted here. Everything runs
in this process: the benchmarks call `jaxmlp.run_sweep` and the engine themselves."""
from __future__ import annotations

import json
import os
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp import engine
from jaxmlp.api.sweeps import sweep_from
from jaxmlp.bench import activations, api, cli, common, optimize, refill, scale, search, sweep as sweep_bench
from jaxmlp.bench import throughput
from jaxmlp.data import load_dataset

from tests.helpers.engine import replay_early_stopping
from tests.helpers.reference_mlp import classification_metrics

#: A sweep the benchmarks can run in seconds: 2 activations x 2 seeds of a 64-8-10 digits net.
TINY_SWEEP = {
    "name": "bench_tiny",
    "base": {"data": {"name": "digits"}, "model": {"hidden": [8]},
             "optimizer": {"name": "adam", "learning_rate": 1.0e-2},
             "training": {"epochs": 4, "batch_size": 64, "early_stopping": {"monitor": "val_loss", "patience": 2}}},
    "grid": {"model.activation": ["relu", "tanh"]},
    "seeds": 2,
}


def args_of(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def small_configs(variants: int = 2):
    args = args_of("--hidden", "16", "--epochs", "2", "--batch-size", "25", "--variants", str(variants))
    return throughput.configs_of(args, 600)


def test_both_loop_baselines_take_the_same_steps():
    """Host-sliced minibatches and minibatches gathered on the device give the same training."""
    cfg = small_configs()[0]
    host = load_dataset(cfg.data)
    data = host.on_device()
    s, hp, state, device_step = throughput.one_variant(cfg, data)
    host_step = throughput.host_batch_step(s, hp)
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
    configs = throughput.configs_of(args_of("--variants", "3", "--input-dropout", "0.2", "--max-norm", "2"), 600)
    assert [(c.model.input_dropout, c.optimizer.max_norm, c.training.seed) for c in configs] == \
        [(0.2, 2.0, seed) for seed in range(3)]
    plain = throughput.configs_of(args_of(), 600)[0]
    assert (plain.model.input_dropout, plain.optimizer.max_norm) == (0.0, None)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_train_benchmark_prints_every_figure_as_json(capsys):
    assert cli.main(["--hidden", "16", "--variants", "2", "--samples", "900", "--epochs", "2", "--batch-size", "50",
                     "--loop", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["architecture"] == "784-16-10" and out["variants"] == 2 and out["epochs_timed"] == 2
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
    monkeypatch.setattr(common, "time", clock)
    assert common.matmul_peak(n=64, repeats=3) == 2 * 64**3 / 0.25
    assert clock.readings == []


@pytest.mark.parametrize("host", [False, True], ids=["device-batches", "host-batches"])
def test_loop_epoch_seconds_scale_the_timed_steps_to_an_epoch_of_every_variant(monkeypatch, host):
    configs = small_configs(variants=3)
    host_data = load_dataset(configs[0].data)
    steps_per_epoch = len(host_data.train) // 25
    clock = FakeClock(10.0, 12.0)  # 4 timed steps in 2 s
    monkeypatch.setattr(throughput, "time", clock)
    seconds = throughput.loop_seconds_per_epoch(configs, host_data.on_device(), steps=4,
                                                host_data=host_data if host else None)
    assert seconds == pytest.approx(2.0 / 4 * steps_per_epoch * 3, rel=1e-12)
    assert clock.readings == []


@pytest.mark.slow
def test_sweep_loop_baseline_trains_every_variant_with_early_stopping(monkeypatch):
    spec = {**TINY_SWEEP, "base": {**TINY_SWEEP["base"], "model": {"hidden": [32]}, "training": {
        "epochs": 30, "batch_size": 64, "early_stopping": {"monitor": "val_loss", "patience": 2}}}, "seeds": 1}
    runs = []  # per variant: its config and, per epoch, (epoch, validation loss, parameters)
    latest = {}
    real_one_variant, real_update = sweep_bench.one_variant, engine.early_stopping_update

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

    monkeypatch.setattr(sweep_bench, "one_variant", one_variant)
    monkeypatch.setattr(engine, "early_stopping_update", recording_update)
    out = sweep_bench.loop_sweep([v.config for v in sweep_from(spec).variants])
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


@pytest.mark.slow
def test_sweep_benchmark_runs_the_sweep_in_this_process_tracked_and_not(tmp_path):
    """The first run compiles; the repeats reuse its programs; every figure follows from the runs."""
    out = sweep_bench.bench_sweep(args_of("sweep", "--repeats", "2", "--no-loop"), TINY_SWEEP)
    assert out["variants"] == 4 and out["repeats"] == 2
    assert len(out["sweep_seconds_warm_cache_all"]) == len(out["sweep_seconds_no_tracking_warm_all"]) == 2
    assert out["sweep_seconds_warm_cache"] == float(np.median(out["sweep_seconds_warm_cache_all"]))
    assert out["tracking_overhead"] == pytest.approx(
        out["sweep_seconds_warm_cache"] / out["sweep_seconds_no_tracking_warm"] - 1)
    assert 0 < out["compile_seconds_cold"] < out["sweep_seconds_cold"]
    assert 0.1 < out["mean_test_accuracy"] <= 1.0 and "loop_seconds" not in out


@pytest.mark.parametrize("n", [50, 400, 2000])
def test_scale_sweeps_have_their_size_and_compile_one_program(n):
    from jaxmlp.sweep.plan import plan_groups

    sweep = sweep_from(scale.scale_spec(n))
    assert len(sweep.variants) == n and sweep.spec.name == f"bench_scale_{n}"
    assert len({g.program for g in plan_groups(sweep, 2, budget=2**33)}) == 1


@pytest.mark.slow  # two sizes, each compiling its programs: about half a minute on two shared cores
def test_scale_benchmark_rows_follow_from_their_runs(capsys):
    args = args_of("scale")
    args.sizes = [2, 4]  # the tiny sweep's 2 activations x 1 and 2 seeds (the command takes multiples of 5)
    out = scale.bench_scale(args, TINY_SWEEP)
    assert [r["variants"] for r in out["sizes"]] == [2, 4]
    for row in out["sizes"]:
        assert row["compiled_programs"] == 1 and row["compile_seconds"] > 0
        assert row["tracking_seconds_per_run"] == pytest.approx(
            (row["tracked_seconds"] - row["untracked_seconds"]) / row["variants"])
        assert row["variant_epochs_per_second"] == pytest.approx(row["variant_epochs"] / row["untracked_seconds"])
    assert out["seconds_per_variant_ratio_largest_to_middle"] is None
    assert len(capsys.readouterr().err.splitlines()) == 2  # a line per size as it ends
    table = scale.format_scale(out).splitlines()
    assert table[0].split() == list(out["sizes"][0]) and len(table) == 4


@pytest.mark.parametrize("name", ["grid", "halving", "pbt"])
def test_search_bench_sweeps_share_grid_and_seeds(name):
    sweep = sweep_from(search.search_spec(name))
    assert len(sweep.variants) == 4 * 3 * 2 * 3
    assert type(sweep.search).__name__ == {"grid": "NoneType", "halving": "SuccessiveHalving",
                                           "pbt": "PopulationBasedTraining"}[name]


@pytest.mark.slow  # three searches of 12 variants: about half a minute on two shared cores
def test_search_benchmark_picks_the_best_setting_on_validation():
    spec = {**search.SEARCH, "base": {**search.SEARCH["base"], "training": {
        "epochs": 25, "batch_size": 64, "early_stopping": {"monitor": "val_loss", "patience": 3}}},
        "grid": {"optimizer.learning_rate": [0.01, 0.1], "model.dropout": [0.0], "model.hidden": [[8], [16]]}}
    out = search.bench_search(args_of("search"), spec)
    for name in search.SEARCHES:
        r = out[name]
        assert 0 < r["variant_epochs"] <= 12 * 25 and r["seconds"] > 0
        assert 0 <= r["best_test_error_percent"] <= 100
    assert out["grid"]["pruned"] == 0 and out["halving"]["variant_epochs"] <= out["grid"]["variant_epochs"]
    assert out["halving"]["variant_epochs_vs_grid"] == pytest.approx(
        out["halving"]["variant_epochs"] / out["grid"]["variant_epochs"])
    assert search.format_search(out).splitlines()[1].startswith("grid ")


def test_refill_modes_differ_only_in_their_slots():
    slots, one = (refill.refill_spec("digits_random.yaml", mode, 8) for mode in refill.REFILL_MODES)
    assert slots["random"]["samples"] == one["random"]["samples"] == 8
    assert slots["execution"] == {"max_variants": 50_000}
    assert one["execution"] == {"max_variants": 50_000, "max_variants_per_program": 1}
    assert {k: v for k, v in slots.items() if k != "execution"} == {k: v for k, v in one.items() if k != "execution"}
    assert len(sweep_from(one).variants) == 8
    assert refill.refill_spec("activations.yaml", "slots", 8) == {**common.sweep_spec("activations.yaml"),
                                                                  "execution": {}}


def test_figures_print_floats_short_and_everything_else_as_is():
    text = common.format_figures({"devices": ["TFRT_CPU_0", "TFRT_CPU_1"], "epoch_seconds": 1.234567,
                                  "epochs": [0.5, 0.25], "variants": 6})
    assert text.splitlines() == ["devices        TFRT_CPU_0, TFRT_CPU_1", "epoch_seconds  1.235",
                                 "epochs         0.5, 0.25", "variants       6"]
    assert common.format_columns([{"n": 5, "seconds": 12.345678}, {"n": 400, "seconds": 0.5}]).splitlines() == [
        "  n  seconds", "  5    12.35", "400      0.5"]


@pytest.mark.parametrize("argv, message", [
    (["--variants", "0"], "argument --variants: '0': give a whole number, 1 or more"),
    (["--hidden", "512,x"], "argument --hidden: 'x': give a whole number, 1 or more"),
    (["scale", "--sizes", "50,7"], "argument --sizes: '50,7': give multiples of 5"),
    (["api", "--repeats", "0"], "argument --repeats: '0': give a whole number, 1 or more"),
])
def test_bad_numbers_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow  # six programs compiled: 20-60 s on two shared cores
def test_activations_benchmark_times_each_activation_against_relu():
    args = args_of("activations", "--hidden", "8", "--variants", "1", "--samples", "300", "--epochs", "2",
                   "--batch-size", "50", "--dropout", "0")
    out = activations.bench_activations(args)
    assert out["architecture"] == "784-8-10" and out["epochs_timed"] == 2
    for name in activations.BENCH_ACTIVATIONS:
        assert math.isfinite(out[f"{name}_epoch_seconds"]) and out[f"{name}_epoch_seconds"] > 0, name
        assert out[f"{name}_vs_relu"] == pytest.approx(out[f"{name}_epoch_seconds"] / out["relu_epoch_seconds"])
    assert out["relu_vs_relu"] == 1.0
    assert "gelu_vs_relu" in common.format_figures(out)


def test_optimize_bench_reads_the_best_so_far_after_each_quarter_of_the_settings():
    steps, values = [3, 1, 2, 4, 5, 6, 7, 8], [0.6, 0.9, 0.7, 0.6, 0.6, 0.4, 0.4, 0.3]
    assert optimize.best_after_quarters(steps, values, 8) == [0.7, 0.6, 0.4, 0.3]
    assert optimize.best_after_quarters([3], [0.5], 8) == [None, 0.5, 0.5, 0.5]


def test_optimize_bench_modes_run_the_shipped_space_with_their_sampler_and_batch():
    for mode, (sampler, batch) in optimize.OPTIMIZE_MODES.items():
        sweep = sweep_from(optimize.optimize_spec(sampler, batch, 2, 8))
        spec = sweep.spec.optimize
        assert (spec.sampler, spec.batch, spec.seed, spec.trials) == (sampler, batch, 2, 8)
        assert sweep.base.training.epochs == 200 and sweep.base.training.early_stopping.patience == 10
        assert set(spec.params) == {"optimizer.learning_rate", "model.dropout", "model.activation"}
    assert sweep_from(optimize.optimize_spec("tpe", 16, 0, None)).spec.optimize.trials == 64


def test_means_and_spreads_over_sampler_seeds():
    runs = [{"seconds": 10.0, "best_val_loss": 0.5}, {"seconds": 14.0, "best_val_loss": 0.3}]
    assert common.mean_and_std(runs, ["seconds", "best_val_loss"]) == pytest.approx(
        {"seconds": 12.0, "seconds_std": 2.0, "best_val_loss": 0.4, "best_val_loss_std": 0.1})


@pytest.mark.slow  # three modes x (a first run + two seeds), tracked: about a minute on two shared cores
def test_optimize_benchmark_averages_each_mode_over_sampler_seeds(tmp_path):
    spec = {**optimize.optimize_spec("tpe", 16, 0, None), "base": TINY_SWEEP["base"]}
    out = optimize.bench_optimize(args_of("optimize", "--seeds", "2", "--settings", "4"), spec)
    for mode in optimize.OPTIMIZE_MODES:
        r = out[mode]
        assert [run["settings"] for run in r["runs"]] == [4, 4]
        assert r["seconds"] == pytest.approx(np.mean([run["seconds"] for run in r["runs"]]))
        assert r["best_val_loss_std"] == pytest.approx(np.std([run["best_val_loss"] for run in r["runs"]]))
        for run in r["runs"]:
            quarters = run["best_val_loss_after_quarters"]
            assert quarters[-1] == pytest.approx(run["best_val_loss"], rel=1e-6)  # the best so far ends at the best
            assert all(a >= b for a, b in zip(quarters, quarters[1:]) if a is not None)
            assert set(run["chosen"]) == {"optimizer.learning_rate", "model.dropout", "model.activation"}
            assert np.isfinite(run["chosen_fresh_val_loss"]) and 0 < run["chosen_fresh_test_accuracy"] <= 1
        assert r["chosen_fresh_val_loss"] == pytest.approx(np.mean([run["chosen_fresh_val_loss"] for run in r["runs"]]))
    table = optimize.format_optimize(out)
    assert "TPE one at a time / batched" in table and f"{len(optimize.FRESH_SEEDS)} fresh seeds" in table
    # The chosen setting trained again on the seed the study trained it on scores what the study saw.
    run = out["tpe_batch16"]["runs"][0]
    assert optimize.on_fresh_seeds(spec, run["chosen"], seeds=[0])["chosen_fresh_val_loss"] == pytest.approx(
        run["best_val_loss"], rel=1e-4)


def test_api_figures_compare_the_library_with_the_command():
    library = [{"seconds": 5.0, "runner_seconds": 4.5, "compile_seconds": 0.0},
               {"seconds": 6.0, "runner_seconds": 5.0, "compile_seconds": 0.001},
               {"seconds": 7.0, "runner_seconds": 6.8, "compile_seconds": 0.002}]
    command = [{"seconds": 9.0, "runner_seconds": 6.0, "compile_seconds": 0.4},
               {"seconds": 8.0, "runner_seconds": 5.5, "compile_seconds": 0.2},
               {"seconds": 10.0, "runner_seconds": 6.5, "compile_seconds": 0.3}]
    start_up = [{"interpreter": 0.02, "imports": 2.0}, {"interpreter": 0.03, "imports": 2.2},
                {"interpreter": 0.04, "imports": 1.9}]
    out = api.api_figures(library, command, start_up)
    assert out["library_seconds"] == 6.0 and out["command_seconds"] == 9.0
    assert out["command_vs_library"] == 1.5
    assert (out["library_runner_seconds"], out["command_runner_seconds"]) == (5.0, 6.0)
    assert out["library_outside_runner_seconds"] == pytest.approx(0.5)  # of 0.5, 1.0, 0.2
    assert out["command_outside_runner_seconds"] == pytest.approx(3.0)  # of 3.0, 2.5, 3.5
    assert out["imports_process_seconds"] == 2.0 and out["interpreter_process_seconds"] == 0.03
    assert (out["library_compile_seconds"], out["command_compile_seconds"]) == (0.001, 0.3)
    text = api.format_api({"benchmark": "api", "sweep": "sweeps/activations.yaml", "repeats": 3, **out})
    assert "command / library, wall time: 1.50x" in text
    assert text.splitlines()[2].split()[-4:] == ["6.00", "5.00", "0.00", "0.50"]
    assert text.splitlines()[3].split()[-4:] == ["9.00", "6.00", "0.30", "3.00"]


@pytest.mark.parametrize("argv, sets_devices", [(["sweep"], True), (["api"], True), (["train", "--devices", "2"], True),
                                                 (["train"], False), (["tracking"], False)])
def test_sweeping_benchmarks_get_a_cpu_device_per_core(monkeypatch, argv, sets_devices):
    """As the sweep command plans them; the engine's throughput on one device keeps XLA's default."""
    monkeypatch.setenv("XLA_FLAGS", "")
    cli.set_up(args_of(*argv))
    assert ("xla_force_host_platform_device_count" in os.environ["XLA_FLAGS"]) == sets_devices
