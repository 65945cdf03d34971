"""Continuous batching: slots fed by queues, each variant on its own clock."""
from __future__ import annotations

import numpy as np
import pytest

from jaxmlp.engine import Layout, Trainer
from jaxmlp.engine.layout import plan_slots
from jaxmlp.engine.search import AsyncHalving, SuccessiveHalving

from tests.helpers.engine import assert_same_run

EPOCHS = 24


def _layout(template, parts: int, size: int, activations=("relu",), inits=("he_normal",), features=()):
    return Layout(part_size=size, families=((template, parts),), activations=tuple(activations),
                  initializers=tuple(inits), features=frozenset(features))


def _train(configs, data, layout, **kwargs):
    trainer = Trainer(configs, data, layout=layout, **kwargs)
    records = list(trainer.run())
    return trainer, records


SCHEDULES = {
    "constant": {},
    "cosine": {"optimizer.schedule": "cosine"},
    "exponential with warm-up": {"optimizer.schedule": "exponential", "optimizer.decay_rate": 0.8,
                                 "optimizer.warmup_epochs": 3},
    "momentum ramp": {"optimizer.name": "sgd", "optimizer.learning_rate": 0.05, "optimizer.momentum": 0.9,
                      "optimizer.momentum_start": 0.5, "optimizer.momentum_ramp_epochs": 6},
}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_a_variant_entering_slot_3_after_epoch_9_equals_it_alone(make_config, synthetic_data, schedule):
    """Its schedule, momentum ramp, shuffles, dropout draws and epoch numbers are its own."""
    base = {"training.epochs": EPOCHS, "model.dropout": 0.3, "training.early_stopping.patience": None,
            **SCHEDULES[schedule]}
    busy = [make_config({**base, "training.seed": s}) for s in range(3)]
    # improves once (its first epoch), never again by 10: stops after exactly 9 epochs, frees slot 3
    blocker = make_config({**base, "training.seed": 3, "training.early_stopping.patience": 8,
                           "training.early_stopping.min_delta": 10.0})
    late = make_config({**base, "training.seed": 7, "training.early_stopping.patience": 4})
    layout = _layout(late, 1, 4, features=("use_dropout",))
    trainer, records = _train([*busy, blocker, late], synthetic_data, layout)
    entered = [r["epoch"] for r in records if 4 in r["started"]]
    assert entered == [10] and records[9]["trained"][4] and not records[8]["trained"][4]
    assert trainer.result.variants[3].stopped_epoch == 9
    alone, _ = _train([late], synthetic_data, layout)
    together = trainer.result.variants[4]
    assert [row["epoch"] for row in together.history] == list(range(1, together.epochs_trained + 1))
    assert_same_run(together, alone.result.variants[0], exact=True)


def test_slots_take_the_queue_in_turn_and_count_what_they_trained(make_config, synthetic_data):
    configs = [make_config({"training.epochs": EPOCHS, "training.seed": s, "optimizer.learning_rate": lr,
                            "training.early_stopping.patience": p})
               for s, (lr, p) in enumerate([(0.05, 1), (0.01, None), (0.02, 2), (0.1, 1), (0.03, 3), (0.005, 2)])]
    trainer, records = _train(configs, synthetic_data, _layout(configs[0], 1, 2))
    assert [i for r in records for i in r["started"]] == list(range(6))  # in the order given
    assert all(r["trained"].sum() <= 2 and r["slot_epochs"] == 2 for r in records)
    finished = [i for r in records for i in r["finished"]]
    assert sorted(finished) == list(range(6))
    results = trainer.result.variants
    assert sum(int(r["trained"].sum()) for r in records) == sum(v.epochs_trained for v in results)
    assert results[1].epochs_trained == EPOCHS  # the budget stops it in the compiled loop
    assert len(records) < sum(v.epochs_trained for v in results)  # the slots trained side by side


def test_the_tail_is_compacted_into_as_few_parts_as_it_fills(make_config, synthetic_data):
    lasting = {"training.early_stopping.patience": None}
    quick = {"training.early_stopping.patience": 2, "training.early_stopping.min_delta": 10.0}  # 3 epochs
    kinds = [quick, lasting, quick, quick, lasting]  # rows: [0 1] [2 3]; 4 waits and enters part 0
    configs = [make_config({"training.epochs": EPOCHS, "training.seed": s, **k}) for s, k in enumerate(kinds)]
    layout = _layout(configs[0], 2, 2)
    trainer, records = _train(configs, synthetic_data, layout)
    # after epoch 3 the quick ones leave: 4 enters; then 1 and 4 remain in one part, the other skipped
    assert records[3]["slot_epochs"] == 2 and records[-1]["slot_epochs"] == 2
    assert records[0]["slot_epochs"] == 4
    for i in (1, 4):
        alone, _ = _train([configs[i]], synthetic_data, layout)
        assert_same_run(trainer.result.variants[i], alone.result.variants[0], exact=True)


