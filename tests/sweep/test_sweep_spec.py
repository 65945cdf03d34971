"""Sweep files: deterministic expansion, identities, grouping into programs, and errors that say what to type."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmlp.sweep.plan import describe_plan, plan_groups
from jaxmlp.sweep.spec import SweepError, load_sweep, n_variants

from tests.helpers.sweep import TINY_BASE, run_sweep_cli, write_sweep


def _load(tmp_path: Path, **spec):
    return load_sweep(write_sweep(tmp_path, {"name": "s", "base": TINY_BASE, **spec}))


def _values(sweep, *keys: str) -> list[tuple]:
    return [(*(v.config.flat()[k] for k in keys), v.seed) for v in sweep.variants]


def test_grid_is_the_product_in_file_order_last_key_fastest_seeds_innermost(tmp_path):
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "tanh"], "model.dropout": [0.0, 0.5]}, seeds=2)
    assert _values(sweep, "model.activation", "model.dropout") == [
        ("relu", 0.0, 0), ("relu", 0.0, 1), ("relu", 0.5, 0), ("relu", 0.5, 1),
        ("tanh", 0.0, 0), ("tanh", 0.0, 1), ("tanh", 0.5, 0), ("tanh", 0.5, 1)]
    assert [v.index for v in sweep.variants] == list(range(8))
    assert [v.config.training.seed for v in sweep.variants] == [v.seed for v in sweep.variants]
    assert [k for k, _ in sweep.variants[0].setting] == ["model.activation", "model.dropout"]
    assert sweep.variants[2].label == "model.activation=relu, model.dropout=0.5"
    assert sweep.variants[2].run_name == "relu · drop 0.5 · seed 0"
    assert all(v.config.model.hidden == (16,) and v.config.optimizer.name == "sgd" for v in sweep.variants)


def test_zip_advances_lists_together_inside_the_grid(tmp_path):
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "elu"]},
                  zip={"optimizer.learning_rate": [0.01, 0.1], "model.dropout": [0.1, 0.2]}, seeds=[7])
    assert _values(sweep, "model.activation", "optimizer.learning_rate", "model.dropout") == [
        ("relu", 0.01, 0.1, 7), ("relu", 0.1, 0.2, 7), ("elu", 0.01, 0.1, 7), ("elu", 0.1, 0.2, 7)]


def test_zip_lists_of_different_lengths_are_refused(tmp_path):
    with pytest.raises(SweepError, match=r"zip: every list must have the same length "
                                         r"\(got model.dropout: 2, optimizer.learning_rate: 1\)"):
        _load(tmp_path, zip={"model.dropout": [0.1, 0.2], "optimizer.learning_rate": [0.1]})


RANDOM = {"samples": 200, "seed": 3, "params": {
    "optimizer.learning_rate": {"loguniform": [1e-4, 1.0]},
    "model.dropout": {"uniform": [0.1, 0.3]},
    "model.activation": {"choice": ["relu", "tanh", "elu"]},
    "training.early_stopping.patience": {"int": [2, 4]},
}}


def test_random_samples_are_reproducible_within_ranges_and_loguniform_in_log_space(tmp_path):
    first = _values(_load(tmp_path, random=RANDOM), "optimizer.learning_rate", "model.dropout",
                    "model.activation", "training.early_stopping.patience")
    again = _values(_load(tmp_path, random=RANDOM), "optimizer.learning_rate", "model.dropout",
                    "model.activation", "training.early_stopping.patience")
    other = _values(_load(tmp_path, random={**RANDOM, "seed": 4}), "optimizer.learning_rate")
    assert first == again and len(first) == 200
    assert [r[0] for r in first] != [r[0] for r in other]
    lr, dropout, activation, patience, _ = (np.array(c) for c in zip(*first))
    assert lr.min() >= 1e-4 and lr.max() <= 1.0
    assert -2.5 < np.median(np.log10(lr)) < -1.5  # uniform in log space: median near 1e-2, not 0.5
    assert dropout.min() >= 0.1 and dropout.max() <= 0.3
    assert set(activation) == {"relu", "tanh", "elu"}
    assert set(patience.tolist()) == {2, 3, 4}  # both ends included


@pytest.mark.parametrize("dist, message", [
    ({"uniform": [0.1, 0.2], "loguniform": [0.1, 1.0]},
     r"random.params.optimizer.learning_rate: give exactly one of choice, uniform, loguniform, int "
     r"\(got uniform, loguniform\)"),
    ({"loguniform": [0.0, 1.0]}, r"random.params.optimizer.learning_rate.loguniform: \[0.0, 1.0\] must be positive"),
    ({"uniform": [-1.0, -0.5]}, r"(?s)random.params.optimizer.learning_rate\[0\].*greater than 0"),
    ({"loguniform": [1e-4, float("inf")]}, r"(?s)random.params.optimizer.learning_rate.loguniform.*finite number"),
    ({"uniform": [float("nan"), 0.1]}, r"(?s)random.params.optimizer.learning_rate.uniform.*finite number"),
])
def test_bad_random_distributions_are_refused(tmp_path, dist, message):
    with pytest.raises(SweepError, match=message):
        _load(tmp_path, random={"samples": 2, "params": {"optimizer.learning_rate": dist}})


@pytest.mark.parametrize("seeds, expected", [(3, [0, 1, 2]), ([5, 2], [5, 2]), (1, [0])])
def test_seeds_as_a_count_or_a_list(tmp_path, seeds, expected):
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "tanh"]}, seeds=seeds)
    assert [v.seed for v in sweep.variants] == expected * 2
    assert [v.config.training.seed for v in sweep.variants] == expected * 2


@pytest.mark.parametrize("seeds", [0, -1, [], [1, 1], [0, -2], [2**32], [0, 2**64]])
def test_bad_seeds_are_refused(tmp_path, seeds):
    """Seeds are uint32: 2**32 and beyond failed the whole group with an OverflowError."""
    with pytest.raises(SweepError, match=r"seeds: .*give a positive count or a list of distinct integers in "
                                         r"0\.\.4294967295"):
        _load(tmp_path, seeds=seeds)


def test_zip_gives_each_setting_its_own_seeds(tmp_path):
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "elu"]},
                  zip={"model.dropout": [0.0, 0.5, 0.2], "seeds": [2, 1, [4, 9]]})
    assert _values(sweep, "model.activation", "model.dropout") == [
        ("relu", 0.0, 0), ("relu", 0.0, 1), ("relu", 0.5, 0), ("relu", 0.2, 4), ("relu", 0.2, 9),
        ("elu", 0.0, 0), ("elu", 0.0, 1), ("elu", 0.5, 0), ("elu", 0.2, 4), ("elu", 0.2, 9)]
    assert [k for k, _ in sweep.variants[0].setting] == ["model.activation", "model.dropout"]  # seeds are no setting
    assert n_variants(sweep.spec) == len(sweep.variants) == 10
    assert "6 settings x 1-2 seeds" in describe_plan(sweep, plan_groups(sweep), budget=2**30)


@pytest.mark.parametrize("spec, message", [
    ({"zip": {"model.dropout": [0.0, 0.5], "seeds": [2, 0]}},
     r"zip.seeds\[1\]: 0; give a positive count or a list of distinct integers in 0\.\.4294967295"),
    ({"zip": {"model.dropout": [0.0, 0.5], "seeds": [2, [1, 1]]}}, r"zip.seeds\[1\]: \[1, 1\]; give"),
    ({"zip": {"model.dropout": [0.0, 0.5], "seeds": [2, "x"]}}, r"zip.seeds\[1\]: 'x'; give"),
    ({"zip": {"model.dropout": [0.0, 0.5], "seeds": [None, 2]}}, r"zip.seeds\[0\]: None; give"),
    ({"zip": {"model.dropout": [0.0, 0.5], "seeds": [2]}}, r"zip: every list must have the same length"),
    ({"zip": {"model.dropout": [0.0, 0.5], "seeds": [2, 3]}, "seeds": 3},
     r"seeds: 3 and zip.seeds both give seeds; keep the top-level 'seeds' .* or zip.seeds"),
    ({"zip": {"seeds": [2, 3]}}, r"zip.seeds: gives seeds to zipped settings, but zip varies nothing else"),
])
def test_bad_zipped_seeds_are_refused(tmp_path, spec, message):
    with pytest.raises(SweepError, match=message):
        _load(tmp_path, **spec)


def test_zip_names_its_settings_and_the_name_stands_for_the_zipped_values(tmp_path):
    spec = {"grid": {"optimizer.learning_rate": [0.01, 0.1]},
            "zip": {"name": ["small", "wide + dropout"], "model.hidden": [[16], [64]], "model.dropout": [0.0, 0.5],
                    "seeds": [1, 2]}}
    named, plain = _load(tmp_path, **spec), _load(tmp_path, **{**spec, "zip": {
        k: v for k, v in spec["zip"].items() if k != "name"}})
    # the same variants, the same identities (a name is no configuration)
    assert [v.key for v in named.variants] == [v.key for v in plain.variants]
    assert _values(named, "optimizer.learning_rate", "model.hidden", "model.dropout") == [
        (0.01, [16], 0.0, 0), (0.01, [64], 0.5, 0), (0.01, [64], 0.5, 1),
        (0.1, [16], 0.0, 0), (0.1, [64], 0.5, 0), (0.1, [64], 0.5, 1)]
    assert [dict(v.setting) for v in named.variants[:2]] == [
        {"name": "small", "optimizer.learning_rate": 0.01}, {"name": "wide + dropout", "optimizer.learning_rate": 0.01}]
    assert named.variants[1].label == "wide + dropout, optimizer.learning_rate=0.01"
    assert plain.variants[1].label == "optimizer.learning_rate=0.01, model.hidden=64, model.dropout=0.5"
    assert named.variants[2].run_name == "wide + dropout · lr 0.01 · seed 1"
    assert n_variants(named.spec) == len(named.variants) == 6
    alone = _load(tmp_path, zip={"name": ["a", "b"], "model.dropout": [0.0, 0.5]})
    assert [v.label for v in alone.variants] == ["a", "b"]


@pytest.mark.parametrize("zipped, message", [
    ({"name": ["a", "a"], "model.dropout": [0.0, 0.5]}, r"zip.name\[1\]: 'a' is also zip.name\[0\]; each setting"),
    ({"name": ["a", ""], "model.dropout": [0.0, 0.5]}, r"zip.name\[1\]: ''; each setting's name must be a non-empty"),
    ({"name": ["a", 3], "model.dropout": [0.0, 0.5]}, r"zip.name\[1\]: 3; each setting's name must be"),
    ({"name": ["a", "x" * 101], "model.dropout": [0.0, 0.5]},
     r"zip.name\[1\]: 'x{59}\.\.\. \(103 characters\); .* at most 100 characters"),
    ({"name": ["a"], "model.dropout": [0.0, 0.5]}, r"zip: every list must have the same length"),
    ({"name": ["a", "b"], "seeds": [1, 2]}, r"zip.name: names zipped settings, but zip varies nothing"),
])
def test_bad_zipped_names_are_refused(tmp_path, zipped, message):
    with pytest.raises(SweepError, match=message):
        _load(tmp_path, zip=zipped)


def test_variant_keys_are_stable_distinct_and_change_with_seed_and_values(tmp_path):
    spec = {"grid": {"model.activation": ["relu", "tanh"]}, "zip": {"model.dropout": [0.0, 0.2]}, "seeds": 3}
    keys = [v.key for v in _load(tmp_path, **spec).variants]
    assert keys == [v.key for v in _load(tmp_path, **spec).variants]
    assert len(set(keys)) == len(keys) == 12 and all(len(k) == 16 for k in keys)
    # the same configuration reached another way (value in base instead of on an axis) has the same key
    base = {**TINY_BASE, "model": {"hidden": [16], "activation": "tanh", "dropout": 0.2}}
    same = load_sweep(write_sweep(tmp_path, {"name": "t", "base": base, "seeds": [1]}))
    assert same.variants[0].key == keys[10]  # tanh, dropout 0.2, seed 1


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"model.activation": ["relu", "relu"]}}, r"the same configuration; remove the duplicate value"),
    ({"grid": {"model.dropout": [0, 0.0]}},
     r"variants 'drop 0 · seed 0' and 'drop 0 · seed 0' have the same configuration"),
    ({"grid": {"model.dropout": [0.1, 0.2]}, "zip": {"model.dropout": [0.3]}},
     r"model.dropout: varied in both grid and zip"),
    ({"random": {"samples": 3, "params": {"model.activation": {"choice": ["relu"]}}}},
     r"for random, use fewer samples or a continuous distribution"),
])
def test_duplicate_variants_are_refused(tmp_path, spec, message):
    """Two variants with one key would share one MLflow run identity; the sweep says so up front."""
    with pytest.raises(SweepError, match=message):
        _load(tmp_path, **spec)


def test_sweep_hash_ignores_comments_and_layout_but_not_content(tmp_path):
    block = """\
