"""Families of parts (host side, nothing trained): switched structures as tuples of names, which
family and selectors a variant takes, a family's empty inputs, the moves that compact its tail."""
from __future__ import annotations

import numpy as np
import pytest

from jaxmlp.engine import Layout
from jaxmlp.engine.families import Family, Slot, family_index, placement, structures_of


def _layout(make_config) -> Layout:
    """Two families: sigmoid and tanh (two parts of 3 slots), noisy ReLU (one part of 2)."""
    return Layout(part_size=3, families=((make_config({"model.activation": "tanh"}), 2),
                                         (make_config({"model.activation": "noisy_relu"}), 1)),
                  activations=("sigmoid", "noisy_relu", "tanh"), initializers=("glorot_uniform", "he_normal"),
                  features=frozenset({"use_dropout"}), part_sizes=(3, 2))


def test_families_switch_over_tuples_of_their_kind_of_activation(make_config, synthetic_data):
    plain, noisy = Family.of(_layout(make_config), synthetic_data)
    assert (plain.structure.activations, noisy.structure.activations) == (("sigmoid", "tanh"), ("noisy_relu",))
    assert plain.structure.initializers == noisy.structure.initializers == ("glorot_uniform", "he_normal")
    assert (plain.shape, noisy.shape) == ((2, 3), (1, 2))
    assert plain.structure.use_dropout and not plain.structure.use_weight_decay
    assert (not plain.structure.model.noisy, noisy.structure.model.noisy) == (True, True)


def test_a_variant_takes_its_kinds_family_and_the_selectors_of_its_names(make_config, synthetic_data):
    families = Family.of(_layout(make_config), synthetic_data)
    configs = [make_config({"model.activation": "tanh"}), make_config({"model.activation": "noisy_relu"}),
               make_config({"model.activation": "sigmoid", "model.init": "he_normal"})]
    index, selectors = placement(families, configs)
    assert index.tolist() == [0, 1, 0] and selectors.tolist() == [[1, 0], [0, 1], [0, 1]]
    assert selectors.dtype == np.int32
    with pytest.raises(ValueError, match="'relu'.*sigmoid, tanh; glorot_uniform, he_normal"):
        placement(families, [make_config({"model.activation": "relu"})])
    with pytest.raises(ValueError, match="no family of the layout takes a variant of activation 'noisy_relu'"):
        family_index(families[:1], configs[1])
    assert families[0].missing_features(make_config({"model.dropout": 0.2, "optimizer.max_norm": 3.0})) == \
        ["optimizer.max_norm"]


def test_structures_are_one_per_structure_key_in_order_of_first_use(make_config, synthetic_data):
    configs = [make_config({"model.activation": a, "training.seed": s}) for a in ("tanh", "relu") for s in (0, 1)]
    structures = structures_of(configs, synthetic_data, frozenset({"use_clip"}))
    assert [s.activations for s in structures] == [("tanh",), ("relu",)]
    assert [s.initializers for s in structures] == [("auto",), ("auto",)] and all(s.use_clip for s in structures)


def test_empty_inputs_carry_the_templates_numbers_in_every_slot_all_frozen(make_config, synthetic_data):
    family = Family.of(_layout(make_config), synthetic_data)[0]
    hp, selectors = family.empty_inputs(make_config({"optimizer.learning_rate": 0.125}), (1, 0))
    assert hp.learning_rate.shape == (2, 3) and (hp.learning_rate == np.float32(0.125)).all()
    assert (selectors.activation == 1).all() and (selectors.init == 0).all() and selectors.frozen.all()
    hp.learning_rate[0, 0] = 1.0  # a copy per slot, not a broadcast view
    assert hp.learning_rate[1, 2] == np.float32(0.125)


@pytest.mark.parametrize("slots, moves", [
    ([[0, -1, -1], [-1, 1, -1], [2, 3, -1]], [((1, 1), (0, 1))]),  # the fullest parts kept
    ([[0, -1, -1], [-1, 1, -1], [2, -1, -1]], [((1, 1), (0, 1)), ((2, 0), (0, 2))]),  # ties: the first kept
    ([[0, 1, 2], [-1, -1, -1], [3, -1, -1]], []),  # as few parts as they fill already
    ([[-1, -1, -1], [-1, 4, -1], [-1, -1, -1]], []),  # one busy part
])
def test_compaction_moves_the_variants_into_as_few_parts_as_they_fill(make_config, synthetic_data, slots, moves):
    family = Family(Family.of(_layout(make_config), synthetic_data)[0].structure, 3, 3)
    slots = np.asarray(slots)
    assert family.compaction(slots) == moves
    after = slots.copy()
    for src, dst in moves:
        after[dst], after[src] = after[src], -1
    assert sorted(after[after >= 0]) == sorted(slots[slots >= 0])
    assert int(((after >= 0).sum(axis=1) > 0).sum()) == -(-int((slots >= 0).sum()) // 3)


def test_a_slot_address_names_its_family_part_and_row():
    slot = Slot(family=1, part=2, row=0)
    assert slot.cell == (2, 0) and tuple(slot) == (1, 2, 0)
