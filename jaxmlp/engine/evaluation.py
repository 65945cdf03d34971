"""Evaluation of one variant on a whole split: loss, accuracy, calibration (classification),
dead units per hidden layer; the final evaluation of the selected parameters, with the test
split under input noise and a temperature fitted on validation where asked."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmlp.data import Split
from jaxmlp.engine.state import TrainState
from jaxmlp.engine.step import apply_model
from jaxmlp.engine.structure import HParams, Structure
from jaxmlp.losses import cross_entropy_per_example, get_example_loss


#: Splits larger than this are evaluated in chunks, bounding activation memory.
EVAL_CHUNK = 4096
#: Equal-width confidence bins of the calibration metrics: bin m holds confidences in ((m-1)/M, m/M].
CALIBRATION_BINS = 15
#: The seed of the input noise: every variant is tested on the same noisy copies of the test split.
INPUT_NOISE_SEED = 0
#: The range of log temperatures the fit on validation searches, and its golden-section steps.
LOG_TEMPERATURE_RANGE = (math.log(0.05), math.log(20.0))
TEMPERATURE_STEPS = 40
#: The calibration metrics that `evaluate` returns and the temperature-scaled evaluation repeats.
CALIBRATION_KEYS = ("ece", "mce", "brier", "nll")
#: The rows of a reliability curve (`calibration_metrics`), one value per confidence bin each.
RELIABILITY_ROWS = ("confidence", "accuracy", "count")


def _chunked(split: Split) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Inputs, targets and a validity mask cut in chunks of at most EVAL_CHUNK examples
    (the last padded), each with a leading chunk axis."""
    n = split.x.shape[0]
    chunk = min(n, EVAL_CHUNK)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n

    def cut(a):
        return jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(n_chunks, chunk, *a.shape[1:])

    return cut(split.x), cut(split.y), (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)


def input_noise(chunk_index: jax.Array, shape: tuple[int, ...], std: float) -> jax.Array:
    """Gaussian noise of standard deviation `std` for one chunk of a split, drawn from
    INPUT_NOISE_SEED and the chunk's index: the same for every variant, and the same
    standard draws scaled for every level."""
    key = jax.random.fold_in(jax.random.key(INPUT_NOISE_SEED), chunk_index)
    return std * jax.random.normal(key, shape)


