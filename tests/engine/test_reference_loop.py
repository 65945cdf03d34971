"""An independent reference: a training loop written directly with flax.linen and optax (its
own Dense layers, initialisation, shuffles, dropout masks, Adam and early-stopping choice; no
jaxmlp code) that the engine's variant must match, alone and inside a vmapped group of four.
It draws its randomness as the engine documents it (`init_bits`, `epoch_randomness`,
`step_draws`), so the two see the same shuffles and the same dropout masks; dropout's
gradient is checked by finite differences at a fixed mask."""
from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from scipy.special import erf, erfinv

from jaxmlp.models import MLP

from tests.helpers.engine import fit

HIDDEN, N_IN, N_OUT, BATCH, EPOCHS = (16, 12), 8, 3, 32, 4
LR, DROPOUT = 1e-2, 0.3
#: std of the standard normal truncated to [-2, 2]
TRUNCATED_STD = np.sqrt(1 - 4 * np.exp(-2) / np.sqrt(2 * np.pi) / erf(np.sqrt(2)))


class ReferenceMLP(nn.Module):
    """ReLU layers with inverted dropout at given keep masks, and a linear output layer."""

    hidden: tuple[int, ...]
    n_outputs: int

    @nn.compact
    def __call__(self, x, keep_masks=None, keep: float = 1.0, input_mask=None):
        if input_mask is not None:
            x = jnp.where(input_mask, x / keep, 0.0)
        for i, width in enumerate(self.hidden):
            x = jax.nn.relu(nn.Dense(width, name=f"hidden_{i}")(x))
            if keep_masks is not None:
                x = jnp.where(keep_masks[i], x / keep, 0.0)
        return nn.Dense(self.n_outputs, name="output")(x)


def uniform01(bits: np.ndarray) -> np.ndarray:
    """[0, 1) floats from uint32 bits: 23 high bits as the mantissa of a float in [1, 2), minus one."""
    return (((bits >> np.uint32(9)) | np.uint32(0x3F800000)).view(np.float32) - 1.0).astype(np.float64)


def reference_init(seed: int):
    """(parameters, training key) from the seed: He-normal (truncated at 2 std) hidden kernels,
    a Glorot-uniform output kernel, zero biases, from one block of random bits."""
    widths = [N_IN, *HIDDEN, N_OUT]
    shapes = list(zip(widths, widths[1:]))
    bits = np.asarray(jax.random.bits(jax.random.key(seed), (2 + sum(a * b for a, b in shapes),), jnp.uint32))
    u, offset, params = 2 * uniform01(bits[2:]) - 1, 0, {}
    for i, (fan_in, fan_out) in enumerate(shapes):
        draws = u[offset:offset + fan_in * fan_out].reshape(fan_in, fan_out)
        offset += fan_in * fan_out
        if i < len(HIDDEN):
            z = np.sqrt(2) * erfinv(draws * erf(np.sqrt(2)))  # standard normal truncated to [-2, 2]
            name, kernel = f"hidden_{i}", z * np.sqrt(2 / fan_in) / TRUNCATED_STD
        else:
            name, kernel = "output", draws * np.sqrt(3 * 2 / (fan_in + fan_out))
        params[name] = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.zeros(fan_out, jnp.float32)}
    return {"params": params}, jax.random.wrap_key_data(jnp.asarray(bits[:2]))


def cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


MODEL = ReferenceMLP(HIDDEN, N_OUT)


