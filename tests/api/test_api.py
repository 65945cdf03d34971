"""The public API: `jaxmlp.fit`, `jaxmlp.run_sweep`, `Dataset.from_arrays`/`from_frame`, their
results as DataFrames, and the same numbers as the commands give for the same configuration."""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import jaxmlp
from jaxmlp.checkpoint import load_checkpoint

from tests.helpers.sweep import TINY_BASE, run_sweep_cli, store_client, sweep_runs, write_sweep
from tests.helpers.train import run_main

#: A 3-class synthetic problem (204 train / 36 val / 60 test rows) and a 6-8-3 MLP, 4 epochs.
CONFIG = {"data": {"name": "synthetic", "n_samples": 300, "n_features": 6, "n_classes": 3},
          "model": {"hidden": [8]}, "optimizer": {"learning_rate": 0.02}, "training": {"epochs": 4}}
SWEEP = {"name": "api", "base": {**TINY_BASE, "training": {"epochs": 3, "batch_size": 64}},
         "grid": {"model.activation": ["relu", "tanh"]}, "seeds": [0, 1]}


def labelled(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs in large units (a mean of 50) and string labels that depend on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 10.0, size=(n, 4))
    return x, np.where(x[:, 0] > x[:, 1], "left", "right")


def test_the_public_names_import_lazily_and_resolve():
    code = ("import sys, jaxmlp; assert 'jax' not in sys.modules and 'jaxmlp.api' not in sys.modules; "
            "print(jaxmlp.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = eval(out)  # noqa: S307 - the list the child printed
    assert names[0] == "__version__" and {"fit", "run_sweep", "Dataset", "DataError"} <= set(names)
    assert all(getattr(jaxmlp, name) is not None for name in names)
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        jaxmlp.fitt  # noqa: B018


@pytest.mark.slow
def test_fit_gives_the_train_commands_numbers_for_the_same_configuration_and_seeds(tmp_path, session_compile_cache):
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(CONFIG))
    code, out, err = run_main(["--config", path, "--seeds", "0", "1", "--json", "--no-progress",
                               "--compile-cache", session_compile_cache])
    assert code == 0, err
    command = json.loads(out)["variants"]
    result = jaxmlp.fit(CONFIG, seeds=[0, 1], devices="one")  # as the command (sharding reorders float sums)
    rows = result.frame().to_dict("records")
    assert [r["seed"] for r in rows] == [0, 1]
    for mine, theirs in zip(rows, command):
        for key in ("best_epoch", "stopped_epoch", "best_val_loss", "test_accuracy", "test_loss"):
            assert mine[key] == theirs[key], key


@pytest.mark.slow
def test_fit_on_arrays_predicts_the_users_labels_and_saves_what_the_train_command_evaluates(tmp_path):
    x, y = labelled()
    result = jaxmlp.fit({"model.hidden": [16], "optimizer.learning_rate": 0.02, "training.epochs": 20}, (x, y),
                        seeds=[0, 1, 2])
    best = result.best
    scores = result.frame()["best_val_loss"]
    assert best.record.metric("best_val_loss") == scores.min()  # chosen on validation, never on test
    new_x, new_y = labelled(200, seed=1)
    predicted = result.predict(new_x)  # raw units in, the user's labels out
    assert set(predicted) <= {"left", "right"} and np.mean(predicted == new_y) > 0.8
    proba = result.predict_proba(new_x)
    assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert np.array_equal(np.asarray(best.meta["classes"])[proba.argmax(1)], predicted)
    folder = result.save(tmp_path / "best")
    code, out, err = run_main(["--evaluate", folder])
    assert code == 0, err
    assert json.loads(out)["test_accuracy"] == pytest.approx(best.record.metric("test_accuracy"), abs=1e-6)
    assert load_checkpoint(folder).meta["classes"] == ["left", "right"]
    np.save(tmp_path / "new.npy", new_x)
    code, out, err = run_main(["--predict", folder, "--inputs", tmp_path / "new.npy", "--json"])
    assert code == 0, err
    assert np.allclose(json.loads(out)["predictions"], proba, atol=1e-6)  # raw units in, as predict takes them


