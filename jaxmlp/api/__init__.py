"""The library's public surface, re-exported by `jaxmlp` (see its `__all__`): `fit`
(`jaxmlp.api.fit`), `run_sweep` (`jaxmlp.api.sweeps`), their results as DataFrames, the user's
own data, and typed errors. No argv, exit codes, signal handlers or printing here: the
commands add those. Nothing is imported here, so that a command reaches `run_sweep` before
JAX is imported (its tracking process starts meanwhile)."""
