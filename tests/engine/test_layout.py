"""Layouts: a large group cut into chunks that all run one compiled program."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxmlp.engine import Layout, Trainer, plan_chunks

from tests.helpers import ROOT
from tests.helpers.engine import assert_same_run, fit


def _grid(make_config, activations, seeds, **overrides):
    return [make_config({"model.activation": a, "training.seed": s, **overrides}) for a in activations for s in seeds]


@pytest.mark.parametrize("n_activations, n_seeds, cap, devices, part_size, n_parts, chunk_parts", [
    (5, 80, 64, 1, 40, 1, [1] * 10),        # 80 seeds cut into two parts of 40, one part per program
    (5, 10, 64, 1, 10, 5, [5]),             # everything fits one program
    (3, 7, 8, 2, 8, 1, [1, 1, 1]),          # parts padded to a multiple of the devices
    (7, 3, 9, 1, 3, 3, [3, 3, 1]),          # the last chunk is filled up with frozen parts
    (5, 400, 64, 1, 58, 1, [1] * 35),       # 400 = 6 x 58 + 52: 1.5% padding (8 x 50 would take 40 programs)
])
def test_plan_chunks_cuts_groups_into_equal_programs(make_config, n_activations, n_seeds, cap, devices, part_size,
                                                     n_parts, chunk_parts):
    activations = ["relu", "tanh", "elu", "sigmoid", "leaky_relu", "selu", "gelu"][:n_activations]
    configs = _grid(make_config, activations, range(n_seeds))
    layout, chunks = plan_chunks(configs, cap, cap, devices)
    assert (layout.part_size, layout.n_parts) == (part_size, n_parts)
    assert layout.activations == tuple(activations)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(configs)))
    parts = [-(-len([i for i in chunk if configs[i].model.activation == a]) // part_size)
             for chunk in chunks for a in activations]
    assert [sum(parts[k * n_activations:(k + 1) * n_activations]) for k in range(len(chunks))] == chunk_parts
    assert all(len(chunk) <= layout.n_variants <= max(cap, part_size) for chunk in chunks)


def test_initialisers_and_features_of_the_whole_group_go_into_the_layout(make_config):
    configs = [make_config({"model.activation": "tanh"}), make_config({"model.dropout": 0.3}),
               make_config({"model.init": "lecun_uniform", "optimizer.max_norm": 2.0})]
    layout, _ = plan_chunks(configs, 64)
    assert layout.initializers == ("glorot_uniform", "he_normal", "lecun_uniform")
    assert layout.features == {"use_dropout", "use_max_norm"}


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_chunks_of_one_layout_compile_once_and_equal_variants_trained_alone(make_config, synthetic_data):
    configs = _grid(make_config, ["relu", "tanh", "elu"], range(3), **{"model.dropout": 0.1})
    layout, chunks = plan_chunks(configs, 6)
    assert (layout.part_size, layout.n_parts, len(chunks)) == (3, 2, 2)
    trainers = []
    for chunk in chunks:
        trainer = Trainer([configs[i] for i in chunk], synthetic_data, layout=layout)
        trainer.compile()
        for _ in trainer.run():
            pass
        trainers.append(trainer)
    assert [t.reused_programs for t in trainers] == [False, True]
    assert trainers[1].families[0].shape == (2, 3) and len(chunks[1]) == 3  # a part's slots stay empty
    results = [r for t in trainers for r in t.result.variants]
    assert len(results) == len(configs)
    for i, r in zip((i for chunk in chunks for i in chunk), results):
        assert r.config == configs[i]
        assert_same_run(r, fit([configs[i]], synthetic_data).variants[0], exact=False)


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_frozen_variants_leave_the_others_bit_identical(make_config, synthetic_data):
    """What a resumed program relies on: variants finished earlier never take a slot, and the
    others' numbers do not change in the last digit (the program keeps its shape)."""
    configs = _grid(make_config, ["relu", "tanh"], range(3))
    layout, (chunk,) = plan_chunks(configs, 64)

    def train(frozen):
        trainer = Trainer(configs, synthetic_data, layout=layout, frozen=frozen)
        records = list(trainer.run())
        return trainer.result, records

    everything, _ = train(None)
    frozen = [False, True, False, True, False, False]
    resumed, records = train(frozen)
    kept = [v for v, f in zip(everything.variants, frozen) if not f]
    assert [v.config for v in resumed.variants] == [c for c, f in zip(configs, frozen) if not f]
    for a, b in zip(resumed.variants, kept):
        assert_same_run(a, b, exact=True)
    assert not any(r["trained"][[1, 3]].any() for r in records)
    assert all(set(r["finished"]) <= {0, 2, 4, 5} for r in records)