def calibration_sums(probs: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Sums over the valid examples of a chunk: per confidence bin the top-label confidence,
    the correct predictions and the examples; the Brier score (squared distance of the
    probabilities to the one-hot label, summed over classes)."""
    confidence = probs.max(-1)
    bins = jnp.clip(jnp.ceil(confidence * CALIBRATION_BINS).astype(jnp.int32) - 1, 0, CALIBRATION_BINS - 1)
    in_bin = jax.nn.one_hot(bins, CALIBRATION_BINS) * mask[:, None]
    correct = jnp.argmax(probs, -1) == labels
    brier = jnp.sum((probs - jax.nn.one_hot(labels, probs.shape[-1])) ** 2, axis=-1)
    return {"bin_confidence": in_bin.T @ confidence, "bin_correct": in_bin.T @ correct.astype(probs.dtype),
            "bin_count": in_bin.sum(0), "brier": jnp.sum(jnp.where(mask, brier, 0.0))}


def calibration_metrics(sums: dict[str, jax.Array], n: int) -> dict[str, jax.Array]:
    """Top-label expected calibration error (ECE: the examples' share of each bin times its
    |accuracy - mean confidence|, summed over bins), maximum calibration error (MCE: the
    largest gap of a non-empty bin), mean Brier score, and the reliability curve [3, bins]:
    per bin the mean confidence, the accuracy and the number of examples (0, 0, 0 where empty)."""
    count = sums["bin_count"]
    confidence = sums["bin_confidence"] / jnp.maximum(count, 1.0)
    accuracy = sums["bin_correct"] / jnp.maximum(count, 1.0)
    gap = jnp.abs(accuracy - confidence)
    return {"ece": jnp.sum(count * gap) / n, "mce": jnp.max(jnp.where(count > 0, gap, 0.0)),
            "brier": sums["brier"] / n, "reliability": jnp.stack([confidence, accuracy, count])}


def _empty_metrics(s: Structure) -> dict[str, jax.Array]:
    """NaN metrics of an empty split (no validation, see `data.val_size`)."""
    nan = jnp.float32(jnp.nan)
    metrics = {"loss": nan, "dead_fraction": jnp.full((len(s.hidden),), nan)}
    if s.task == "classification":
        metrics.update({"accuracy": nan, **{k: nan for k in CALIBRATION_KEYS},
                        "reliability": jnp.full((3, CALIBRATION_BINS), nan)})
    return metrics


def evaluate(s: Structure, params, hp: HParams, split: Split, choice: int | jax.Array = 0, *,
             noise: float = 0.0, temperature: float | jax.Array = 1.0) -> dict[str, jax.Array]:
    """Loss, dead-unit fraction per hidden layer and, for classification, accuracy and the
    calibration of the softmax (see `calibration_metrics`; `nll`: the cross-entropy whatever
    the training loss) on a whole split.

    Large splits are processed in chunks of EVAL_CHUNK examples (the last one padded and
    masked), and only per-chunk sums leave a chunk, so memory does not grow with the split.
    `noise`: the std of Gaussian input noise (`input_noise`); `temperature` divides the logits
    before the calibration metrics. An empty split has NaN metrics.
    """
    n = split.x.shape[0]
    if n == 0:
        return _empty_metrics(s)
    x, y, mask = _chunked(split)
    example_loss = get_example_loss(s.loss, s.task)

    def chunk_sums(args):
        index, xc, yc, mc = args
        out, hidden = apply_model(s, params, xc + input_noise(index, xc.shape, noise) if noise else xc, hp,
                                  return_hidden=True, choice=choice)
        sums = {"loss": jnp.sum(jnp.where(mc, example_loss(out, yc), 0.0)),
                "alive": tuple(jnp.any((h != 0) & mc[:, None], axis=0) for h in hidden)}
        if s.task == "classification":
            sums["correct"] = jnp.sum(jnp.where(mc, jnp.argmax(out, -1) == yc, False))
            sums["nll"] = jnp.sum(jnp.where(mc, cross_entropy_per_example(out / temperature, yc), 0.0))
            sums.update(calibration_sums(jax.nn.softmax(out / temperature), yc, mc))
        return sums

    per_chunk = jax.lax.map(chunk_sums, (jnp.arange(len(x)), x, y, mask))
    dead = [jnp.mean(~jnp.any(alive, axis=0)) for alive in per_chunk.pop("alive")]
    sums = jax.tree_util.tree_map(lambda a: a.sum(0), per_chunk)
    metrics = {"loss": sums["loss"] / n, "dead_fraction": jnp.stack(dead) if dead else jnp.zeros((0,))}
    if s.task == "classification":
        metrics.update(accuracy=sums["correct"] / n, nll=sums["nll"] / n, **calibration_metrics(sums, n))
    return metrics


def golden_section(f, low: float, high: float, steps: int) -> jax.Array:
    """The minimiser of a unimodal scalar function on [low, high], by golden-section search
    (`steps` shrinkings of the bracket by 0.618, in a `fori_loop`)."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0

    def shrink(_, bracket):
        a, b = bracket
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        left = f(c) < f(d)
        return jnp.where(left, a, c), jnp.where(left, d, b)

    a, b = jax.lax.fori_loop(0, steps, shrink, (jnp.float32(low), jnp.float32(high)))
    return (a + b) / 2


def split_logits(s: Structure, params, hp: HParams, split: Split, choice: int | jax.Array = 0):
    """The model's outputs on a split, chunked as `evaluate` cuts it, with its labels and mask."""
    x, y, mask = _chunked(split)
    out = jax.lax.map(lambda xc: apply_model(s, params, xc, hp, choice=choice), x)
    return out, y, mask


def fit_temperature(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """The softmax temperature T that minimises the NLL of logits / T over the valid examples
    (Guo et al. 2017): a golden-section search on log T over LOG_TEMPERATURE_RANGE (the NLL
    is convex in 1/T, so unimodal in log T); T = 1 where the search found nothing better, so
    the fitted temperature never raises the NLL it minimises."""
    def nll(log_t):
        return jnp.sum(jnp.where(mask, cross_entropy_per_example(logits / jnp.exp(log_t), labels), 0.0))

    log_t = golden_section(nll, *LOG_TEMPERATURE_RANGE, TEMPERATURE_STEPS)
    return jnp.where(nll(log_t) < nll(jnp.float32(0.0)), jnp.exp(log_t), jnp.float32(1.0))


def _noise_metrics(s: Structure, params, hp: HParams, test: Split, choice) -> dict[str, jax.Array]:
    """Test loss and accuracy under each level of `s.input_noise`, e.g. accuracy_noise_0.1."""
    out = {}
    for std in s.input_noise:
        noisy = evaluate(s, params, hp, test, choice, noise=std)
        out.update({f"{k}_noise_{std:g}": noisy[k] for k in ("loss", "accuracy") if k in noisy})
    return out


def _temperature_metrics(s: Structure, params, hp: HParams, val: Split, test: Split, choice) -> dict[str, jax.Array]:
    """The temperature fitted on validation and the test calibration with it (ece_temperature, ...)."""
    temperature = fit_temperature(*split_logits(s, params, hp, val, choice))
    scaled = evaluate(s, params, hp, test, choice, temperature=temperature)
    return {"temperature": temperature, **{f"{k}_temperature": scaled[k] for k in CALIBRATION_KEYS}}


def final_evaluation(s: Structure, state: TrainState, hp: HParams, train: Split, val: Split, test: Split,
                     choice: int | jax.Array = 0):
    """Selected parameters (best on validation, or the last ones) with their test metrics and,
    for the generalisation gap, their training-split metrics in evaluation mode. The test
    metrics include those under input noise and with a temperature fitted on validation,
    where the structure asks for them."""
    params = jax.tree_util.tree_map(lambda best, last: jnp.where(hp.restore_best, best, last),
                                    state.best_params, state.params)
    test_metrics = {**evaluate(s, params, hp, test, choice), **_noise_metrics(s, params, hp, test, choice)}
    if s.temperature_scaling:
        test_metrics.update(_temperature_metrics(s, params, hp, val, test, choice))
    return params, test_metrics, evaluate(s, params, hp, train, choice)
