"""Replaying a spool folder into a real SQLite store: checked whole before anything is logged
(a damaged file is named, the store untouched), exactly once (a second replay logs nothing),
and resumable (a replay stopped after its parent run was created goes on in that parent)."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmlp.checkpoint import checkpoint_files
from jaxmlp.models import build_mlp
from jaxmlp.records import VariantRecord
from jaxmlp.tracking import Tracker
from jaxmlp.tracking.__main__ import main as tracking_main
from jaxmlp.tracking.replay import LEDGER, SpoolError, replay
from jaxmlp.tracking.spool import Spool

NAME = "spooled"


@pytest.fixture(scope="module")
def files(make_config) -> dict[str, bytes]:
    config = make_config()
    params = build_mlp(config.model, 3).init(jax.random.key(0), np.zeros((1, 8), np.float32))
    return checkpoint_files(config, params, {"dataset": "synthetic", "task": "classification", "n_outputs": 3,
                                             "input_shape": [8]})


def write_spool(folder: Path, uri: str, files: dict[str, bytes], parent_run_id: str | None = None) -> Path:
    """A spool as a sweep writes it: two children (one setting each), their best models, the summary."""
    spool = Spool(folder, {"sweep_name": NAME, "sweep_hash": "h", "sweep_file": "s.yaml", "note": "",
                           "tracking_uri": uri, "params": {"sweep": NAME}})
    for i, activation in enumerate(("relu", "tanh")):
        record = VariantRecord(setting={"model.activation": activation}, seed=0, status="FINISHED",
                               variant_key=f"key{i}", index=i, best_epoch=2, stopped_epoch=3, epochs_trained=3,
                               metrics={"test_accuracy": 0.8 + i / 10, "best_val_loss": 0.5},
                               config={"model.activation": activation})
        spool.child(run_id=None, run_name=f"{activation} · seed 0", group="g0", record=record,
                    history=[{"epoch": e, "val_loss": 1.0 / e} for e in (1, 2, 3)], files=files, reason=None)
    spool.summary(status="FINISHED", reason=None, summary_files={"summary.csv": b"setting\n"}, figures={},
                  metrics={"n_variants": 2.0}, best_setting="model.activation=tanh", table=None)
    spool.note(parent_run_id=parent_run_id, best_of_settings={"model.activation=relu": "key0",
                                                              "model.activation=tanh": "key1"}, best="key1")
    return folder


@pytest.fixture
def store(store_uri) -> Tracker:
    return Tracker(store_uri)


def runs(store: Tracker) -> tuple[list, list]:
    """(parents, children) of the sweep in the store."""
    experiment = store.client.get_experiment_by_name(NAME)
    found = store.client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    return parents, [r for r in found if "mlflow.parentRunId" in r.data.tags]


def quiet(line: str) -> None:
    pass


def test_a_spool_replayed_twice_logs_everything_once(tmp_path, store, files):
    folder = write_spool(tmp_path / "spool", store.tracking_uri, files)
    first = replay(folder, store.tracking_uri, out=quiet)
    lines: list[str] = []
    assert replay(folder, store.tracking_uri, out=lines.append) == first
    assert lines[-1] == "replayed 0 child run(s) and the summary"
    (parent,), children = runs(store)
    assert parent.info.run_id == first and parent.info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert len(store.client.get_metric_history(first, "n_variants")) == 1
    assert len({m.source_run_id for m in store.client.search_logged_models([parent.info.experiment_id])}) == 3


def test_a_replay_into_the_sweeps_own_parent_logs_its_summary_once(tmp_path, store, files):
    experiment_id = store.experiment(NAME)
    parent_run_id = store.start_parent(experiment_id, NAME, sweep_name=NAME, sweep_hash="h", sweep_file="s.yaml",
                                       note="", git_commit=None, environment={}, params={})
    folder = write_spool(tmp_path / "spool", store.tracking_uri, files, parent_run_id)
    assert replay(folder, store.tracking_uri, out=quiet) == replay(folder, store.tracking_uri, out=quiet) == parent_run_id
    assert len(store.client.get_metric_history(parent_run_id, "n_variants")) == 1
    assert len(runs(store)[1]) == 2


def test_a_replay_stopped_after_its_parent_began_goes_on_in_that_parent(tmp_path, store, files):
    """It left a RUNNING parent, and the next replay made another."""
    folder = write_spool(tmp_path / "spool", store.tracking_uri, files)

    def stop(line: str) -> None:
        raise KeyboardInterrupt(line)

    with pytest.raises(KeyboardInterrupt):
        replay(folder, store.tracking_uri, out=stop)
    (stopped,), _ = runs(store)
    assert stopped.info.status == "RUNNING"
    assert replay(folder, store.tracking_uri, out=quiet) == stopped.info.run_id
    (parent,), children = runs(store)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert json.loads((folder / LEDGER).read_text())[store.tracking_uri]["parent"] == parent.info.run_id


@pytest.mark.parametrize("damage, named, message", [
    (lambda f: (f / "children" / "1.json").write_text((f / "children" / "1.json").read_text()[:40]),
     "children/1.json", "unreadable"),
    (lambda f: (f / "children" / "notes.json").write_text("{}"), "children/notes.json", "not a file the sweep writes"),
    (lambda f: (f / "spool.json").write_text(json.dumps({**json.loads((f / "spool.json").read_text()),
                                                        "sweep_name": 5})), "spool.json", "sweep_name: int 5"),
    (lambda f: (f / "checkpoints" / "0" / "params.msgpack").unlink(), "children/0.json", "lacks params.msgpack"),
    (lambda f: (f / "children" / "0.json").write_text(json.dumps({**json.loads((f / "children" / "0.json")
                                                       .read_text()), "record": {"seed": 0}})),
     "children/0.json", "record: not a variant's record"),
    (lambda f: (f / "summary" / "summary.json").write_text("[]"), "summary/summary.json", "a JSON object expected"),
])
def test_a_damaged_spool_is_refused_naming_the_file_before_anything_is_logged(tmp_path, store, files, capsys,
                                                                            damage, named, message):
    folder = write_spool(tmp_path / "spool", store.tracking_uri, files)
    damage(folder)
    with pytest.raises(SpoolError, match=f"^{folder / named}: .*{message}"):
        replay(folder, store.tracking_uri, out=quiet)
    assert runs(store) == ([], [])
    capsys.readouterr()  # (MLflow's lines on creating the store's tables)
    assert tracking_main(["replay", str(folder), "--tracking-uri", store.tracking_uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder / named}: ") and err.count("\n") == 1
