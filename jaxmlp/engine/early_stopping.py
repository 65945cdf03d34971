"""Early stopping inside the compiled loop: an epoch's end for one variant (validation, the
best parameters so far, patience, freezing of stopped or diverged variants)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmlp.data import Split
from jaxmlp.engine.evaluation import evaluate
from jaxmlp.engine.state import EarlyStopping, TrainState
from jaxmlp.engine.structure import HParams, Structure
from jaxmlp.optim import momentum_at


def early_stopping_update(es: EarlyStopping, metric: jax.Array, epoch: jax.Array,
                          min_delta: jax.Array) -> tuple[EarlyStopping, jax.Array]:
    """Track the best (lowest) monitored metric; returns the new state and whether it improved."""
    improved = metric < es.best_metric - min_delta
    return EarlyStopping(
        best_metric=jnp.where(improved, metric, es.best_metric),
        best_epoch=jnp.where(improved, epoch, es.best_epoch),
        bad_epochs=jnp.where(improved, 0, es.bad_epochs + 1),
    ), improved


def end_of_epoch(s: Structure, state: TrainState, hp: HParams, carry, metrics, next_key: jax.Array,
                 val: Split, choice: int | jax.Array = 0) -> tuple[TrainState, dict[str, jax.Array]]:
    """Validate, update early stopping and freeze: one variant, after its minibatch steps of
    its epoch `state.epoch + 1` (the variant's own count). It stops after `s.epochs` epochs.

    A variant that is no longer active keeps its state unchanged; one whose loss turns
    NaN or infinite, or exceeds `divergence_factor` times its loss before the first update
    (the first minibatch's), keeps its last sane state and is marked diverged. Without a
    validation split (empty `val`) no epoch improves: the variant trains its whole budget.
    """
    params, opt_state, step = carry
    losses, accs, lrs = metrics
    epoch = state.epoch + 1
    val_metrics = evaluate(s, params, hp, val, choice)
    train_loss = losses.mean()
    initial_loss = jnp.where(jnp.isnan(state.initial_loss), losses[0], state.initial_loss)
    bound = hp.divergence_factor * initial_loss
    finite = jnp.isfinite(train_loss) & (train_loss <= bound)
    if val.x.shape[0]:  # without a validation split, the training loss alone tells divergence
        finite = finite & jnp.isfinite(val_metrics["loss"]) & (val_metrics["loss"] <= bound)
    monitored = val_metrics["loss"] if s.monitor == "val_loss" else -val_metrics["accuracy"]
    es, improved = early_stopping_update(state.es, monitored, epoch, hp.min_delta)
    best_params = jax.tree_util.tree_map(lambda new, old: jnp.where(improved, new, old), params, state.best_params)
    proceed = state.active & finite
    still_active = proceed & (es.bad_epochs < hp.patience) & (epoch < s.epochs)
    candidate = TrainState(params, opt_state, next_key, step, epoch, best_params, es, still_active, state.diverged,
                           state.stopped_epoch, initial_loss)
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(proceed, new, old), candidate, state)
    new_state = new_state._replace(
        epoch=jnp.where(state.active, epoch, state.epoch),  # a diverged epoch counts, its state does not
        active=still_active,
        diverged=state.diverged | (state.active & ~finite),
        stopped_epoch=jnp.where(state.active & ~still_active, epoch, state.stopped_epoch),
    )
    record = {
        "trained": state.active, "train_loss": train_loss, "train_accuracy": accs.mean(),
        "val_loss": val_metrics["loss"], "val_accuracy": val_metrics.get("accuracy", jnp.float32(jnp.nan)),
        "val_ece": val_metrics.get("ece", jnp.float32(jnp.nan)),
        "dead_fraction": val_metrics["dead_fraction"], "learning_rate": lrs[-1],
        "momentum": (momentum_at(step - 1, s.steps_per_epoch, hp.momentum, hp.momentum_start, hp.momentum_ramp_epochs)
                     if s.optimizer in ("sgd", "rmsprop") else jnp.float32(jnp.nan)),
        "active": new_state.active, "diverged": new_state.diverged, "best_epoch": new_state.es.best_epoch,
        "variant_epoch": epoch,
    }
    return new_state, record
