"""`python -m jaxmlp.bench activations`: the same net's epoch time per activation, as ratios
to ReLU's (the engine in this process, one compiled program per activation)."""
from __future__ import annotations

import argparse
from typing import Any

from jaxmlp.bench.throughput import configs_of, trained

#: The activations `bench_activations` times, in this order, each against ReLU.
BENCH_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu")


def bench_activations(args: argparse.Namespace) -> dict[str, Any]:
    """The steady epoch time of the same net (K variants, one compiled program each) per
    activation, trained in turn in one process on the same data, and its ratio to ReLU's."""
    from jaxmlp.data import load_dataset
    from jaxmlp.engine import Trainer

    out: dict[str, Any] = {"benchmark": "activations", "architecture": "-".join(map(str, [784, *args.hidden, 10])),
                           "variants": args.variants, "epochs_timed": args.epochs}
    data = None
    for name in BENCH_ACTIVATIONS:
        configs = configs_of(argparse.Namespace(**{**vars(args), "activation": name}), int(round(args.samples / 0.9)))
        data = data or load_dataset(configs[0].data).on_device()
        out[f"{name}_epoch_seconds"] = trained(Trainer(configs, data, devices=args.devices))[1]
    relu = out["relu_epoch_seconds"]
    out.update({f"{name}_vs_relu": out[f"{name}_epoch_seconds"] / relu for name in BENCH_ACTIVATIONS})
    return out
