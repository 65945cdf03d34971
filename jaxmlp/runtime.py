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
import re
import sys
import warnings
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
    """Persist every compiled program in `path`, so a repeated run compiles nothing; an entry
    that cannot be read is replaced (`UnreadableEntries`)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if isinstance(warnings.showwarning, UnreadableEntries):
        warnings.showwarning.folder = Path(path)
    else:
        warnings.showwarning = UnreadableEntries(Path(path), warnings.showwarning)


class UnreadableEntries:
    """Removes a compilation cache entry that JAX cannot read (truncated by a process killed
    while writing it, or garbage), at JAX's warning about it.

    JAX then compiles the program and writes it to the cache, but never over an entry that
    exists: left in place, the entry would cost every later run the warning and the compile.
    Removed at the warning, the new program takes its place. The warning names the program
    (or the entry), so every entry of that program goes (its other shapes compile once more);
    one line on stderr says so instead of JAX's warning. Installed as `warnings.showwarning`,
    which passes every other warning to the one it replaced.
    """

    WARNING = re.compile(r"Error reading persistent compilation cache entry for '([^']+)': (.*)", re.DOTALL)

    def __init__(self, folder: Path, shown) -> None:
        self.folder, self.shown = folder, shown

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        found = self.WARNING.match(str(message))
        if found is None:
            self.shown(message, category, filename, lineno, file, line)
            return
        name, error = found.groups()
        self.remove(name)
        print(f"warning: the compilation cache entry of {name} in {self.folder} could not be read "
              f"({error.splitlines()[0] if error else 'no reason given'}); it was removed, the program is compiled "
              "and cached again", file=sys.stderr)

    def remove(self, name: str) -> list[Path]:
        """The cache files of program `name` (or of the entry of that key), removed."""
        entry = re.compile(rf"{re.escape(name)}(-[0-9a-f]+)?-(cache|atime)")
        removed = [p for p in self.folder.iterdir() if entry.fullmatch(p.name)] if self.folder.is_dir() else []
        for path in removed:
            path.unlink(missing_ok=True)
        return removed


def use_one_cpu_device_per_core() -> None:
    """One XLA CPU device per core, so small variants can be sharded across cores. It only
    affects the CPU platform, must run before JAX starts, and keeps a count already set."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _DEVICE_COUNT_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --{_DEVICE_COUNT_FLAG}={os.cpu_count() or 1}".strip()