name: h
# a comment
base:
  model:
    hidden: [16]     # widths
grid:
  model.activation:
    - relu
    - tanh
seeds: 2
"""
    flow = "{name: h, base: {model: {hidden: [16]}}, grid: {model.activation: [relu, tanh]}, seeds: 2}\n"
    changed = block.replace("seeds: 2", "seeds: 3")
    hashes = []
    for i, text in enumerate([block, flow, changed]):
        (tmp_path / f"{i}.yaml").write_text(text)
        hashes.append(load_sweep(tmp_path / f"{i}.yaml").hash)
    assert hashes[0] == hashes[1] != hashes[2]
    described = block.replace("name: h", "name: h\ndescription: new words")
    (tmp_path / "3.yaml").write_text(described)
    assert load_sweep(tmp_path / "3.yaml").hash != hashes[0]


def _group_sizes(sweep, n_devices: int = 1) -> list[int]:
    return [len(g.variants) for g in plan_groups(sweep, n_devices)]


def test_numeric_differences_never_split_a_program(tmp_path):
    sweep = _load(tmp_path, grid={"model.dropout": [0.0, 0.3], "optimizer.learning_rate": [0.01, 0.1],
                                  "optimizer.momentum": [0.0, 0.9], "training.early_stopping.patience": [2, 5]},
                  seeds=3)
    groups = plan_groups(sweep)
    assert [len(g.variants) for g in groups] == [48] and groups[0].n_structures == 1
    assert [v.index for v in groups[0].variants] == list(range(48))


def test_activations_share_one_program_as_separate_structures(tmp_path):
    sweep = _load(tmp_path, grid={"model.activation": ["sigmoid", "tanh", "relu", "leaky_relu", "elu"]}, seeds=2)
    (group,) = plan_groups(sweep)
    assert (len(group.variants), group.n_structures) == (10, 5)


@pytest.mark.parametrize("search, queued", [
    ({"scheduler": "successive_halving", "min_epochs": 2, "asynchronous": False}, False),
    ({"scheduler": "pbt", "interval": 2, "perturb": {"optimizer.learning_rate": [0.8, 1.25]}}, False),
    ({"scheduler": "successive_halving", "min_epochs": 2}, True),
    (None, True),
])
def test_structures_of_one_program_never_split(tmp_path, search, queued):
    """relu x 3 and tanh x 2 of wide nets over many epochs: one program. In lockstep (a
    synchronous search) every variant has a slot; otherwise the slots are fed by a queue, so
    no slot is padding."""
    base = {**TINY_BASE, "model": {"hidden": [2048, 2048]}, "training": {**TINY_BASE["training"], "epochs": 1000}}
    spec = {"name": "s", "base": base, "zip": {"model.activation": ["relu", "tanh"], "seeds": [3, 2]},
            **({"search": search} if search else {})}
    (group,) = plan_groups(load_sweep(write_sweep(tmp_path, spec)))
    assert len(group.variants) == 5 and group.queued is queued
    assert [v.index for v in group.variants] == list(range(5))


@pytest.mark.parametrize("seeds, shapes, queued", [
    (2, [(2, 2), (1, 2)], False),  # all at once: 4 relu/tanh, 2 noisy ReLU
    (6, [(2, 2), (2, 2)], True),   # at least 4 slots per family
    (30, [(10, 2), (5, 2)], True),  # a third: 20 and 10 slots in parts of 2
])
def test_a_program_queues_its_variants_when_they_can_stop_early(tmp_path, seeds, shapes, queued):
    """About a third of a family's variants as slots, at least 4 or all of them."""
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "tanh", "noisy_relu"]}, seeds=seeds)
    (group,) = plan_groups(sweep)
    assert len(group.variants) == 3 * seeds and group.queued is queued
    assert [group.layout.family_shape(k) for k in range(len(group.layout.families))] == shapes


