"""`python -m jaxmlp.bench scale`: the digits activation sweep at several sizes through
`jaxmlp.run_sweep` in this process: compile time, compiled programs, training throughput and
what tracking costs per run."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from jaxmlp.bench.common import format_columns, in_process, mean_test_accuracy, shown
from jaxmlp.bench.sweep import SWEEP

#: The sweep sizes (variants) measured by default.
SCALE_SIZES = (50, 400, 2000)


def scale_spec(n_variants: int, spec: Mapping[str, Any] = SWEEP) -> dict[str, Any]:
    """The sweep with as many seeds per activation as make `n_variants` variants."""
    activations = len(spec["grid"]["model.activation"])
    return {**spec, "name": f"bench_scale_{n_variants}", "seeds": n_variants // activations,
            "execution": {"max_variants": max(n_variants, 50_000)}}


def scale_row(n_variants: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    """One size: a first untracked run, which compiles the size's programs (what this process
    compiles for it: a size whose programs have the shape of a smaller size's reuses them, as
    a notebook would, and compiles nothing), then a tracked run into a fresh store and an
    untracked one, both with the programs compiled. The tracked run's seconds include starting
    its tracking process."""
    sized = scale_spec(n_variants, spec)
    _, first = in_process(sized)
    with tempfile.TemporaryDirectory() as tmp:
        tracked_seconds, _ = in_process(sized, Path(tmp))
    untracked_seconds, untracked = in_process(sized)
    return {"variants": len(first.records), "compile_seconds": first.compile_seconds,
            "compiled_programs": first.n_programs, "tracked_seconds": tracked_seconds,
            "untracked_seconds": untracked_seconds, "variant_epochs": untracked.variant_epochs,
            "mean_test_accuracy": mean_test_accuracy(untracked),
            "seconds_per_variant": tracked_seconds / n_variants,
            "variant_epochs_per_second": untracked.variant_epochs / untracked_seconds,
            "tracking_seconds_per_run": (tracked_seconds - untracked_seconds) / n_variants,
            "tracking_overhead": tracked_seconds / untracked_seconds - 1}


def bench_scale(args: argparse.Namespace, spec: Mapping[str, Any] = SWEEP) -> dict[str, Any]:
    """One row per `--sizes` entry (each printed to stderr as it ends, without `--json`), and
    how compile time and seconds per variant grow with the sweep."""
    rows = []
    for n in args.sizes:
        rows.append(scale_row(n, spec))
        if not args.json:
            print(", ".join(f"{k}={shown(v)}" for k, v in rows[-1].items()), file=sys.stderr)
    first, last = rows[0], rows[-1]
    return {"benchmark": "scale", "sizes": rows,
            "compile_ratio_largest_to_smallest": last["compile_seconds"] / first["compile_seconds"],
            "seconds_per_variant_ratio_largest_to_middle": (
                last["seconds_per_variant"] / rows[-2]["seconds_per_variant"] if len(rows) > 2 else None)}


def format_scale(result: Mapping[str, Any]) -> str:
    """The sizes as a table, then the two growth ratios."""
    lines = [format_columns(result["sizes"]),
             f"compile seconds, largest / smallest sweep: {result['compile_ratio_largest_to_smallest']:.3g}"]
    if result["seconds_per_variant_ratio_largest_to_middle"] is not None:
        lines.append(f"seconds per variant, largest / middle sweep: "
                     f"{result['seconds_per_variant_ratio_largest_to_middle']:.3g}")
    return "\n".join(lines)
