"""`python -m jaxmlp.bench refill`: continuous batching (slots fed by a queue) against one
variant at a time (`execution.max_variants_per_program: 1`, one compiled program of one slot),
untracked, on the 64-setting digits random search and the README's activation sweep.

Its headline seconds are whole processes of the sweep command (start-up and imports
included, a warm persistent compilation cache), because that is what a user of the command
waits for; beside them, the same sweeps through `jaxmlp.run_sweep` in this process (programs
compiled once, as in a notebook)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxmlp.bench.common import as_process, in_process, sweep_spec

#: The project's sweep files compared.
REFILL_SWEEPS = ("digits_random.yaml", "activations.yaml")
#: The modes compared: each one's `execution` section.
REFILL_MODES: dict[str, dict[str, int]] = {"slots": {}, "one_at_a_time": {"max_variants_per_program": 1}}


def refill_spec(name: str, mode: str, settings: int | None) -> dict[str, Any]:
    """`sweeps/<name>` in `mode`, its random search drawn `settings` times where given."""
    spec = sweep_spec(name)
    execution = dict(REFILL_MODES[mode])
    if settings and "random" in spec:
        spec["random"]["samples"] = settings
        execution["max_variants"] = max(settings * 10, 50_000)
    return {**spec, "execution": {**spec.get("execution", {}), **execution}}


def refill_row(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One sweep in both modes: each mode once as a process to fill the compilation cache and
    once in this process to compile its programs, then `--repeats` times both ways, the modes
    alternated (medians)."""
    specs = {mode: refill_spec(name, mode, args.settings) for mode in REFILL_MODES}
    seconds: dict[str, list[float]] = {mode: [] for mode in REFILL_MODES}
    in_process_seconds: dict[str, list[float]] = {mode: [] for mode in REFILL_MODES}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ("--no-tracking", "--compile-cache", str(Path(tmp) / "xla"))
        summaries = {mode: as_process(spec, Path(tmp) / mode, *cache)[1] for mode, spec in specs.items()}
        for spec in specs.values():
            in_process(spec)
        for _ in range(args.repeats):
            for mode, spec in specs.items():
                seconds[mode].append(as_process(spec, Path(tmp) / mode, *cache)[0])
                in_process_seconds[mode].append(in_process(spec)[0])
    row: dict[str, Any] = {}
    for mode, summary in summaries.items():
        row[mode] = {"seconds": float(np.median(seconds[mode])), "seconds_all": seconds[mode],
                     "in_process_seconds": float(np.median(in_process_seconds[mode])),
                     "in_process_seconds_all": in_process_seconds[mode],
                     "variant_epochs": summary["variant_epochs"], "slot_epochs": summary["slot_epochs"],
                     "utilisation": summary["utilisation"], "mean_test_accuracy": summary["mean_test_accuracy"]}
    row["variants"] = summaries["slots"]["n_variants"]
    row["slots_vs_one_at_a_time"] = row["slots"]["seconds"] / row["one_at_a_time"]["seconds"]
    return row


def bench_refill(args: argparse.Namespace) -> dict[str, Any]:
    """Wall time, variant-epochs, slot-epochs and utilisation (variant-epochs / slot-epochs) of
    each sweep in each mode."""
    return {"benchmark": "refill", **{name.removesuffix(".yaml"): refill_row(name, args) for name in REFILL_SWEEPS}}


def format_refill(result: Mapping[str, Any]) -> str:
    """One row per sweep and mode."""
    lines = [f"{'sweep':<16}{'mode':<15}{'seconds':>9}{'variant-epochs':>16}{'slot-epochs':>13}{'utilisation':>13}"
             f"{'vs one at a time':>18}{'in-process s':>14}"]
    for name in (n.removesuffix(".yaml") for n in REFILL_SWEEPS):
        row = result[name]
        for mode in REFILL_MODES:
            r = row[mode]
            ratio = f"{r['seconds'] / row['one_at_a_time']['seconds']:.2f}x"
            lines.append(f"{name:<16}{mode:<15}{r['seconds']:>9.1f}{r['variant_epochs']:>16}{r['slot_epochs']:>13}"
                         f"{r['utilisation']:>13.2f}{ratio:>18}{r['in_process_seconds']:>14.1f}")
    return "\n".join(lines)
