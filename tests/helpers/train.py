"""Shared by the train command's tests: the command in this process, and JAX's global
compilation-cache settings (which the command changes) restored afterwards."""
from __future__ import annotations

import contextlib
import io
from typing import Iterator

import jax

from jaxmlp import train

_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes")


def run_main(argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m jaxmlp.train ARGV`, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def jax_cache_settings_restored() -> Iterator[None]:
    saved = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    try:
        yield
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
