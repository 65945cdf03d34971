"""jaxmlp: a functional JAX toolkit for multilayer perceptrons with experiment tracking.

    import jaxmlp
    result = jaxmlp.fit({"model.hidden": [64, 64]}, (X, y), seeds=[0, 1, 2])
    result.frame(); result.predict(X_new)
    sweep = jaxmlp.run_sweep({"name": "acts", "grid": {"model.activation": ["relu", "tanh"]}, "seeds": 3})
    sweep.summary()

The names below are imported on first use, so `import jaxmlp` (and every command's start)
stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "fit": "jaxmlp.api.fit",                    # train variants in this process: fit(config, data) -> FitResult
    "FitResult": "jaxmlp.api.fit",              # .frame(), .history(), .best, .predict(X), .save(folder)
    "Model": "jaxmlp.api.fit",                  # one trained variant: .predict, .predict_proba, .save
    "run_sweep": "jaxmlp.api.sweeps",           # a tracked sweep from a dict or YAML file -> SweepResult
    "SweepResult": "jaxmlp.sweep.result",       # .frame(), .summary(), .histories(), .best, run and experiment ids
    "Dataset": "jaxmlp.data",                   # Dataset.from_arrays(X, y), Dataset.from_frame(df, target=...)
    "RunConfig": "jaxmlp.config",               # the typed configuration of one trained model
    "ConfigError": "jaxmlp.config",             # an invalid configuration value (key, bad value, allowed values)
    "SweepError": "jaxmlp.sweep.errors",        # an invalid sweep (file or dict); nothing was trained
    "DataError": "jaxmlp.data.errors",          # unusable data (file, column, fix); nothing was compiled
    "StoreUnavailable": "jaxmlp.sweep.runner",  # the tracking store cannot be used; nothing was trained
    "ResumeRefused": "jaxmlp.sweep.runs",       # resume=True would mix two different sweeps
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxmlp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
