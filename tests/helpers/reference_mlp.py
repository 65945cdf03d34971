"""An MLP's evaluation written by hand in float64 NumPy (no jaxmlp code): the independent
reference that the train command, regression and trainer tests compare jaxmlp's numbers with."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
}


def layers(params: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of every Dense layer, hidden ones in order, the output layer last."""
    p = params["params"]
    hidden = sorted((k for k in p if k.startswith("hidden_")), key=lambda k: int(k.split("_")[1]))
    return [(np.asarray(p[k]["kernel"], np.float64), np.asarray(p[k]["bias"], np.float64))
            for k in [*hidden, "output"]]


def forward(params: Any, x: np.ndarray, activation: str = "relu") -> tuple[np.ndarray, list[np.ndarray]]:
    """Outputs [N, C] and hidden activations of the evaluation-mode network (no dropout)."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    hidden = []
    *inner, (w_out, b_out) = layers(params)
    for w, b in inner:
        h = ACTIVATIONS[activation](h @ w + b)
        hidden.append(h)
    return h @ w_out + b_out, hidden


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def classification_metrics(params: Any, x: np.ndarray, y: np.ndarray, activation: str = "relu") -> dict[str, Any]:
    """Mean cross-entropy, accuracy and the fraction of dead hidden units per layer (a unit is
    dead when it outputs exactly zero for every example) of a classifier on (x, y)."""
    logits, hidden = forward(params, x, activation)
    y = np.asarray(y)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return {"loss": float(-log_probs[np.arange(len(y)), y].mean()),
            "accuracy": float(np.mean(logits.argmax(axis=1) == y)),
            "dead_fraction": [float(np.mean(np.all(h == 0, axis=0))) for h in hidden]}
