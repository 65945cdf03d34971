"""`python -m jaxmlp.bench search`: a grid with early stopping against successive halving and
PBT on the same grid and seeds, through `jaxmlp.run_sweep` in this process, untracked."""
from __future__ import annotations

import argparse
from typing import Any, Mapping

from jaxmlp.bench.common import best_setting, in_process

#: A CPU-sized learning-rate x dropout x width search on the embedded digits set (72 variants).
SEARCH = {
    "description": "CPU-sized learning-rate x dropout x width search on the embedded digits set",
    "base": {"data": {"name": "digits"}, "optimizer": {"name": "sgd", "momentum": 0.9},
             "training": {"epochs": 120, "batch_size": 32,
                          "early_stopping": {"monitor": "val_loss", "patience": 12}}},
    "grid": {"optimizer.learning_rate": [0.003, 0.01, 0.03, 0.1], "model.dropout": [0.0, 0.2, 0.4],
             "model.hidden": [[64, 64], [256, 256]]},
    "seeds": 3,
}
#: The searches compared: each one's `search` section (none for the grid).
SEARCHES: dict[str, dict[str, Any] | None] = {
    "grid": None,
    "halving": {"scheduler": "successive_halving", "rungs": [3, 6, 12, 24], "keep": 0.5},
    "pbt": {"scheduler": "pbt", "interval": 6, "quantile": 0.25, "seed": 0,
            "perturb": {"optimizer.learning_rate": [0.8, 1.25], "model.dropout": [0.8, 1.25]}},
}


def search_spec(name: str, spec: Mapping[str, Any] = SEARCH) -> dict[str, Any]:
    """The search sweep under search `name` (one of `SEARCHES`)."""
    search = SEARCHES[name]
    return {"name": f"bench_search_{name}", **spec, **({"search": search} if search else {})}


def bench_search(args: argparse.Namespace, spec: Mapping[str, Any] = SEARCH) -> dict[str, Any]:
    """Per search: variant-epochs, pruned variants, training seconds (the run's wall time less
    its compile seconds: searches of the same shapes reuse the programs the first compiled) and
    the best setting's test error (mean and std over seeds; the setting chosen by its
    validation loss); how many of the grid's variant-epochs the adaptive searches spend, and
    whether their best is within one std of the grid's."""
    out: dict[str, Any] = {"benchmark": "search", "dataset": "digits (CPU-sized)"}
    for name in SEARCHES:
        seconds, result = in_process(search_spec(name, spec))
        best = best_setting(result)
        out[name] = {"seconds": seconds - result.compile_seconds, "compile_seconds": result.compile_seconds,
                     "variant_epochs": result.variant_epochs,
                     "pruned": sum(r.pruned_at is not None for r in result.records), "best_setting": best["setting"],
                     "best_test_error_percent": 100 * (1 - best["test_accuracy"]),
                     "best_test_error_std": 100 * best["test_accuracy_std"]}
    grid = out["grid"]
    for name in ("halving", "pbt"):
        run = out[name]
        run["variant_epochs_vs_grid"] = run["variant_epochs"] / grid["variant_epochs"]
        run["within_one_std_of_grid"] = (run["best_test_error_percent"]
                                         <= grid["best_test_error_percent"] + grid["best_test_error_std"])
    return out


def format_search(result: Mapping[str, Any]) -> str:
    """One line per search."""
    lines = [f"adaptive search on {result['dataset']}"]
    for name in SEARCHES:
        r = result[name]
        extra = (f"  {r['variant_epochs_vs_grid']:.0%} of the grid's variant-epochs, within one std of its "
                 f"best: {r['within_one_std_of_grid']}" if name != "grid" else "")
        lines.append(f"{name:<8} {r['variant_epochs']:>7} variant-epochs  {r['seconds']:7.1f} s  best "
                     f"{r['best_test_error_percent']:.2f} ± {r['best_test_error_std']:.2f}% ({r['best_setting']}){extra}")
    return "\n".join(lines)
