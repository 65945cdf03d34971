"""Helpers shared by the engine's tests (test_train.py, test_trainer.py)."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxmlp import engine
from jaxmlp.engine import GroupResult, Trainer, VariantResult


def fit(configs, data, devices: int = 1) -> GroupResult:
    """Train `configs` (one structure) to the end and return their results."""
    trainer = Trainer(configs, data, devices=devices)
    for _ in trainer.run():
        pass
    return trainer.result


def one_variant(cfg) -> engine.HParams:
    """The hyperparameters of a single variant, without the leading variant axis."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[0], engine.hparams_of([cfg]))


def replay_early_stopping(curve, patience, min_delta):
    """(best_epoch, stop_epoch or None) that a validation curve implies, in float32 like the engine."""
    best, best_epoch, bad = np.float32(np.inf), 0, 0
    for epoch, value in enumerate(np.asarray(curve, np.float32), start=1):
        if value < best - np.float32(min_delta):
            best, best_epoch, bad = value, epoch, 0
        else:
            bad += 1
        if patience is not None and bad >= patience:
            return best_epoch, epoch
    return best_epoch, None


def assert_same_run(a: VariantResult, b: VariantResult, exact: bool) -> None:
    close = np.testing.assert_array_equal if exact else partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)
    assert (a.best_epoch, a.stopped_epoch, a.epochs_trained, a.diverged) == \
        (b.best_epoch, b.stopped_epoch, b.epochs_trained, b.diverged)
    assert len(a.history) == len(b.history)
    for ra, rb in zip(a.history, b.history):
        assert ra.keys() == rb.keys()
        close([ra[k] for k in ra if k != "epoch_seconds"], [rb[k] for k in rb if k != "epoch_seconds"])
    assert a.test.keys() == b.test.keys()
    close([a.test[k] for k in a.test], [b.test[k] for k in a.test])
    assert jax.tree_util.tree_structure(a.params) == jax.tree_util.tree_structure(b.params)
    for pa, pb in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        close(pa, pb)


def kernel_column_norms(params) -> list[jax.Array]:
    return [jnp.linalg.norm(leaf, axis=0) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if path[-1].key == "kernel"]
