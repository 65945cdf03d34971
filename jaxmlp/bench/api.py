"""`python -m jaxmlp.bench api`: the README sweep (`sweeps/activations.yaml`, tracked) through
`jaxmlp.run_sweep` in this process against the sweep command as a process, and where the
command's extra time goes.

The command is measured as a whole process on purpose (a cold process is what its user
waits for): Python's start-up, the imports (JAX, MLflow, jaxmlp), JAX's backend, reading its
programs from the persistent compilation cache, then the same runner as the library's."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxmlp.bench.common import SWEEPS, as_process, in_process, timed

#: What a process of the command does before its runner starts, measured alone: an empty
#: interpreter, and one that imports the library and JAX and starts JAX's backend.
START_UP = {"interpreter": "pass", "imports": "import jax, jaxmlp; jaxmlp.run_sweep; jax.devices()"}


def library_run(path: Path, folder: Path) -> dict[str, float]:
    """`jaxmlp.run_sweep` on the file in this process: wall and runner seconds."""
    seconds, result = in_process(path, folder)
    return {"seconds": seconds, "runner_seconds": result.seconds, "compile_seconds": result.compile_seconds}


def command_run(path: Path, folder: Path, cache: str) -> dict[str, float]:
    """`python -m jaxmlp.sweep` on the file as a process: wall and runner seconds."""
    seconds, outcome = as_process(path, folder, "--compile-cache", cache)
    return {"seconds": seconds, "runner_seconds": outcome["seconds"], "compile_seconds": outcome["compile_seconds"]}


def start_up_run() -> dict[str, float]:
    """Wall seconds of each `START_UP` process."""
    return {name: timed(lambda code=code: subprocess.run([sys.executable, "-c", code], check=True))[0]
            for name, code in START_UP.items()}


def api_figures(library: Sequence[Mapping[str, float]], command: Sequence[Mapping[str, float]],
                start_up: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Medians over repeats: wall seconds of both, the runner's share, the rest (start-up,
    imports, set-up: wall less runner) and the start-up processes; the command's wall time
    over the library's."""
    def median(runs: Sequence[Mapping[str, float]], key: str) -> float:
        return float(np.median([r[key] for r in runs]))

    def outside(runs: Sequence[Mapping[str, float]]) -> float:
        return float(np.median([r["seconds"] - r["runner_seconds"] for r in runs]))

    out: dict[str, Any] = {
        "library_seconds": median(library, "seconds"), "command_seconds": median(command, "seconds"),
        "library_runner_seconds": median(library, "runner_seconds"),
        "command_runner_seconds": median(command, "runner_seconds"),
        "library_outside_runner_seconds": outside(library), "command_outside_runner_seconds": outside(command),
        "library_compile_seconds": median(library, "compile_seconds"),
        "command_compile_seconds": median(command, "compile_seconds"),
        **{f"{name}_process_seconds": median(start_up, name) for name in START_UP},
    }
    out["command_vs_library"] = out["command_seconds"] / out["library_seconds"]
    out["library_seconds_all"] = [r["seconds"] for r in library]
    out["command_seconds_all"] = [r["seconds"] for r in command]
    return out


def bench_api(args: argparse.Namespace, path: Path = SWEEPS / "activations.yaml") -> dict[str, Any]:
    """Both once first (the command fills its persistent compilation cache, the library
    compiles in this process), then `--repeats` times each, alternated with the start-up
    processes so that a slow spell of the machine hits all; each run into a store of its own
    kind."""
    library, command, start_up = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cache = str(folder / "xla")
        command_run(path, folder / "command", cache)
        library_run(path, folder / "library")
        for _ in range(args.repeats):
            command.append(command_run(path, folder / "command", cache))
            library.append(library_run(path, folder / "library"))
            start_up.append(start_up_run())
    return {"benchmark": "api", "sweep": str(path), "repeats": args.repeats, **api_figures(library, command, start_up)}


def format_api(result: Mapping[str, Any]) -> str:
    """Both ways as rows (wall, runner, of which compile, and outside-runner seconds), the
    ratio, and a process's start-up."""
    lines = [f"{result['sweep']}, tracked, medians of {result['repeats']}",
             f"{'':<28}{'wall s':>8}{'runner s':>10}{'compile s':>11}{'outside runner s':>18}"]
    for who, label in (("library", "jaxmlp.run_sweep (library)"), ("command", "python -m jaxmlp.sweep")):
        lines.append(f"{label:<28}{result[f'{who}_seconds']:>8.2f}{result[f'{who}_runner_seconds']:>10.2f}"
                     f"{result[f'{who}_compile_seconds']:>11.2f}{result[f'{who}_outside_runner_seconds']:>18.2f}")
    lines += [f"command / library, wall time: {result['command_vs_library']:.2f}x",
              f"a process's start-up: Python alone {result['interpreter_process_seconds']:.2f} s; importing JAX and "
              f"jaxmlp and starting JAX's backend {result['imports_process_seconds']:.2f} s (the command's compile "
              f"reads its programs from the persistent cache; the library's reuses those of its first run)"]
    return "\n".join(lines)
