"""The library's public surface, re-exported by `jaxmlp` (see its `__all__`): `fit`,
`run_sweep`, their results as DataFrames, the user's own data, and typed errors. No argv,
exit codes, signal handlers or printing here: the commands add those."""
from jaxmlp.api.fit import FitResult, Model, fit
from jaxmlp.api.sweeps import run_sweep
from jaxmlp.sweep.result import SweepResult

__all__ = ["FitResult", "Model", "SweepResult", "fit", "run_sweep"]
