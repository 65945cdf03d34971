"""The training engine: a pure core that knows nothing of files, MLflow, sweeps or terminals.

Glossary (one word per idea; the file that owns it):
- variant: one model trained from one configuration and seed (`jaxmlp.config.RunConfig`).
- setting: the variants of a sweep that differ only in their seed (`jaxmlp.sweep.spec`).
- structure: what must be equal to share compiled code: widths, optimizer family, batch
  size, loss, ... (`structure`); the numbers (rates, patience: `HParams`) are per-variant
  values on a vmapped axis.
- seed: a variant's identity, not one of its numbers: its slot holds it beside its selected
  activation and initialiser (`families.Selectors`), and its initial parameters and random
  key are drawn from it alone (`state`), so a variant trains the same in any slot of a
  program (at another part width or device split XLA rounds differently).
- program: the compiled code that trains the variants of structures differing at most in
  activation and initialiser (`trainer`, `programs`).
- slot: a row of a program's state that trains one variant at a time (`trainer`); its
  address is its family, its part there and its row in the part (`families.Slot`).
- part: slots vmapped together, skipped as a whole when none trains (`families`).
- family: a program's parts that share one copy of the code (`families`).
- layout: a program's shape: its families' parts and slots, activations, initialisers and
  features (`layout`).
- queue: the variants of a family waiting for a free slot (`trainer`).
- chunk: the variants one call of a program trains, with a queue of their own (a sweep may
  split a program's variants into chunks, `jaxmlp.sweep.plan`).
- population: the variants PBT compares, those of one structure in one program (`search`).

One variant's pieces, each in its module:
`structure` (static structure and vmapped numbers), `state` (training state, initialisation
from the seed), `step` (a minibatch step), `evaluation` (a whole split), `early_stopping`
(an epoch's end). `trainer` compiles them for many slots at once (`programs`: vmapped,
sharded, activations sharing one copy of the code, see `families`), feeds the slots from
queues and runs the epochs; `layout` sizes a program's slots (`plan_slots`) or cuts a group
that trains in lockstep into chunks of one program (`plan_chunks`); `search` stops or copies
variants between epochs (asynchronous and synchronous successive halving, PBT); `results`
is what the trainer hands back.
"""
from jaxmlp.config import NO_PATIENCE
from jaxmlp.engine.early_stopping import early_stopping_update, end_of_epoch
from jaxmlp.engine.evaluation import EVAL_CHUNK, evaluate, final_evaluation
from jaxmlp.engine.layout import Layout, holding_layout, plan_chunks, plan_slots
from jaxmlp.engine.results import GroupResult, VariantResult, variant_history
from jaxmlp.engine.state import EarlyStopping, TrainState, init_bits, init_state, state_from_bits
from jaxmlp.engine.step import apply_model, epoch_randomness, optimizer_of, step_draws, train_step
from jaxmlp.engine.structure import HParams, Structure, hparams_of, merge_key, structure_key, structure_of
from jaxmlp.engine.trainer import Snapshot, SnapshotMismatch, Trainer, release_compiled

__all__ = [
    "EVAL_CHUNK", "NO_PATIENCE", "EarlyStopping", "GroupResult", "HParams", "Layout", "Snapshot",
    "SnapshotMismatch", "Structure", "TrainState", "Trainer", "holding_layout", "plan_chunks", "plan_slots",
    "VariantResult", "apply_model", "early_stopping_update", "end_of_epoch", "epoch_randomness", "evaluate",
    "final_evaluation", "hparams_of", "init_bits", "init_state", "merge_key", "optimizer_of", "release_compiled",
    "state_from_bits", "step_draws", "structure_key", "structure_of", "train_step", "variant_history",
]