@pytest.mark.parametrize("key, values", [
    ("model.hidden", [[16], [32], [16, 16]]),
    ("optimizer.name", ["sgd", "adam", "rmsprop"]),
    ("training.batch_size", [32, 64, 128]),
])
def test_structural_differences_split_programs(tmp_path, key, values):
    sweep = _load(tmp_path, grid={key: values, "model.activation": ["relu", "tanh"]}, seeds=2)
    groups = plan_groups(sweep)
    assert [len(g.variants) for g in groups] == [4, 4, 4]
    assert [g.n_structures for g in groups] == [2, 2, 2]
    assert [{str(v.config.flat()[key]) for v in g.variants} for g in groups] == [{str(v)} for v in values]
    assert len({g.id for g in groups}) == 3


def test_max_variants_per_program_bounds_the_slots_and_the_rest_queue(tmp_path):
    sweep = _load(tmp_path, grid={"model.dropout": [0.0, 0.1, 0.2, 0.3]}, seeds=2,
                  execution={"max_variants_per_program": 3})
    (group,) = plan_groups(sweep)
    assert len(group.variants) == 8 and group.layout.n_slots <= 3 and group.queued
    assert [v.index for v in group.variants] == list(range(8))


def test_chunks_split_a_queue_and_share_one_compiled_program(tmp_path):
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "tanh", "elu"]}, seeds=10,
                  execution={"chunks": 3})
    groups = plan_groups(sweep)
    assert [len(g.variants) for g in groups] == [10, 10, 10]
    assert {g.program for g in groups} == {"p0"} and len({g.layout for g in groups}) == 1
    assert groups[0].layout.activations == ("relu", "tanh", "elu")
    assert sorted(v.index for g in groups for v in g.variants) == list(range(30))