@pytest.mark.slow
def test_fit_takes_a_frame_given_splits_and_configurations_of_two_structures(tmp_path):
    x, y = labelled()
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(side=y)
    by_frame = jaxmlp.fit({"training.epochs": 2}, frame, target="side")
    assert by_frame.data["n_train"] + by_frame.data["n_val"] + by_frame.data["n_test"] == 240
    rows = frame.head(10)[["d", "c", "b", "a"]]  # columns by name, in any order
    assert set(by_frame.predict(rows)) <= {"left", "right"}
    rows.to_csv(tmp_path / "rows.csv", index=False)
    code, out, err = run_main(["--predict", by_frame.save(tmp_path / "best"), "--inputs", tmp_path / "rows.csv",
                               "--json"])
    assert code == 0, err
    assert np.allclose(json.loads(out)["predictions"], by_frame.predict_proba(rows), atol=1e-6)
    rows.drop(columns="b").to_csv(tmp_path / "short.csv", index=False)
    code, out, err = run_main(["--predict", tmp_path / "best", "--inputs", tmp_path / "short.csv"])
    assert (code, out) == (2, "") and err == ("error: inputs lack the training column(s) b; give the columns "
                                              "a, b, c, d (a DataFrame, or a .csv file with a header row)\n")
    splits = {"train": (x[:200], y[:200]), "test": (x[200:], y[200:])}
    result = jaxmlp.fit([{"model.hidden": [8], "training.epochs": 2}, {"model.hidden": [8, 8], "training.epochs": 2}],
                        splits)
    assert (result.data["n_train"] + result.data["n_val"], result.data["n_test"]) == (200, 40)
    rows = result.frame()
    assert list(rows["model.hidden"]) == [[8], [8, 8]] and list(rows["seed"]) == [0, 0]
    history = result.history()
    assert list(history.groupby("variant")["epoch"].max()) == [2, 2]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(history.columns)


def test_bad_input_raises_typed_errors_naming_dict():
    with pytest.raises(jaxmlp.ConfigError, match=r"<dict>: 1 invalid value\(s\)\n  - model.activation: 'rleu' is "
                                                 r"not allowed \(did you mean 'relu'\?\)"):
        jaxmlp.fit({"model.activation": "rleu"})
    with pytest.raises(jaxmlp.SweepError, match=r"^<dict>: grid.model.activaton: unknown configuration key "
                                                r"\(did you mean 'model.activation'\?\)"):
        jaxmlp.run_sweep({"name": "bad", "grid": {"model.activaton": ["relu"]}}, tracking=False)
    with pytest.raises(jaxmlp.SweepError, match=r"^<dict>: 1 invalid value\(s\)\n  - seeds: "):
        jaxmlp.run_sweep({"name": "bad", "seeds": "three"}, tracking=False)
    with pytest.raises(jaxmlp.DataError, match="a DataFrame needs target='column'"):
        jaxmlp.fit({}, pd.DataFrame({"a": [1.0]}))


@pytest.mark.parametrize("seeds", [[0, 0], [-1], [0.5], "01", True, 0])
def test_fit_refuses_seeds_with_the_sweep_files_rule(seeds):
    """fit had a seed check of its own (floats and repeats refused, another message)."""
    from jaxmlp.config import MAX_SEED

    with pytest.raises(jaxmlp.ConfigError, match=re.escape(
            f"seeds: {seeds!r}; give a positive count or a list of distinct integers in 0..{MAX_SEED}")):
        jaxmlp.fit(CONFIG, seeds=seeds)


def test_fit_takes_a_seed_count_or_a_list_as_a_sweep_file_does():
    from jaxmlp.api.inputs import run_configs

    assert [c.training.seed for c in run_configs(CONFIG, 3)] == [0, 1, 2]
    two = [CONFIG, {**CONFIG, "model": {"hidden": [4]}}]
    assert [c.training.seed for c in run_configs(two, (5, 2))] == [5, 2, 5, 2]


