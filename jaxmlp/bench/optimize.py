"""`python -m jaxmlp.bench optimize`: batched TPE (16 settings asked at once into the slots of
one program) against TPE asking one at a time (one slot, as Optuna is usually run, on this
engine) and random sampling at the same budget, on `sweeps/digits_optimize.yaml`, over several
sampler seeds, through `jaxmlp.run_sweep` in this process (tracked, each study into an empty
store of its own, copied from one migrated once: a project creates its store once, not per study).

A study's best validation loss is the lowest of its settings' one-seed scores, so it holds some
luck: a study that tries more distinct settings draws more of it. Each study's chosen setting is
therefore trained again on fresh seeds (`FRESH_SEEDS`, untracked, outside the timing): its mean
validation loss and test accuracy there say how good the choice is."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxmlp.bench.common import best_setting, in_process, mean_and_std, migrated_store, sweep_spec

#: The sampler and the settings asked at once of each mode.
OPTIMIZE_MODES = {"tpe_batch16": ("tpe", 16), "tpe_batch1": ("tpe", 1), "random": ("random", 16)}
#: The figures of each run that are averaged over sampler seeds.
OPTIMIZE_FIGURES = ("seconds", "best_val_loss", "best_setting_test_accuracy", "settings_per_minute",
                    "chosen_fresh_val_loss", "chosen_fresh_test_accuracy")
#: The seeds a study's chosen setting is trained again on (none of them trained in the study).
FRESH_SEEDS = (1000, 1001, 1002, 1003, 1004)


def optimize_spec(sampler: str, batch: int, seed: int, trials: int | None,
                  spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`spec` (default `sweeps/digits_optimize.yaml`) with this sampler, batch, sampler seed and
    trials (default the file's)."""
    spec = dict(spec or sweep_spec("digits_optimize.yaml"))
    optimize = spec["optimize"]
    return {**spec, "optimize": {**optimize, "sampler": sampler, "batch": batch, "seed": seed,
                                 "trials": trials or optimize["trials"]}}


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


def chosen_setting(result) -> dict[str, Any]:
    """The swept values of the setting a sweep chooses (`best_setting`), without its name (a trial's)."""
    from jaxmlp.records import SETTING_NAME

    label = best_setting(result)["setting"]
    setting = next(r.setting for r in result.records if r.label == label)
    return {key: value for key, value in setting.items() if key != SETTING_NAME}


def on_fresh_seeds(spec: Mapping[str, Any], setting: Mapping[str, Any],
                   seeds: Sequence[int] = FRESH_SEEDS) -> dict[str, float]:
    """`setting` on `spec`'s base trained again on `seeds` (untracked): its mean best validation
    loss and test accuracy over them."""
    again = {key: value for key, value in spec.items() if key not in ("optimize", "random", "grid", "zip")}
    _, result = in_process({**again, "grid": {key: [value] for key, value in setting.items()}, "seeds": list(seeds)})
    row = best_setting(result)
    return {"chosen_fresh_val_loss": row["best_val_loss"], "chosen_fresh_test_accuracy": row["test_accuracy"]}


def optimize_once(spec: Mapping[str, Any], folder: Path, store: Path | None = None,
                  fresh_seeds: Sequence[int] = FRESH_SEEDS) -> dict[str, Any]:
    """One optimised sweep into an empty store in `folder` (a copy of `store` where given): wall
    time, its best setting's validation loss and test accuracy, the best so far after each
    quarter, settings per minute; then its chosen setting on `fresh_seeds` (none: not done)."""
    from jaxmlp.tracking import Tracker

    seconds, result = in_process(spec, folder, store)
    best, settings = best_setting(result), len(result.rows)
    steps, values = Tracker(result.tracking_uri).metric_history(result.parent_run_id, "best_so_far")
    chosen = chosen_setting(result)
    return {"seconds": seconds, "compile_seconds": result.compile_seconds, "best_val_loss": best["best_val_loss"],
            "best_setting_test_accuracy": best["test_accuracy"], "settings": settings,
            "best_val_loss_after_quarters": best_after_quarters(steps, values, settings),
            "settings_per_minute": 60 * settings / seconds, "chosen": chosen,
            **(on_fresh_seeds(spec, chosen, fresh_seeds) if fresh_seeds else {})}


def bench_optimize(args: argparse.Namespace, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per mode, a first run of one batch (it compiles the mode's program), then `--seeds`
    sampler seeds of `--settings` settings (default the file's 64): means and standard
    deviations over seeds of wall time, best validation loss, its test accuracy, settings
    found per minute, and the chosen setting's validation loss and test accuracy on fresh seeds."""
    out: dict[str, Any] = {"benchmark": "optimize", "sampler_seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        store = migrated_store(Path(tmp) / "migrated")
        for mode, (sampler, batch) in OPTIMIZE_MODES.items():
            optimize_once(optimize_spec(sampler, batch, 0, min(batch, args.settings or batch), spec),
                          Path(tmp) / mode / "warm", store, fresh_seeds=())
            runs = [optimize_once(optimize_spec(sampler, batch, seed, args.settings, spec),
                                  Path(tmp) / mode / str(seed), store) for seed in range(args.seeds)]
            out[mode] = {"runs": runs, **mean_and_std(runs, OPTIMIZE_FIGURES)}
    out["tpe_batch1_seconds_vs_batch16"] = out["tpe_batch1"]["seconds"] / out["tpe_batch16"]["seconds"]
    return out


def format_optimize(result: Mapping[str, Any]) -> str:
    """One row per mode, means ± std over sampler seeds."""
    lines = [f"{'mode':<13}{'seconds':>16}{'best val loss':>20}{'test accuracy':>18}{'settings/min':>23}"
             f"{'chosen, on ' + str(len(FRESH_SEEDS)) + ' fresh seeds: val loss, test accuracy':>64}"
             f"  best val loss after each quarter (mean)"]
    for mode in OPTIMIZE_MODES:
        r = result[mode]
        quarters = np.nanmean([[np.nan if v is None else v for v in run["best_val_loss_after_quarters"]]
                               for run in r["runs"]], axis=0)
        lines.append(f"{mode:<13}{r['seconds']:>9.1f} ± {r['seconds_std']:<4.1f}"
                     f"{r['best_val_loss']:>12.4f} ± {r['best_val_loss_std']:.4f}"
                     f"{r['best_setting_test_accuracy']:>10.4f} ± {r['best_setting_test_accuracy_std']:.4f}"
                     f"{r['settings_per_minute']:>15.1f} ± {r['settings_per_minute_std']:<5.1f}"
                     f"{r['chosen_fresh_val_loss']:>38.4f} ± {r['chosen_fresh_val_loss_std']:.4f}"
                     f"{r['chosen_fresh_test_accuracy']:>10.4f} ± {r['chosen_fresh_test_accuracy_std']:.4f}"
                     f"  {', '.join(f'{q:.4f}' for q in quarters)}")
    lines.append(f"TPE one at a time / batched, wall time: {result['tpe_batch1_seconds_vs_batch16']:.2f}x "
                 f"(over {result['sampler_seeds']} sampler seed(s))")
    return "\n".join(lines)