def test_program_slots_follow_the_memory_budget(tmp_path):
    """On a small fake budget, a program gets as many slots as the estimate says; the rest queue."""
    sweep = _load(tmp_path, grid={"model.dropout": [0.0, 0.1, 0.2, 0.3]}, seeds=16)
    (whole,) = plan_groups(sweep, budget=2**30)
    footprint = whole.footprint
    assert (len(whole.variants), whole.layout.n_slots) == (64, 22)  # a third of 64: 11 parts of 2
    small = footprint.data + 2 * footprint.transient + 8 * footprint.state  # 4 parts of 2 slots
    (group,) = plan_groups(sweep, budget=small)
    assert group.layout.n_slots == 8 and group.memory_bytes <= small and len(group.variants) == 64
    assert footprint.max_variants(small, 2) == 8 and footprint.max_variants(small - 1, 2) == 6


def test_devices_per_group_follow_the_execution_mode(tmp_path):
    small = {"grid": {"model.dropout": [0.0, 0.1]}, "seeds": 2}
    assert [g.devices for g in plan_groups(_load(tmp_path, **small), n_devices=2)] == [2]
    assert [g.devices for g in plan_groups(_load(tmp_path, **small, execution={"devices": "one"}), 2)] == [1]
    assert [g.devices for g in plan_groups(_load(tmp_path, **small), n_devices=1)] == [1]
    wide = {**TINY_BASE, "model": {"hidden": [4096, 4096]}}
    sweep = load_sweep(write_sweep(tmp_path, {"name": "w", "base": wide, **small}))
    assert [g.devices for g in plan_groups(sweep, n_devices=2)] == [1]  # wide: keep one device busy
    sweep = load_sweep(write_sweep(tmp_path, {"name": "w", "base": wide, **small, "execution": {"devices": "all"}}))
    assert [g.devices for g in plan_groups(sweep, n_devices=2)] == [2]


