"""Checkpoints and the pyfunc model that wraps one load without pickle: a pickle payload in
place of the parameters is refused and never run."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmlp.checkpoint import load_checkpoint, predict, save_checkpoint
from jaxmlp.models import build_mlp


class Payload:
    """Unpickled, it would create the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture
def checkpoint(make_config, tmp_path) -> Path:
    config = make_config()
    params = build_mlp(config.model, 3).init(jax.random.key(0), np.zeros((1, 8), np.float32))
    meta = {"dataset": "synthetic", "task": "classification", "n_outputs": 3, "input_shape": [8]}
    return save_checkpoint(tmp_path / "checkpoint", config, params, meta)


def test_a_checkpoint_loads_and_predicts(checkpoint):
    probabilities = predict(load_checkpoint(checkpoint), np.ones((2, 8), np.float32))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_a_pickle_payload_as_parameters_is_refused_and_never_run(checkpoint, tmp_path):
    marker = tmp_path / "payload-ran"
    (checkpoint / "params.msgpack").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(Exception):  # noqa: B017 - whatever msgpack raises: the point is what did not run
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_the_pyfunc_model_holds_no_pickle_and_refuses_a_payload(checkpoint, tmp_path):
    import mlflow.pyfunc

    from jaxmlp.tracking.model import save_pyfunc

    save_pyfunc(tmp_path / "model", checkpoint)
    files = [p for p in (tmp_path / "model").rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle") or p.read_bytes()[:1] == b"\x80"]
    assert mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(np.ones((2, 8), np.float32)).shape == (2, 3)
    marker = tmp_path / "payload-ran"
    (params,) = (tmp_path / "model").rglob("params.msgpack")
    params.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(Exception):  # noqa: B017 - whatever msgpack raises: the point is what did not run
        mlflow.pyfunc.load_model(str(tmp_path / "model"))
    assert not marker.exists()


@pytest.mark.parametrize("damage, named, message", [
    (lambda c: (c / "params.msgpack").write_bytes((c / "params.msgpack").read_bytes()[:40]), "params.msgpack",
     "unreadable"),
    (lambda c: (c / "config.json").write_text((c / "config.json").read_text()[:30]), "config.json", "unreadable"),
    (lambda c: (c / "config.json").write_text(json.dumps({"config": json.loads((c / "config.json").read_text())["config"]})),
     "config.json", "'meta' with task, n_outputs and input_shape expected"),
    (lambda c: (c / "config.json").write_text((c / "config.json").read_text().replace('"hidden": [\n        16', '"hidden": [\n        12')),
     "params.msgpack", r"params/hidden_0/bias: shape \(16,\), but the model of .*config.json needs \(12,\)"),
])
def test_a_damaged_checkpoint_is_refused_naming_the_file(checkpoint, damage, named, message):
    """Truncated files were "Unpack failed" without a name; a checkpoint whose shapes differ from
    its configuration, or without meta, was a traceback."""
    damage(checkpoint)
    with pytest.raises(ValueError, match=f"^{checkpoint / named}: .*{message}"):
        load_checkpoint(checkpoint)
