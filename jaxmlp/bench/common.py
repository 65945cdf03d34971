"""What the benchmarks share: the matmul peak, timing a call, sweeps run in this process or
as the sweep command in a fresh one, the project's sweep files as dicts, and figures as text."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

#: The project's sweep files (`sweeps/`), beside the package.
SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds `fn()` took, and what it returned."""
    tic = time.perf_counter()
    value = fn()
    return time.perf_counter() - tic, value


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Float32 FLOP/s of the best of `repeats` jitted n x n matrix products."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = min(timed(lambda: f(a, a).block_until_ready())[0] for _ in range(repeats))
    return 2 * n**3 / best


def peak_memory_bytes() -> int:
    """Peak device memory where the backend reports it, else the process's peak RSS."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sweep_spec(name: str) -> dict[str, Any]:
    """The project's `sweeps/<name>` as a dict, to change as a benchmark needs."""
    return yaml.safe_load((SWEEPS / name).read_text())


def migrated_store(folder: Path) -> Path:
    """An empty MLflow SQLite store at `folder`/mlflow.db, created and migrated (about 1.7 s of
    CPU, which a project pays once per store), to copy into the folders of `in_process` runs."""
    from jaxmlp.tracking import Tracker
    from jaxmlp.tracking.logs import quiet_mlflow_logging

    folder.mkdir(parents=True, exist_ok=True)
    quiet_mlflow_logging()
    Tracker(f"sqlite:///{folder}/mlflow.db").client
    return folder / "mlflow.db"


def in_process(spec: Any, folder: Path | None = None, store: Path | None = None) -> tuple[float, Any]:
    """Wall time of `jaxmlp.run_sweep(spec)` in this process and its `SweepResult`: tracked
    into `folder`/mlflow.db (a copy of `store` where given, `migrated_store`'s, else new), or
    untracked without a folder."""
    import shutil

    import jaxmlp

    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        if store:
            shutil.copyfile(store, folder / "mlflow.db")
    tracking = {"tracking_uri": f"sqlite:///{folder}/mlflow.db"} if folder else {"tracking": False}
    return timed(lambda: jaxmlp.run_sweep(spec, **tracking))


def as_process(spec: Mapping[str, Any] | Path, folder: Path, *options: str) -> tuple[float, dict[str, Any]]:
    """Wall time of `python -m jaxmlp.sweep` in a fresh process (start-up and imports included),
    tracked into `folder`/mlflow.db, and its --json outcome; a dict spec is written to
    `folder`/sweep.yaml first."""
    folder.mkdir(parents=True, exist_ok=True)
    if not isinstance(spec, Path):
        (folder / "sweep.yaml").write_text(yaml.safe_dump(dict(spec), sort_keys=False))
        spec = folder / "sweep.yaml"
    cmd = [sys.executable, "-m", "jaxmlp.sweep", str(spec), "--json", "--no-progress",
           "--tracking-uri", f"sqlite:///{folder}/mlflow.db", *options]
    seconds, done = timed(lambda: subprocess.run(cmd, capture_output=True, text=True, cwd=folder))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def mean_test_accuracy(result) -> float:
    """The mean test accuracy of a sweep's variants that have one."""
    return float(result.frame()["test_accuracy"].mean())


def best_setting(result) -> dict[str, Any]:
    """The summary row of the setting with the lowest mean validation loss over its seeds
    (chosen on validation, as a user would)."""
    rows = result.summary().dropna(subset=["best_val_loss"])
    return rows.loc[rows["best_val_loss"].idxmin()].to_dict()


def mean_and_std(runs: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """Per key: the mean over `runs` (key) and their standard deviation (key_std)."""
    out: dict[str, float] = {}
    for key in keys:
        values = [r[key] for r in runs]
        out[key], out[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    return out


def shown(value: Any) -> str:
    """A figure as text: floats (alone or in lists) to four significant digits."""
    if isinstance(value, list):
        return ", ".join(map(shown, value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_figures(result: Mapping[str, Any]) -> str:
    """One `key  value` line per figure."""
    width = max(map(len, result))
    return "\n".join(f"{key:<{width}}  {shown(value)}" for key, value in result.items())


def format_columns(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of figures as right-aligned columns under their keys."""
    columns = list(rows[0])
    cells = [[shown(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [columns, *cells])
