"""The command line of `python -m jaxmlp.bench`: one parser for every benchmark, each
benchmark's figures and how they are printed."""
from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping, Sequence

from jaxmlp.bench import activations, api, optimize, refill, scale, search, sweep, throughput, tracking
from jaxmlp.bench.common import format_figures
from jaxmlp.runtime import JSON_HELP, json_line

Figures = Callable[[argparse.Namespace], dict[str, Any]]
Text = Callable[[Mapping[str, Any]], str]

#: Each benchmark: what measures it and how its figures are printed without --json.
BENCHMARKS: dict[str, tuple[Figures, Text]] = {
    "train": (throughput.bench_train, format_figures),
    "sweep": (sweep.bench_sweep, format_figures),
    "scale": (scale.bench_scale, scale.format_scale),
    "search": (search.bench_search, search.format_search),
    "refill": (refill.bench_refill, refill.format_refill),
    "optimize": (optimize.bench_optimize, optimize.format_optimize),
    "tracking": (tracking.bench_tracking, tracking.format_tracking),
    "activations": (activations.bench_activations, format_figures),
    "api": (api.bench_api, api.format_api),
}
#: The benchmarks that run sweeps, which the process sets up as the sweep command does.
SWEEPING = ("sweep", "scale", "search", "refill", "optimize", "api")


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
    import jaxmlp.bench

    p = argparse.ArgumentParser(prog="python -m jaxmlp.bench", description=jaxmlp.bench.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=list(BENCHMARKS), default="train",
                   help="what to measure (default: train; see the examples above)")
    p.add_argument("--sizes", type=lambda t: _positives(t, 5), default=list(scale.SCALE_SIZES),
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
                   help="sweep, refill, api: warm runs of each mode, alternated (medians are reported)")
    p.add_argument("--settings", type=_positive, default=None,
                   help="refill: settings of the random search; optimize: settings proposed (default: the "
                        "sweep file's 64)")
    p.add_argument("--seeds", type=_positive, default=3, help="optimize: sampler seeds of each mode (default: 3)")
    p.add_argument("--json", action="store_true", help=JSON_HELP.format("the results"))
    return p


def set_up(args: argparse.Namespace) -> None:
    """Before JAX starts: one CPU device per core where variants are sharded (`--devices`) or
    sweeps run (planned over the devices, as the sweep command plans them)."""
    if args.what in SWEEPING or args.devices > 1:
        from jaxmlp.runtime import use_one_cpu_device_per_core

        use_one_cpu_device_per_core()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_up(args)
    measure, text = BENCHMARKS[args.what]
    result = measure(args)
    print(json_line(result) if args.json else text(result))
    return 0