def test_describe_plan_lists_variants_programs_and_structures(tmp_path):
    sweep = _load(tmp_path, grid={"model.hidden": [[16], [32, 8]], "model.activation": ["relu", "tanh"]}, seeds=3)
    text = describe_plan(sweep, plan_groups(sweep), budget=2**30)
    lines = text.splitlines()
    assert lines[0] == (f"sweep 's' ({sweep.path}): 12 variants = 4 settings x 3 seeds; 2 group(s), "
                        "2 compiled program(s); memory budget 1.0 GiB per device")
    assert lines[1].split() == ["group", "variants", "structures", "devices", "params", "program", "parts", "slots",
                                "queued", "memory", "structure"]
    assert len(lines) == 4
    assert lines[2].split()[1:9] == ["6", "2", "1", "1,210", "p0", "2x2", "4", "2"]
    assert lines[2].endswith("digits 16 relu/tanh sgd batch 64")
    assert lines[3].split()[1:9] == ["6", "2", "1", "2,434", "p1", "2x2", "4", "2"]
    assert lines[3].endswith("digits 32-8 relu/tanh sgd batch 64")


def test_dry_run_prints_the_plan_and_touches_no_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = write_sweep(tmp_path, {"name": "dry", "base": TINY_BASE, "grid": {"model.activation": ["relu", "tanh"]},
                                  "seeds": 2})
    result = run_sweep_cli(path, "--dry-run", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.code == 0, result.err
    assert result.out.startswith(f"sweep 'dry' ({path}): 4 variants = 2 settings x 2 seeds; 1 group(s), "
                                 "1 compiled program(s)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dry.yaml"]


# -- errors: exit code 2, a message naming the file, key path, bad value and what is allowed; no store --

BAD_FILES = {
    "syntax": ("name: s\nbase: {data: [digits\ngrid: {}\n",
               [r"not valid YAML", r"line 2, column 14", r"expected ',' or '\]'"]),
    "top-level key": ("name: s\ngird:\n  model.activation: [relu]\n",
                      [r"gird: unknown key \(did you mean 'grid'\?\)",
                       r"allowed keys: name, description, base, grid, zip, random, optimize, objectives, seeds, execution"]),
    "dotted key": ("name: s\ngrid:\n  model.activaton: [relu, tanh]\n",
                   [r"grid.model.activaton: unknown configuration key \(did you mean 'model.activation'\?\)"]),
    "base key": ("name: s\nbase:\n  model: {hiden: [3]}\n",
                 [r"base: ", r"model.hiden: unknown key \(did you mean 'hidden'\?\)",
                  r"allowed keys: hidden, activation, init"]),
    "wrong type": ("name: s\nbase:\n  training: {epochs: ten}\n",
                   [r"base: ", r"training.epochs: bad value 'ten': Input should be a valid integer"]),
    "axis not a list": ("name: s\ngrid:\n  model.activation: relu\n",
                        [r"grid.model.activation: bad value 'relu': Input should be a valid list"]),
    "activation": ("name: s\ngrid:\n  model.activation: [relu, tanhh]\n",
                   [r"grid.model.activation\[1\]", r"'tanhh' is not allowed \(did you mean 'tanh'\?\)",
                    r"allowed values: sigmoid, tanh, relu, leaky_relu, noisy_relu, elu"]),
    "bad number": ("name: s\nzip:\n  optimizer.learning_rate: [0.1, -1]\n",
                   [r"zip.optimizer.learning_rate\[1\]", r"bad value -1: Input should be greater than 0"]),
    "empty axis": ("name: s\ngrid:\n  model.dropout: []\n",
                   [r"grid.model.dropout: empty list; give at least one value"]),
    "seed axis": ("name: s\ngrid:\n  training.seed: [1, 2]\n",
                  [r"grid.training.seed: vary seeds with the top-level 'seeds' key instead"]),
    "execution": ("name: s\nexecution: {devices: many}\n",
                  [r"execution.devices: 'many' is not allowed; allowed values: auto, one, all"]),
    "name": ("name: my sweep\n", [r"name: bad value 'my sweep'"]),
    "reversed uniform": ("name: s\nrandom: {samples: 2, params: {model.dropout: {uniform: [0.5, 0.1]}}}\n",
                         [r"random.params.model.dropout.uniform: \[0.5, 0.1\] is reversed; give \[low, high\], "
                          r"e.g. \[0.1, 0.5\]"]),
    "reversed int": ("name: s\nrandom: {samples: 2, params: {training.epochs: {int: [9, 3]}}}\n",
                     [r"random.params.training.epochs.int: \[9, 3\] is reversed"]),
    "empty choice": ("name: s\nrandom: {samples: 2, params: {model.activation: {choice: []}}}\n",
                     [r"random.params.model.activation.choice: empty list"]),
    "batch larger than the training split": (
        "name: s\nbase: {data: {name: digits}, training: {batch_size: 5000}}\n",
        [r"training.batch_size: 5000 \(in 'seed 0'\) exceeds the 1,222 training samples of digits; "
         r"use at most 1,222"]),
    "too many variants": (
        "name: s\ngrid:\n" + "".join(f"  {k}: [{', '.join(str(0.01 * (i + 1)) for i in range(10))}]\n" for k in (
            "model.dropout", "model.input_dropout", "model.leaky_slope", "model.elu_alpha", "optimizer.momentum",
            "optimizer.weight_decay", "optimizer.learning_rate")),
        [r"the sweep expands to 10,000,000 variants \(grid.model.dropout: 10 x .* x seeds: 1\), above "
         r"execution.max_variants = 50,000; .*raise execution.max_variants"]),
    "anchor bomb": ("name: s\ndescription: &a [x, x, x, x, x, x, x, x, x, x]\n"
                    + "".join(f"d{i}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)),
                    [r"its YAML aliases \(&anchor / \*alias\) expand to [\d,]+ values, above the limit of 100,000"]),
    "long bad value": ("name: '" + "x y" * 5000 + "'\n", [r"name: bad value 'x yx y.*\.\.\. \(15,002 characters\)"]),
    "not a mapping": ("- name\n- s\n", [r"expected a mapping with keys name, description, base, grid"]),
    "key given twice in base": (
        "name: s\nbase:\n  model: {hidden: [16]}\n  model: {activation: tanh}\n",
        [r"line 4: key 'model' is given twice in one mapping \(first on line 3\); keep one"]),
    "grid axis given twice": (
        "name: s\ngrid:\n  model.activation: [relu, tanh]\n  model.activation: [elu]\n",
        [r"line 4: key 'model.activation' is given twice in one mapping \(first on line 3\)"]),
    "seeds given twice": ("name: s\nseeds: 2\nseeds: 3\n", [r"line 3: key 'seeds' is given twice"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_sweep_file_exits_2_with_a_message_and_leaves_the_store_alone(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    text, patterns = BAD_FILES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_sweep_cli(path, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--no-progress")
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith(f"error: {path}: "), result.err
    for pattern in patterns:
        assert any(re.search(pattern, line) for line in result.err.splitlines()), (pattern, result.err)
    assert "<unicode string>" not in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no mlflow.db, no mlruns


def test_the_unknown_key_hint_suggests_only_keys_a_grid_takes(tmp_path):
    """The hint named training.seed, which a grid refuses (seeds are the top-level 'seeds')."""
    from jaxmlp.config import load_config

    with pytest.raises(SweepError) as err:
        load_sweep(write_sweep(tmp_path, {"name": "hint", "grid": {"model.activaton": ["relu"]}}))
    suggested = str(err.value).rsplit("keys look like ", 1)[1].split(", ")
    assert len(suggested) == 3 and "training.seed" not in suggested
    defaults = load_config({}).flat()
    for key in suggested:  # each one a grid axis, given its default value
        (variant,) = load_sweep(write_sweep(tmp_path, {"name": "hint", "grid": {key: [defaults[key]]}})).variants
        assert variant.config.flat()[key] == defaults[key]


def test_error_messages_stay_short_whatever_the_value(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("name: '" + "x y" * 5000 + "'\n")
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert len(str(err.value)) < 1000


def test_oversized_files_are_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: s\nseeds: [" + ", ".join(map(str, range(300_000))) + "]\n")
    with pytest.raises(SweepError, match=r"huge.yaml: [\d,]+ bytes; sweep files are limited to 1,048,576 bytes"):
        load_sweep(path)


@pytest.mark.parametrize("case", ["too many variants", "anchor bomb"])
def test_bombs_are_refused_within_a_small_memory_budget(tmp_path, case):
    """Refused from the axes' sizes and the YAML node count, before anything is expanded: the
    process grows by well under 200 MB (a 10^7-variant grid or an expanded bomb would take GBs)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BAD_FILES[case][0])
    code = ("import resource, sys\n"
            "from jaxmlp.sweep.spec import SweepError, load_sweep, n_variants\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_sweep(sys.argv[1])\nexcept SweepError:\n"
            "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert int(done.stdout) * 1024 < 200 * 2**20


def test_variants_are_counted_from_the_axes(tmp_path):
    sweep = _load(tmp_path, grid={"model.activation": ["relu", "tanh"], "model.dropout": [0.0, 0.5]},
                  zip={"optimizer.learning_rate": [0.1, 0.2, 0.3], "optimizer.momentum": [0.0, 0.5, 0.9]},
                  random={"samples": 2, "params": {"model.leaky_slope": {"uniform": [0.01, 0.3]}}}, seeds=[3, 4])
    assert n_variants(sweep.spec) == len(sweep.variants) == 2 * 2 * 3 * 2 * 2


def test_a_larger_sweep_is_allowed_when_the_file_raises_the_limit(tmp_path):
    grid = {"model.dropout": [0.0, 0.1, 0.2], "optimizer.learning_rate": [0.1, 0.2]}
    with pytest.raises(SweepError, match=r"expands to 6 variants .* above execution.max_variants = 5"):
        _load(tmp_path, grid=grid, execution={"max_variants": 5})
    assert len(_load(tmp_path, grid=grid, execution={"max_variants": 6}).variants) == 6


@pytest.mark.parametrize("search, message", [
    ({"scheduler": "asha"}, r"search.scheduler: 'asha' is not allowed; allowed values: successive_halving, pbt"),
    ({"scheduler": "successive_halving", "rungs": [4, 2]},
     r"search.rungs: \[4, 2\]; give increasing epochs between 1 and 7 \(the epoch budget is 8\)"),
    ({"scheduler": "successive_halving", "rungs": [2, 8]}, r"search.rungs: \[2, 8\]; give increasing epochs"),
    ({"scheduler": "successive_halving"}, r"search: give rungs .* or min_epochs with reduction_factor"),
    ({"scheduler": "successive_halving", "rungs": [2], "interval": 3},
     r"search.interval: not a successive_halving key; its keys are scheduler, metric, rungs, min_epochs"),
    ({"scheduler": "pbt", "interval": 2, "quantile": 0.7, "perturb": {"optimizer.learning_rate": [0.8, 1.25]}},
     r"search.quantile: 0.7; give a fraction in \(0, 0.5\]"),
    ({"scheduler": "pbt", "interval": 2, "perturb": {"model.hidden": [0.5, 2]}},
     r"search.perturb.model.hidden: not a number that can change during training; allowed keys: .*model.dropout"),
    ({"scheduler": "pbt", "interval": 2, "perturb": {"training.seed": [0.5, 2]}},
     r"search.perturb.training.seed: not a number"),
    ({"scheduler": "pbt", "perturb": {"model.dropout": [0.5, 2]}}, r"search.interval: missing"),
    ({"scheduler": "pbt", "interval": 2, "perturb": {"model.dropout": [0.0, 2]}},
     r"search.perturb.model.dropout: \[0.0, 2.0\]; give positive factors"),
    ({"scheduler": "pbt", "interval": 2, "rungs": [2], "perturb": {"model.dropout": [0.5]}},
     r"search.rungs: not a pbt key"),
])
def test_bad_search_sections_are_refused_before_training(tmp_path, search, message):
    with pytest.raises(SweepError, match=message):
        _load(tmp_path, grid={"model.dropout": [0.0, 0.2]}, search=search)


def test_search_sections_become_the_engines_schedulers(tmp_path):
    halving = _load(tmp_path, grid={"model.dropout": [0.0, 0.2]}, search={
        "scheduler": "successive_halving", "min_epochs": 1, "reduction_factor": 2}).search
    assert (halving.rungs, halving.keep, halving.metric, halving.aggregate) == ((1, 2, 4), 0.5, "val_loss", "mean")
    pbt = _load(tmp_path, random={"samples": 4, "params": {"optimizer.learning_rate": {"loguniform": [1e-3, 1e-1]}}},
                search={"scheduler": "pbt", "interval": 2, "perturb": {"optimizer.learning_rate": [0.8, 1.25],
                                                                      "model.dropout": [0.9, 1.1]},
                        "resample_probability": 0.25, "metric": "val_accuracy"}).search
    assert (pbt.interval, pbt.quantile, pbt.metric, pbt.resample_probability) == (2, 0.25, "val_accuracy", 0.25)
    assert set(pbt.resample) == {"optimizer.learning_rate"}
    assert 1e-3 <= pbt.resample["optimizer.learning_rate"](np.random.default_rng(0)) <= 1e-1
    assert pbt.bounds["model.dropout"][0] == 0 and pbt.bounds["model.dropout"][1] < 1
    assert _load(tmp_path).search is None


def test_missing_sweep_file_exits_2(tmp_path):
    result = run_sweep_cli(tmp_path / "nope.yaml", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db")
    assert (result.code, result.err) == (2, f"error: {tmp_path / 'nope.yaml'}: no such sweep file\n")
    assert not (tmp_path / "mlflow.db").exists()


def test_error_names_the_file_not_a_stream(tmp_path):
    """A YAML syntax error points at the file by its path (line and column included)."""
    path = tmp_path / "broken.yaml"
    path.write_text("name: s\nseeds: [1, 2\n")
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert f'in "{path}", line' in str(err.value)


def test_missing_data_fails_before_anything_is_logged_and_dry_run_reports_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    path = write_sweep(tmp_path, {"name": "nodata", "base": {
        **TINY_BASE, "data": {"name": "mnist", "data_dir": str(empty), "cache_dir": str(tmp_path / "cache")}},
        "grid": {"model.activation": ["relu", "tanh"]}})
    result = run_sweep_cli(path, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--no-progress")
    assert result.code == 2 and result.out == ""
    assert result.err.startswith(f"error: {path}: base.data (mnist): ") and "train-images-idx3-ubyte.gz (missing)" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-mnist", "nodata.yaml"]  # no store, no cache
    dry = run_sweep_cli(path, "--dry-run")
    assert dry.code == 0 and f"data: {path}: base.data (mnist): " in dry.out


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    """`<<:` merges a mapping whose keys the explicit ones override: not a key given twice."""
    path = tmp_path / "merge.yaml"
    path.write_text("name: s\nbase:\n  data: {name: digits}\n  model: {hidden: [16]}\n"
                    "  training: {epochs: 2, <<: {epochs: 3, batch_size: 32}}\n")
    (variant,) = load_sweep(path).variants
    assert (variant.config.training.epochs, variant.config.training.batch_size) == (2, 32)


def test_the_plan_counts_in_the_singular_where_there_is_one(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"name": "one", "base": TINY_BASE}))
    assert describe_plan(sweep, plan_groups(sweep), budget=2**30).startswith(
        f"sweep 'one' ({sweep.path}): 1 variant = 1 setting x 1 seed; 1 group(s)")


def test_a_folder_given_as_the_sweep_file_names_its_yaml_files(tmp_path):
    (tmp_path / "sweeps").mkdir()
    write_sweep(tmp_path / "sweeps", {"name": "a"}, "a.yaml")
    result = run_sweep_cli(tmp_path / "sweeps", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db")
    assert (result.code, result.err) == (
        2, f"error: {tmp_path / 'sweeps'}: a folder, not a sweep file; give one of its YAML files (a.yaml)\n")


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"optimizer.learning_rate": [0.1, float("inf")]}}, r"optimizer.learning_rate: bad value inf: .*finite"),
    ({"base": {**TINY_BASE, "model": {"hidden": [8], "dropout": float("nan")}}}, r"model.dropout: bad value nan"),
    ({"search": {"scheduler": "pbt", "interval": 1, "quantile": 0.25,
                 "perturb": {"optimizer.learning_rate": [0.8, float("inf")]}}}, r"(?s)perturb.*finite number"),
    ({"random": {"samples": 1, "seed": 2**32, "params": {"model.dropout": {"uniform": [0.1, 0.2]}}}},
     r"(?s)random.seed.*4294967295"),
])
def test_non_finite_numbers_and_seeds_beyond_uint32_are_refused_before_anything_runs(tmp_path, spec, message):
    """A learning rate `.inf` passed validation, then failed its whole group."""
    with pytest.raises(SweepError, match=message):
        _load(tmp_path, **spec)


def test_a_sweep_name_over_100_characters_is_refused_where_it_is_read(tmp_path):
    """A 300-character name failed on the spool folder's name and was blamed on the store."""
    assert load_sweep(write_sweep(tmp_path, {"name": "s" * 100, "base": TINY_BASE})).spec.name == "s" * 100
    with pytest.raises(SweepError, match=r"name: .*at most 100 characters"):
        load_sweep(write_sweep(tmp_path, {"name": "s" * 101, "base": TINY_BASE}))