def test_a_part_outside_the_layout_is_refused(make_config, synthetic_data):
    layout = Layout(part_size=2, families=((make_config(), 1),), activations=("relu",), initializers=("he_normal",))
    with pytest.raises(ValueError, match="tanh"):
        Trainer([make_config({"model.activation": "tanh"})], synthetic_data, layout=layout)


def test_a_noisy_family_rides_in_the_same_program_and_chunks_lacking_it_get_a_frozen_one(make_config, synthetic_data):
    configs = _grid(make_config, ["relu", "tanh"], range(4)) + _grid(make_config, ["noisy_relu"], range(2))
    layout, chunks = plan_chunks(configs, 2, 4)
    assert [n for _, n in layout.families] == [2, 1] and layout.part_size == 2
    assert [[configs[i].model.activation for i in chunk] for chunk in chunks] == [
        ["relu"] * 4 + ["noisy_relu"] * 2, ["tanh"] * 4]
    trainers = [Trainer([configs[i] for i in chunk], synthetic_data, layout=layout) for chunk in chunks]
    assert [f.n_parts for t in trainers for f in t.families] == [2, 1, 2, 1]
    assert not trainers[1]._queues[1] and trainers[1]._host_inputs[1][1].frozen.all()  # its noisy slots stay empty
    assert trainers[0]._key == trainers[1]._key  # one compiled program serves both


def test_frozen_mask_must_match_the_configs(make_config, synthetic_data):
    with pytest.raises(ValueError, match="frozen"):
        Trainer([make_config()], synthetic_data, frozen=np.array([False, True]))


@pytest.mark.parametrize("seeds, devices, part_size, slots", [
    ({"relu": 4, "sigmoid": 2}, 1, 2, 6),    # 3 parts of 2, not 2 parts of 4 (8 slots, 2 of them padding)
    ({"relu": 6, "sigmoid": 4}, 2, 6, 12),   # parts of 4 or 6 train 12 slots: the wider wins the tie
    ({"relu": 64, "sigmoid": 1}, 1, 32, 96),  # at most halved: parts of 1 would pad nothing, but run 65 parts
    ({"relu": 2, "sigmoid": 1}, 1, 2, 4),    # two parts of 2, not three of 1: a lone variant uses the device worse
    ({"relu": 1, "sigmoid": 1}, 1, 1, 2),    # the widest is one: parts of one
])
def test_the_part_size_trains_the_fewest_padding_slots(make_config, seeds, devices, part_size, slots):
    configs = [make_config({"model.activation": a, "training.seed": s}) for a, n in seeds.items() for s in range(n)]
    layout, chunks = plan_chunks(configs, 64, 64, devices)
    assert layout.part_size == part_size
    counts = [sum(configs[i].model.activation == a for i in chunk) for chunk in chunks for a in seeds]
    assert sum(-(-n // part_size) * part_size for n in counts) == slots  # frozen filler parts are skipped
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(configs)))


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_layout_fingerprint_is_the_same_in_every_process():
    """Snapshot names hold it: a repr of its frozenset of features changes with the hash seed."""
    code = ("from jaxmlp.sweep.spec import load_sweep; from jaxmlp.sweep.plan import plan_groups; "
            "g = plan_groups(load_sweep('experiments/dropout_srivastava2014/cpu.yaml'))[2]; "
            "print(len(g.layout.features), g.layout.fingerprint)")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}, timeout=120).stdout
            for seed in (1, 2, 4)}
    assert len(outs) == 1 and outs.pop().startswith("3 ")
