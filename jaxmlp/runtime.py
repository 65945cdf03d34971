"""Process set-up that the commands do before they train: cache folders, XLA flags, and
JAX's persistent compilation cache.

Everything global lives here, called by the commands (`python -m jaxmlp.train`, `.sweep`,
`.bench`) at their start; the engine never changes global configuration itself.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

#: The environment variable naming the cache root, and the root's default.
CACHE_ENV = "JAXMLP_CACHE_DIR"
DEFAULT_CACHE_ROOT = "~/.cache/jaxmlp"

#: The `--compile-cache` option's help, for every command that takes it.
COMPILE_CACHE_HELP = (f"persistent XLA compilation cache (default: ${CACHE_ENV}/xla or "
                      f"{DEFAULT_CACHE_ROOT}/xla)")

_DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"

#: The help of a command's `--json` option, `what` its object.
JSON_HELP = ("print {} as one JSON object on stdout (strict JSON: a NaN or infinite number, e.g. of a "
             "diverged variant, is null)")


def json_line(value: Any) -> str:
    """`value` as strict JSON (RFC 8259, which has no NaN): every NaN or infinite number as
    null, numpy numbers as Python's; what JSON has no form for as its text."""
    return json.dumps(_finite(value), allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return value


def cache_root(option: str | None = None) -> Path:
    """Where jaxmlp caches prepared data and compiled programs: `option`, else
    $JAXMLP_CACHE_DIR, else ~/.cache/jaxmlp."""
    return Path(option or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT).expanduser()


def compile_cache_dir(option: str | None = None) -> str:
    """The compilation cache folder: `option` (a command's --compile-cache), else <cache root>/xla."""
    return str(Path(option).expanduser() if option else cache_root() / "xla")


def enable_compilation_cache(path: str) -> None:
    """Persist every compiled program in `path`, so a repeated run compiles nothing."""
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def use_one_cpu_device_per_core() -> None:
    """One XLA CPU device per core, so small variants can be sharded across cores. It only
    affects the CPU platform, must run before JAX starts, and keeps a count already set."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_COUNT_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --{_DEVICE_COUNT_FLAG}={os.cpu_count() or 1}".strip()
