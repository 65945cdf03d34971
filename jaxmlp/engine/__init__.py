"""The training engine: a pure core that knows nothing of files, MLflow, sweeps or terminals.

One variant's pieces, each in its module:
`structure` (static structure and vmapped numbers), `state` (training state, initialisation
from the seed), `step` (a minibatch step), `evaluation` (a whole split), `early_stopping`
(an epoch's end). `trainer` compiles them for many variants at once (`programs`: vmapped,
sharded, activations sharing one copy of the code, see `families`) and runs the epochs;
`layout` cuts a large group into chunks that all run one compiled program; `search` stops
or copies variants between epochs (successive halving, PBT); `results` is what the trainer
hands back.
"""
from jaxmlp.config import NO_PATIENCE
from jaxmlp.engine.early_stopping import early_stopping_update, end_of_epoch
from jaxmlp.engine.evaluation import EVAL_CHUNK, evaluate, final_evaluation
from jaxmlp.engine.layout import Layout, plan_chunks
from jaxmlp.engine.results import GroupResult, VariantResult, variant_history
from jaxmlp.engine.state import EarlyStopping, TrainState, init_bits, init_state, state_from_bits
from jaxmlp.engine.step import apply_model, epoch_randomness, optimizer_of, step_draws, train_step
from jaxmlp.engine.structure import (HParams, Structure, hparams_of, hparams_type, merge_key, structure_key,
                                     structure_of)
from jaxmlp.engine.trainer import Snapshot, SnapshotMismatch, Trainer

__all__ = [
    "EVAL_CHUNK", "NO_PATIENCE", "EarlyStopping", "GroupResult", "HParams", "Layout", "Snapshot",
    "SnapshotMismatch", "Structure", "TrainState", "Trainer", "plan_chunks",
    "VariantResult", "apply_model", "early_stopping_update", "end_of_epoch", "epoch_randomness", "evaluate",
    "final_evaluation", "hparams_of", "hparams_type", "init_bits", "init_state", "merge_key", "optimizer_of",
    "state_from_bits", "step_draws", "structure_key", "structure_of", "train_step", "variant_history",
]
