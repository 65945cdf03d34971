"""Evaluation of one variant on a whole split: loss, accuracy, dead units per hidden layer."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmlp.data import Split
from jaxmlp.engine.state import TrainState
from jaxmlp.engine.step import apply_model
from jaxmlp.engine.structure import HParams, Structure
from jaxmlp.losses import get_example_loss


#: Splits larger than this are evaluated in chunks, bounding activation memory.
EVAL_CHUNK = 4096


def evaluate(s: Structure, params, hp: HParams, split: Split, choice: int | jax.Array = 0) -> dict[str, jax.Array]:
    """Loss, accuracy (classification) and dead-unit fraction per hidden layer on a whole split.

    Large splits are processed in chunks of EVAL_CHUNK examples (the last one padded and
    masked), so memory does not grow with the split. An empty split (no validation, see
    `data.val_size`) has NaN metrics.
    """
    n = split.x.shape[0]
    if n == 0:
        nan = jnp.float32(jnp.nan)
        metrics = {"loss": nan, "dead_fraction": jnp.full((len(s.hidden),), nan)}
        return {**metrics, "accuracy": nan} if s.task == "classification" else metrics
    chunk = min(n, EVAL_CHUNK)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    mask = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)
    x = jnp.pad(split.x, [(0, pad)] + [(0, 0)] * (split.x.ndim - 1)).reshape(n_chunks, chunk, *split.x.shape[1:])
    y = jnp.pad(split.y, [(0, pad)] + [(0, 0)] * (split.y.ndim - 1)).reshape(n_chunks, chunk, *split.y.shape[1:])
    example_loss = get_example_loss(s.loss, s.task)

    def chunk_sums(args):
        xc, yc, mc = args
        out, hidden = apply_model(s, params, xc, hp, return_hidden=True, choice=choice)
        sums = {"loss": jnp.sum(jnp.where(mc, example_loss(out, yc), 0.0)),
                "alive": tuple(jnp.any((h != 0) & mc[:, None], axis=0) for h in hidden)}
        if s.task == "classification":
            sums["correct"] = jnp.sum(jnp.where(mc, jnp.argmax(out, -1) == yc, False))
        return sums

    sums = jax.lax.map(chunk_sums, (x, y, mask))
    dead = [jnp.mean(~jnp.any(alive, axis=0)) for alive in sums["alive"]]
    metrics = {"loss": sums["loss"].sum() / n, "dead_fraction": jnp.stack(dead) if dead else jnp.zeros((0,))}
    if s.task == "classification":
        metrics["accuracy"] = sums["correct"].sum() / n
    return metrics


def final_evaluation(s: Structure, state: TrainState, hp: HParams, train: Split, test: Split,
                     choice: int | jax.Array = 0):
    """Selected parameters (best on validation, or the last ones) with their test metrics and,
    for the generalisation gap, their training-split metrics in evaluation mode."""
    params = jax.tree_util.tree_map(lambda best, last: jnp.where(hp.restore_best, best, last),
                                    state.best_params, state.params)
    return params, evaluate(s, params, hp, test, choice), evaluate(s, params, hp, train, choice)