@pytest.mark.parametrize("options, message", [
    ({"devices": "two"}, "devices='two': give one of auto, one, all"),
    ({"max_variants": 0}, "max_variants=0: give a whole number, 1 or more"),
    ({"max_variants": True}, "max_variants=True: give a whole number, 1 or more"),
    ({"chunks": 1.5}, "chunks=1.5: give a whole number, 1 or more"),
])
def test_run_sweep_refuses_a_bad_execution_option_before_anything_runs(tmp_path, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(jaxmlp.SweepError, match=f"^{re.escape(message)}$"):
        jaxmlp.run_sweep(SWEEP, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", **options)
    assert list(tmp_path.iterdir()) == []  # no store


@pytest.mark.slow
def test_run_sweep_takes_the_commands_execution_options_and_a_variant_trains_the_same(tmp_path):
    """devices, max_variants and chunks as --devices, --max-variants and --chunks set them: one
    slot in each of two chunks trains the variants one after the other, to the same numbers as
    side by side (both on one device: sharding reorders float sums)."""
    spec = {**SWEEP, "seeds": [0]}
    apart = jaxmlp.run_sweep(spec, tracking=False, devices="one", max_variants=1, chunks=2)
    execution = apart.sweep.spec.execution
    assert (execution.devices, execution.max_variants_per_program, execution.chunks) == ("one", 1, 2)
    assert apart.n_programs == 1 and apart.slot_epochs == apart.variant_epochs  # a lone slot never idles
    together = jaxmlp.run_sweep(spec, tracking=False, devices="one")
    assert together.sweep.spec.execution.chunks == 1 and together.slot_epochs == 2 * max(
        r.epochs_trained for r in together.records)  # two slots side by side, for as long as the longer trains
    timings = ["train_seconds", "compile_seconds"]
    frame = apart.frame()
    pd.testing.assert_frame_equal(frame.drop(columns=[c for c in timings if c in frame]),
                                  together.frame().drop(columns=[c for c in timings if c in frame]))


@pytest.mark.slow
def test_run_sweep_on_a_dict_equals_the_same_sweep_from_a_file_and_the_command(tmp_path, session_compile_cache):
    from_dict = jaxmlp.run_sweep(SWEEP, tracking=False)
    path = write_sweep(tmp_path, SWEEP)
    from_file = jaxmlp.run_sweep(path, tracking=False)
    command = run_sweep_cli(path, "--no-tracking", "--no-progress", "--json", "--compile-cache", session_compile_cache)
    assert command.code == 0, command.err
    assert from_dict.tracking_uri is None and from_dict.parent_run_id is None
    assert [v.key for v in from_dict.sweep.variants] == [v.key for v in from_file.sweep.variants]
    timings = ["train_seconds"]
    frame = from_dict.frame().drop(columns=timings)
    assert len(frame) == 4 and list(frame["model.activation"]) == ["relu", "relu", "tanh", "tanh"]
    pd.testing.assert_frame_equal(frame, from_file.frame().drop(columns=timings))  # every metric, bit for bit
    summary = from_dict.summary().to_dict("records")
    rows = {r["setting"]: r for r in json.loads(command.out)["rows"]}
    assert [r["setting"] for r in summary] == sorted(rows, key=lambda s: rows[s]["best_val_loss"])
    for row in summary:
        for key in ("test_accuracy", "test_accuracy_std", "best_val_loss"):
            assert row[key] == rows[row["setting"]][key], key
    best = from_dict.best
    assert best["best_val_loss"] == frame["best_val_loss"].min()


@pytest.mark.slow  # more than a few seconds (a compile, a tracked sweep or a process)
def test_run_sweep_tracks_a_dict_sweep_with_its_file_histories_and_run_ids(tmp_path, store_uri):
    uri = store_uri
    result = jaxmlp.run_sweep({**SWEEP, "seeds": [0]}, tracking_uri=uri)
    assert result.ok and result.tracking_uri == uri
    client = store_client(uri)
    (parent,), children = sweep_runs(client, "api")
    assert parent.info.run_id == result.parent_run_id and parent.info.experiment_id == result.experiment_id
    assert set(result.frame()["run_id"]) == {c.info.run_id for c in children}
    logged = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert any(p.startswith("api-") and p.endswith(".yaml") for p in logged), logged
    history = result.histories()  # from the results in memory
    assert len(history) == sum(c.data.metrics["epochs_trained"] for c in children)
    assert {"setting", "run_id", "seed", "epoch", "train_loss", "val_loss", "val_ece", "dead_fraction_0"} <= set(
        history.columns) and "epoch_seconds" not in history.columns  # (a group's, on the parent)
    stored = dataclasses.replace(result, epoch_histories={}).histories()  # as the store gives them back
    assert sorted(stored.columns) == sorted(history.columns)
    pd.testing.assert_frame_equal(stored[history.columns], history)
    untracked = jaxmlp.run_sweep({**SWEEP, "seeds": [0]}, tracking=False).histories()
    assert untracked["run_id"].isna().all()
    pd.testing.assert_frame_equal(untracked.drop(columns="run_id"), history.drop(columns="run_id"))


@pytest.mark.slow
def test_run_sweep_keeps_its_notices_and_prints_nothing(tmp_path, store_uri, capsys, caplog):
    """What the runner tells (here a resume with nothing to resume) is on the result and the
    `jaxmlp.sweep` logger, which prints nothing unless configured (the command prints it:
    test_sweep_run.py::test_the_command_prints_the_librarys_notices_and_warnings_on_stderr)."""
    uri = store_uri
    with caplog.at_level(logging.WARNING, logger="jaxmlp.sweep"):
        result = jaxmlp.run_sweep({**SWEEP, "name": "told", "grid": {}, "seeds": [0]}, tracking_uri=uri, resume=True)
    notice = f"--resume: no earlier parent run of sweep 'told' in {uri}; a new one is started"
    assert result.ok and result.notices == [notice]
    assert notice in [r.getMessage() for r in caplog.records if r.name == "jaxmlp.sweep"]
    assert capsys.readouterr() == ("", "")


@pytest.mark.slow  # trains until interrupted, then resumes the sweep (about half a minute)
def test_ctrl_c_raises_keyboard_interrupt_after_marking_runs_killed_and_resume_continues(tmp_path, store_uri):
    import _thread
    import signal
    import threading
    import time

    uri = store_uri
    spec = {"name": "ctrlc", "seeds": [0, 1], "base": {
        **TINY_BASE, "training": {"epochs": 4000, "batch_size": 64, "early_stopping": {"patience": None}}}}
    client = store_client(uri)

    start, sent = time.monotonic(), []

    def interrupt_while_training() -> None:  # as Ctrl-C in a notebook: KeyboardInterrupt in the main thread
        deadline = time.monotonic() + 300  # (a fresh environment's first imports, under load, are slow)
        while time.monotonic() < deadline:
            if any(c.info.status == "RUNNING" for c in sweep_runs(client, "ctrlc", settled=False)[1]):
                time.sleep(0.3)
                _thread.interrupt_main()
                sent.append(time.monotonic() - start)
                return
            time.sleep(0.2)

    # Python's own handler, as in a terminal or a notebook: a process started in the background
    # without job control inherits SIGINT ignored, and interrupt_main then does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_while_training, daemon=True).start()
    try:
        jaxmlp.run_sweep(spec, tracking_uri=uri)
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail(f"run_sweep returned after {time.monotonic() - start:.1f} s; the interrupt was "
                    + (f"sent at {sent[0]:.1f} s" if sent else "never sent (no child run RUNNING before)"))
    finally:
        signal.signal(signal.SIGINT, previous)
    (parent,), children = sweep_runs(client, "ctrlc")
    assert parent.info.status == "KILLED" and {c.info.status for c in children} == {"KILLED"}
    result = jaxmlp.run_sweep(spec, tracking_uri=uri, resume=True)
    assert result.ok and result.parent_run_id == parent.info.run_id
    assert list(result.frame()["status"]) == ["FINISHED", "FINISHED"]


@pytest.mark.slow  # a tracking process of its own
def test_a_signal_while_the_parent_run_opens_leaves_it_killed_not_running(tmp_path, store_uri):
    """Ctrl-C once the store has written the parent run, before the open returned: the tracking
    process was ended mid-open and the parent left RUNNING (seen under load in the early-phase
    Ctrl-C test of the command). Now the open finishes and the parent is marked KILLED."""
    import signal
    import sqlite3
    import time

    from jaxmlp.sweep.signals import Interrupts

    class SignalOnceTheParentIsWritten(Interrupts):
        """Its check in the runner's `_open` (the first comes right after the open is asked)
        waits for the parent's row in the store, then has the signal."""

        def check(self) -> None:
            deadline = time.monotonic() + 60
            while sys._getframe(1).f_code.co_name == "_open" and not self.received and time.monotonic() < deadline:
                try:
                    with sqlite3.connect(tmp_path / "mlflow.db") as db:
                        if db.execute("SELECT count(*) FROM runs").fetchone()[0]:
                            self.received.append(signal.SIGINT)
                except sqlite3.OperationalError:  # (locked while the tracking process writes)
                    pass
                time.sleep(0.005)
            super().check()

    spec = {"name": "opening", "seeds": [0], "base": SWEEP["base"]}
    with pytest.raises(KeyboardInterrupt):
        jaxmlp.run_sweep(spec, tracking_uri=store_uri, interrupts=SignalOnceTheParentIsWritten())
    (parent,), children = sweep_runs(store_client(store_uri), "opening", settled=False)
    assert parent.info.status == "KILLED" and not children


@pytest.mark.slow
def test_run_sweep_on_the_users_arrays_trains_every_variant_on_them(tmp_path):
    x, y = labelled()
    spec = {**SWEEP, "grid": {"model.activation": ["relu", "tanh"]}, "seeds": [0]}
    result = jaxmlp.run_sweep(spec, data=(x, y), tracking=False)
    assert {v.config.data.name for v in result.sweep.variants} == {"npz"}
    assert result.sweep.variants[0].config.data.digest is not None  # the arrays' file, as a user's file
    rows = result.frame()
    assert list(rows["status"]) == ["FINISHED", "FINISHED"] and rows["test_accuracy"].notna().all()
    assert result.sweep.hash == jaxmlp.run_sweep(spec, data=(x, y), tracking=False).sweep.hash


def test_a_dataset_without_its_files_is_refused_before_anything_is_logged(tmp_path):
    data = {"name": "mnist", "data_dir": str(tmp_path / "no-mnist"), "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(jaxmlp.DataError,
                       match=r"(?s)^<dict>: base.data \(mnist\): .*train-images-idx3-ubyte.gz \(missing\)"):
        jaxmlp.run_sweep({"name": "nodata", "base": {**TINY_BASE, "data": data}},
                         tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no cache