def test_a_program_resumed_mid_queue_equals_the_uninterrupted_one(make_config, synthetic_data):
    configs = [make_config({"training.epochs": EPOCHS, "training.seed": s, "model.dropout": 0.2,
                            "training.early_stopping.patience": p}) for s, p in enumerate([2, 5, 1, 3, 2, 4])]
    layout = _layout(configs[0], 1, 2, features=("use_dropout",))
    whole, _ = _train(configs, synthetic_data, layout)
    first = Trainer(configs, synthetic_data, layout=layout)
    run = first.run()
    for record in run:
        if record["epoch"] == 6:
            snapshot = first.snapshot()
            break
    assert snapshot.queues[0] and any(s >= 0 for s in snapshot.slots[0].reshape(-1))
    done = set(snapshot.finished)
    frozen = [i in done for i in range(len(configs))]
    resumed = Trainer(configs, synthetic_data, layout=layout, frozen=frozen)
    records = list(resumed.run(resume=snapshot))
    assert records[0]["epoch"] == 7
    by_config = {id(v.config): v for v in resumed.result.variants}
    for v in whole.result.variants:
        if id(v.config) in by_config:
            assert_same_run(by_config[id(v.config)], v, exact=True)
    assert len(by_config) == len(configs) - len(done)


def _record(trained, epochs, losses, active=None, diverged=None):
    n = len(trained)
    return {"trained": np.asarray(trained, bool), "variant_epoch": np.asarray(epochs),
            "val_loss": np.asarray(losses, float), "active": np.ones(n, bool) if active is None else np.asarray(active),
            "diverged": np.zeros(n, bool) if diverged is None else np.asarray(diverged)}


def test_asynchronous_halving_judges_a_setting_when_its_seeds_reach_the_rung():
    # settings a (variants 0, 1), b (2, 3), c (4, 5); rung 2, keep half
    halving = AsyncHalving(SuccessiveHalving(rungs=(2,), keep=0.5), np.array([0, 0, 1, 1, 2, 2]))
    nan = np.nan
    assert halving.after_epoch(None, _record([1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [.5, .6, nan, nan, nan, nan])) == []
    # a reaches the rung first: alone at it, it goes on
    assert halving.after_epoch(None, _record([1, 1, 1, 0, 0, 0], [2, 2, 1, 0, 0, 0], [.4, .5, .3, nan, nan, nan])) == []
    # b's first seed reaches it, its second is one epoch behind: nothing decided yet
    assert halving.after_epoch(None, _record([0, 0, 1, 1, 0, 0], [0, 0, 2, 1, 0, 0], [nan, nan, .2, .3, nan, nan])) == []
    # b complete (mean .2 < a's .45): b is in the best half of two and goes on
    assert halving.after_epoch(None, _record([0, 0, 1, 1, 1, 1], [0, 0, 3, 2, 1, 1], [nan, nan, .1, .2, .9, .9])) == []
    # c reaches it worst of three: only the best one of three goes on, c stops
    assert halving.after_epoch(None, _record([0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 2, 2], [nan] * 4 + [.8, .8])) == [4, 5]


def test_asynchronous_halving_ranks_an_accuracy_higher_first_and_a_diverged_seed_last():
    halving = AsyncHalving(SuccessiveHalving(rungs=(1,), keep=0.5, metric="val_accuracy"), np.array([0, 1, 2]))
    record = _record([1, 0, 0], [1, 0, 0], [nan := np.nan] * 3)
    record["val_accuracy"] = np.array([0.6, nan, nan])
    assert halving.after_epoch(None, record) == []
    record = _record([0, 1, 1], [0, 1, 1], [nan] * 3, diverged=[False, False, True])
    record["val_accuracy"] = np.array([nan, 0.9, 0.99])
    # variant 1 (0.9 > 0.6) goes on: the better of two; the diverged one ranks last of three and stops
    assert halving.after_epoch(None, record) == [2]


@pytest.mark.parametrize("activations, seeds, devices, cap, shapes", [
    (["relu", "tanh", "elu", "sigmoid"], 16, 1, None, [(11, 2)]),  # 64 variants: 22 slots in parts of 2
    (["relu", "noisy_relu"], 5, 1, None, [(2, 2), (2, 2)]),         # 5 per family: at least 4 slots each
    (["relu"], 40, 2, None, [(7, 2)]),                              # 14 slots, parts a multiple of 2 devices
    (["relu"], 3, 1, None, [(2, 2)]),                               # a few variants: all at once
    (["relu"], 300, 1, 20, [(2, 7)]),     # 100 slots wanted (16 parts at most: of 7), the memory's 20 allow 14
    (["relu"], 64, 1, 1, [(1, 1)]),                                 # one at a time
])
def test_plan_slots_gives_each_family_about_a_third_of_its_variants_as_slots(make_config, activations, seeds, devices,
                                                                              cap, shapes):
    configs = [make_config({"model.activation": a, "training.seed": s}) for a in activations for s in range(seeds)]
    layout = plan_slots(configs, 64, cap, devices)
    assert [layout.family_shape(k) for k in range(len(layout.families))] == shapes
    assert layout.activations == tuple(activations)
