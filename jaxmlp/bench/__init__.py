"""`python -m jaxmlp.bench`: training speed as ratios and as a fraction of the matmul peak.

    python -m jaxmlp.bench                 # 784-512-512-10, K=8 vmapped variants, synthetic MNIST-sized data
    python -m jaxmlp.bench --hidden 128,128 --variants 32 --loop   # also the per-batch Python loop
    python -m jaxmlp.bench --variants 32 --devices 2   # the variants sharded over two devices
    python -m jaxmlp.bench sweep           # the 50-variant digits sweep vs a per-batch loop, end to end
    python -m jaxmlp.bench scale           # the same sweep at 50, 400 and 2,000 variants, tracked and not
    python -m jaxmlp.bench search          # a grid with early stopping vs successive halving vs PBT
    python -m jaxmlp.bench refill          # continuous batching vs one variant at a time, utilisation
    python -m jaxmlp.bench optimize        # batched TPE vs TPE one at a time vs random, 64 digits settings
    python -m jaxmlp.bench tracking --variants 200   # what one child run costs the store, call by call
    python -m jaxmlp.bench activations     # the same net's epoch time per activation, as ratios to ReLU
    python -m jaxmlp.bench api             # jaxmlp.run_sweep in this process vs the sweep command

One module per benchmark (`throughput` is `train`'s). Sweeps run through `jaxmlp.run_sweep` in
the benchmark's own process, from dicts; the sweep command runs as a process only where a
whole process is what is measured (`refill`'s headline seconds, `api`).
"""
from jaxmlp.bench.cli import build_parser, main

__all__ = ["build_parser", "main"]