@jax.jit
def reference_step(params, opt_state, x, y, step_key, keep, learning_rate):
    """One minibatch of Adam; the step's uniform draws give one block of keep-mask columns per layer."""
    words = jax.random.bits(step_key, (BATCH, sum(HIDDEN) // 2), jnp.uint32)  # two 16-bit draws per word
    u = (jnp.concatenate([words % 65536, words // 65536], axis=1) + 0.5) / 65536
    masks = jnp.split(u < keep, np.cumsum(HIDDEN)[:-1], axis=1)
    loss, grads = jax.value_and_grad(lambda p: cross_entropy(MODEL.apply(p, x, masks, keep), y))(params)
    updates, opt_state = optax.adam(learning_rate).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@jax.jit
def reference_evaluate(params, x, y):
    logits = MODEL.apply(params, x)
    return cross_entropy(logits, y), jnp.mean(jnp.argmax(logits, -1) == y)


def reference_run(seed: int, data, dropout: float = DROPOUT, learning_rate: float = LR):
    """The whole run by hand: per-epoch (train loss, val loss, val accuracy), best epoch, best parameters."""
    params, key = reference_init(seed)
    opt_state = optax.adam(learning_rate).init(params)
    x, y = np.asarray(data.train.x), np.asarray(data.train.y)
    n, steps = len(x), len(x) // BATCH
    history, best, best_epoch, best_params = [], np.inf, 0, params
    for epoch in range(1, EPOCHS + 1):
        bits = jax.random.bits(key, (n + 2 * (steps + 1),), jnp.uint32)
        keys = jax.random.wrap_key_data(bits[n:].reshape(steps + 1, 2))
        order = np.argsort(np.asarray(bits[:n]), kind="stable")[:steps * BATCH].reshape(steps, BATCH)
        key, losses = keys[0], []
        for i in range(steps):
            params, opt_state, loss = reference_step(params, opt_state, x[order[i]], y[order[i]], keys[i + 1],
                                                     1.0 - dropout, learning_rate)
            losses.append(float(loss))
        val_loss, val_acc = map(float, reference_evaluate(params, data.val.x, data.val.y))
        history.append((float(np.mean(np.float32(losses))), val_loss, val_acc))
        if np.float32(val_loss) < best:
            best, best_epoch, best_params = np.float32(val_loss), epoch, params
    test_loss, test_acc = map(float, reference_evaluate(best_params, data.test.x, data.test.y))
    return {"history": history, "best_epoch": best_epoch, "params": best_params,
            "test": {"loss": test_loss, "accuracy": test_acc}}


def config(make_config, seed: int, dropout: float = DROPOUT, learning_rate: float = LR):
    return make_config({"model.hidden": list(HIDDEN), "model.dropout": dropout, "training.seed": seed,
                        "optimizer.learning_rate": learning_rate, "training.epochs": EPOCHS,
                        "training.batch_size": BATCH, "training.early_stopping.patience": None})


@pytest.fixture(scope="module")
def reference(synthetic_data):
    assert synthetic_data.input_shape == (N_IN,) and synthetic_data.num_classes == N_OUT
    return reference_run(7, synthetic_data)


def assert_matches_reference(variant, ref):
    close = partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)
    assert variant.best_epoch == ref["best_epoch"] and variant.epochs_trained == EPOCHS
    close([[r["train_loss"], r["val_loss"], r["val_accuracy"]] for r in variant.history], ref["history"])
    assert variant.test["accuracy"] == pytest.approx(ref["test"]["accuracy"], abs=1e-6)
    assert variant.test["loss"] == pytest.approx(ref["test"]["loss"], rel=1e-4)
    assert jax.tree_util.tree_structure(variant.params) == jax.tree_util.tree_structure(ref["params"])
    for a, b in zip(jax.tree_util.tree_leaves(variant.params), jax.tree_util.tree_leaves(ref["params"])):
        close(a, b)


def test_reference_initialisation_is_the_engines(make_config, synthetic_data):
    from jaxmlp import engine

    cfg = config(make_config, 7)
    s = engine.structure_of([cfg], synthetic_data)
    state = jax.jit(partial(engine.init_state, s))(cfg.training.seed)
    params, key = reference_init(7)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(jax.random.key_data(state.key), jax.random.key_data(key))


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_a_lone_variant_matches_the_reference_loop(make_config, synthetic_data, reference):
    (variant,) = fit([config(make_config, 7)], synthetic_data).variants
    assert_matches_reference(variant, reference)
    # the run learned something, and dropout made the training loss differ from evaluation
    assert reference["history"][-1][1] < reference["history"][0][1]


@pytest.mark.slow
def test_the_same_variant_inside_a_vmapped_group_of_four_matches_the_reference(make_config, synthetic_data, reference):
    configs = [config(make_config, 1, dropout=0.1), config(make_config, 2, learning_rate=3e-2),
               config(make_config, 7), config(make_config, 3, dropout=0.0, learning_rate=0.05)]
    result = fit(configs, synthetic_data)
    assert_matches_reference(result.variants[2], reference)
    without_dropout = reference_run(3, synthetic_data, dropout=0.0, learning_rate=0.05)
    assert without_dropout["best_epoch"] < EPOCHS  # so the best, not the last, parameters must be restored
    assert_matches_reference(result.variants[3], without_dropout)


# --- dropout: the engine's layout of the draws, and its gradient by finite differences -------------

def fixed_draws(n: int, width: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(5).uniform(1e-7, 1.0, size=(n, width)))


def test_the_models_dropout_uses_the_draws_input_first_then_layer_by_layer():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, N_IN)).astype(np.float32))
    model, ref = MLP(HIDDEN, N_OUT, ("relu",)), MODEL
    params, _ = reference_init(0)
    u = fixed_draws(6, N_IN + sum(HIDDEN)).astype(jnp.float32)
    keep = 0.6
    ours = model.apply(params, x, draws=u, dropout_rate=0.4, input_dropout_rate=0.4)
    cols = np.cumsum([N_IN, *HIDDEN])
    masks = jnp.split(u < keep, cols[:-1], axis=1)
    theirs = ref.apply(params, x, masks[1:], keep, input_mask=masks[0])
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(ours), np.asarray(ref.apply(params, x)), atol=1e-3)


@pytest.mark.parametrize("input_dropout", [False, True], ids=["hidden", "hidden-and-input"])
def test_dropout_gradient_matches_finite_differences_at_a_fixed_mask(input_dropout):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.normal(size=(6, 4)))
        labels = jnp.array([0, 1, 2, 0, 1, 2])
        model = MLP((5, 4), 3, activations=("tanh",))
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4)))
        params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(scale=0.7, size=s.shape)), shapes)
        flat, unravel = ravel_pytree(params)
        draws = fixed_draws(6, model.random_width(4, dropout=True, input_dropout=input_dropout))
        rate = 0.4

        def loss(v):
            out = model.apply(unravel(v), x, draws=draws, dropout_rate=rate,
                              input_dropout_rate=rate if input_dropout else None)
            return cross_entropy(out, labels)

        h = 1e-6
        eye = jnp.eye(flat.size, dtype=flat.dtype)
        grad, fd = jax.jit(lambda v: (jax.grad(loss)(v), (jax.vmap(loss)(v + h * eye) - jax.vmap(loss)(v - h * eye)) / (2 * h)))(flat)
        assert grad.dtype == jnp.float64 and float(jnp.max(jnp.abs(grad))) > 1e-3
        np.testing.assert_allclose(np.asarray(grad), np.asarray(fd), rtol=1e-5, atol=1e-8)
        # a unit dropped for every example passes no gradient to its incoming weights
        hidden_mask = np.asarray(draws[:, 4 * input_dropout:4 * input_dropout + 5] < 1 - rate)
        g = unravel(grad)["params"]["hidden_0"]["kernel"]
        dropped = ~hidden_mask.any(axis=0)
        np.testing.assert_array_equal(np.asarray(g)[:, dropped], 0.0)
        assert 0 < hidden_mask.mean() < 1
