"""Process set-up: the persistent compilation cache replaces an entry it cannot read."""
from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmlp.runtime import UnreadableEntries, enable_compilation_cache

CACHE_HIT = "/jax/compilation_cache/cache_hits"


def corrupted_cache_probe(x):
    """A program of its own name, so that its cache entries are this test's alone."""
    return jnp.tanh(x) * 3.0 - x


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("jit_corrupted_cache_probe-*-cache"))


@pytest.mark.parametrize("damage", [lambda data: data[:len(data) // 3], lambda data: b"\x00garbage" * 40],
                         ids=["truncated", "garbage"])
def test_an_unreadable_compile_cache_entry_is_replaced_with_one_warning(session_compile_cache, capfd, damage):
    enable_compilation_cache(session_compile_cache)  # its hook, under this test's warnings
    folder, x = Path(session_compile_cache), jnp.arange(5.0)
    fn = jax.jit(corrupted_cache_probe)
    expected = np.asarray(fn(x))
    (entry,) = _entries(folder)
    damaged = damage(entry.read_bytes())
    entry.write_bytes(damaged)
    hits: list[str] = []

    def listen(event: str, **_) -> None:
        if event == CACHE_HIT:
            hits.append(event)

    jax.monitoring.register_event_listener(listen)
    try:
        capfd.readouterr()
        jax.clear_caches()
        np.testing.assert_array_equal(fn(x), expected)  # the damaged entry: read, removed, compiled, cached
        warned = capfd.readouterr().err.strip().splitlines()
        assert hits == [] and len(warned) == 1, warned
        assert "compilation cache entry of jit_corrupted_cache_probe" in warned[0] and str(folder) in warned[0]
        (again,) = _entries(folder)  # the program written again (its compile time in it differs)
        assert again.name == entry.name and again.read_bytes() != damaged

        jax.clear_caches()
        np.testing.assert_array_equal(fn(x), expected)  # the next run of it reads the cache
        assert hits == [CACHE_HIT] and capfd.readouterr().err == ""
    finally:
        jax.monitoring.unregister_event_listener(listen)


def test_the_cache_hook_passes_other_warnings_on_and_is_installed_once(session_compile_cache, tmp_path):
    enable_compilation_cache(session_compile_cache)
    enable_compilation_cache(str(tmp_path))
    hook = warnings.showwarning
    assert isinstance(hook, UnreadableEntries) and not isinstance(hook.shown, UnreadableEntries)
    assert hook.folder == tmp_path
    shown = []
    hook.shown = lambda *args: shown.append(args[0])
    names = ["jit_step-0a1b-cache", "jit_step-0a1b-atime", "jit_step_2-0a1b-cache", "jit_stepper-cache", "other"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    warnings.warn("something else")
    warnings.warn("Error reading persistent compilation cache entry for 'jit_step': error: Error -3")
    enable_compilation_cache(session_compile_cache)
    assert [str(m) for m in shown] == ["something else"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jit_step_2-0a1b-cache", "jit_stepper-cache", "other"]
