"""`python -m jaxmlp.train` end to end: training with --save, --evaluate, --predict, --set,
--config, --json and exit code 2 on bad input. Runs in-process (`main(argv)`) except for
the module entry point; every number is checked against a float64 NumPy evaluation of the
saved parameters (tests/helpers/reference_mlp.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from jaxmlp import train
from jaxmlp.checkpoint import load_checkpoint
from jaxmlp.data import load_dataset

from tests.helpers.reference_mlp import classification_metrics, forward, softmax
from tests.helpers.train import jax_cache_settings_restored, run_main

#: A 3-class synthetic problem: 204 train / 36 val / 60 test rows, 6 features; 4 epochs of a 6-8-3 MLP.
DATA = ["--dataset", "synthetic", "--set", "data.n_samples=300", "--set", "data.n_features=6",
        "--set", "data.n_classes=3"]
TINY = [*DATA, "--hidden", "8", "--epochs", "4", "--lr", "0.02", "--no-progress"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A compilation cache folder for this module; JAX's global cache settings restored after it."""
    with jax_cache_settings_restored():
        yield ["--compile-cache", tmp_path_factory.mktemp("xla")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
    """Two seeds trained and saved with --json: (summary, save folder)."""
    folder = tmp_path_factory.mktemp("saved")
    code, out, err = run_main([*TINY, "--seeds", "0", "1", "--save", folder, "--json", *cache])
    assert code == 0, err
    return json.loads(out), folder


@pytest.fixture(scope="module")
def test_split():
    """The synthetic test split exactly as the command loads it (host arrays)."""
    cfg = train.config_from_args(train.build_parser().parse_args(DATA))[0]
    return load_dataset(cfg.data).test


# --- training, --save and --json -----------------------------------------------------------------

@pytest.mark.slow
def test_json_has_one_row_and_one_checkpoint_folder_per_seed(trained):
    summary, folder = trained
    assert (summary["dataset"], summary["task"]) == ("synthetic", "classification")
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (204, 36, 60)
    assert [row["seed"] for row in summary["variants"]] == [0, 1]
    for row in summary["variants"]:
        assert row["checkpoint"] == str(folder / f"seed_{row['seed']}")
        assert sorted(p.name for p in Path(row["checkpoint"]).iterdir()) == ["config.json", "params.msgpack"]
        ckpt = load_checkpoint(row["checkpoint"])
        assert ckpt.config.training.seed == row["seed"]
        assert (ckpt.config.model.hidden, ckpt.config.training.epochs) == ((8,), 4)
        assert ckpt.meta == {"dataset": "synthetic", "task": "classification", "n_outputs": 3, "input_shape": [6]}
        assert row["stopped_epoch"] == 4 and 1 <= row["best_epoch"] <= 4 and row["diverged"] is False
    assert sorted(p.name for p in folder.iterdir()) == ["seed_0", "seed_1"]
    kernels = [load_checkpoint(r["checkpoint"]).params["params"]["hidden_0"]["kernel"] for r in summary["variants"]]
    assert not np.allclose(kernels[0], kernels[1])


def test_saved_parameters_are_those_the_reported_test_metrics_belong_to(trained, test_split):
    summary, _ = trained
    for row in summary["variants"]:
        ours = classification_metrics(load_checkpoint(row["checkpoint"]).params, test_split.x, test_split.y)
        assert row["test_accuracy"] == pytest.approx(ours["accuracy"], abs=1e-6)
        assert row["test_loss"] == pytest.approx(ours["loss"], rel=1e-5)


def test_plain_summary_prints_one_line_per_seed(trained, capsys):
    summary, _ = trained
    train.print_summary(summary)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("synthetic (classification): 204 train / 36 val / 60 test; compile ")
    assert lines[1].split() == [c for c in summary["variants"][0] if c != "checkpoint"]
    assert [line.split()[0] for line in lines[2:4]] == ["0", "1"]
    assert lines[4:] == [f"saved seed {r['seed']} -> {r['checkpoint']}" for r in summary["variants"]]


# --- --evaluate and --predict ------------------------------------------------------------------

def test_evaluate_of_a_saved_folder_gives_the_training_runs_test_metrics(trained):
    summary, _ = trained
    for row in summary["variants"]:
        code, out, err = run_main(["--evaluate", row["checkpoint"]])
        assert code == 0, err
        evaluated = json.loads(out)
        assert evaluated["checkpoint"] == row["checkpoint"]
        assert evaluated["test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-6)
        assert evaluated["test_loss"] == pytest.approx(row["test_loss"], rel=1e-5)


@pytest.fixture(scope="module")
def input_files(tmp_path_factory, test_split):
    """The test split's inputs as .npy and as .csv (float32 written exactly)."""
    folder = tmp_path_factory.mktemp("inputs")
    np.save(folder / "x.npy", test_split.x)
    np.savetxt(folder / "x.csv", test_split.x, delimiter=",", fmt="%.9e")
    return {"npy": folder / "x.npy", "csv": folder / "x.csv"}


@pytest.mark.parametrize("suffix", ["npy", "csv"])
def test_predict_gives_probabilities_whose_argmax_is_the_evaluated_accuracy(trained, test_split, input_files, suffix):
    row = trained[0]["variants"][0]
    code, out, err = run_main(["--predict", row["checkpoint"], "--inputs", input_files[suffix], "--json"])
    assert code == 0, err
    probs = np.asarray(json.loads(out)["predictions"])
    assert probs.shape == (60, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    logits, _ = forward(load_checkpoint(row["checkpoint"]).params, test_split.x)
    np.testing.assert_allclose(probs, softmax(logits), rtol=1e-5, atol=1e-7)
    assert np.mean(probs.argmax(axis=1) == test_split.y) == pytest.approx(row["test_accuracy"], abs=1e-6)


def strict_json(text: str):
    """`text` parsed as RFC 8259 JSON: NaN and Infinity are refused, as strict parsers do."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_diverged_checkpoint_evaluates_to_strict_json_with_a_warning(trained, input_files, tmp_path):
    """NaN parameters evaluated to `test_loss: NaN` (which strict parsers reject) with no word."""
    import jax

    from jaxmlp.checkpoint import save_checkpoint

    good = load_checkpoint(trained[0]["variants"][0]["checkpoint"])
    folder = save_checkpoint(tmp_path / "diverged", good.config,
                             jax.tree_util.tree_map(lambda a: np.full_like(a, np.nan), good.params), good.meta)
    code, out, err = run_main(["--evaluate", folder])
    assert code == 0
    assert strict_json(out)["test_loss"] is None
    assert err.startswith(f"warning: {folder}: 83 of 83 parameters are NaN or infinite")  # 6*8+8 + 8*3+3
    code, out, _ = run_main(["--predict", folder, "--inputs", input_files["npy"], "--json"])
    assert code == 0 and all(p is None for row in strict_json(out)["predictions"] for p in row)


def test_json_line_writes_every_non_finite_number_as_null():
    from jaxmlp.runtime import json_line

    value = {"a": float("nan"), "b": [np.float32("inf"), -np.inf, 1.5, np.float32(0.25)], "c": (np.int64(3), True),
             "d": None, "e": "NaN", "f": Path("x")}
    assert strict_json(json_line(value)) == {"a": None, "b": [None, None, 1.5, 0.25], "c": [3, True], "d": None,
                                             "e": "NaN", "f": "x"}


@pytest.mark.parametrize("module", ["jaxmlp.train", "jaxmlp.commands.sweep", "jaxmlp.bench"])
def test_json_help_says_non_finite_numbers_are_null(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    (action,) = [a for a in parser._actions if "--json" in a.option_strings]
    assert "a NaN or infinite number, e.g. of a diverged variant, is null" in action.help


def test_predict_without_json_prints_the_array(trained, input_files):
    code, out, _ = run_main(["--predict", trained[0]["variants"][0]["checkpoint"], "--inputs", input_files["npy"]])
    assert code == 0
    assert out.startswith("[[") and out.count("\n") >= 60


def test_predict_refuses_inputs_of_the_wrong_width(trained, tmp_path):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.ones((5, 12), np.float32))  # 12 features for a 6-feature model: 10 made-up rows
    code, out, err = run_main(["--predict", trained[0]["variants"][0]["checkpoint"], "--inputs", wide, "--json"])
    assert code == 2 and out == ""
    assert err.startswith("error: inputs of shape (5, 12): the model takes rows of 6 features")


# --- one seed, --config, flags and --set ----------------------------------------------------------

CONFIG_FILE = {
    "data": {"name": "synthetic", "n_samples": 300, "n_features": 6, "n_classes": 3},
    "model": {"hidden": [8], "dropout": 0.3, "activation": "tanh"},
    "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.5},
    "training": {"epochs": 2, "seed": 5, "batch_size": 16},
}


@pytest.mark.slow  # a second compiled program; the precedence itself is checked without training below
def test_one_seed_saves_into_the_folder_itself_with_file_then_flags_then_set(tmp_path, cache):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(CONFIG_FILE))
    folder = tmp_path / "best"
    code, out, err = run_main(["--config", path, "--lr", "0.05", "--dropout", "0.1",
                               "--set", "optimizer.learning_rate=0.02", "--save", folder, "--json",
                               "--no-progress", *cache])
    assert code == 0, err
    (row,) = json.loads(out)["variants"]
    assert row["seed"] == 5 and row["checkpoint"] == str(folder) and row["stopped_epoch"] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "params.msgpack"]
    cfg = load_checkpoint(folder).config
    assert cfg.optimizer.learning_rate == 0.02  # --set beats the flag, which beats the file
    assert cfg.model.dropout == 0.1  # the flag beats the file
    assert (cfg.model.hidden, cfg.model.activation, cfg.optimizer.name, cfg.optimizer.momentum,
            cfg.training.batch_size) == ((8,), "tanh", "sgd", 0.5, 16)  # the file where nothing overrides it


def configs_of(argv):
    return train.config_from_args(train.build_parser().parse_args([str(a) for a in argv]))


def test_precedence_is_file_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(CONFIG_FILE))
    assert configs_of(["--config", path])[0].optimizer.learning_rate == 0.1
    assert configs_of(["--config", path, "--lr", "0.05"])[0].optimizer.learning_rate == 0.05
    both = ["--config", path, "--set", "optimizer.learning_rate=0.02", "--lr", "0.05"]
    assert configs_of(both)[0].optimizer.learning_rate == 0.02  # order on the line does not matter
    last = configs_of(["--set", "model.dropout=0.2", "--set", "model.dropout=0.4"])[0]
    assert last.model.dropout == 0.4  # of two --set of one key, the last wins
    seeds = configs_of(["--config", path, "--seeds", "3", "7"])
    assert [c.training.seed for c in seeds] == [3, 7]
    assert {c.model.hidden for c in seeds} == {(8,)}


@pytest.mark.parametrize("text, value", [
    ("128,128", [128, 128]), ("16,", [16]), ("0.1,0.2", [0.1, 0.2]), ("relu,tanh", ["relu", "tanh"]),
    ("3", 3), ("0.5", 0.5), ("-2", -2), ("null", None), ("~", None), ("true", True), ("relu", "relu"),
])
def test_parse_value_reads_values_as_yaml_with_commas_for_lists(text, value):
    parsed = train.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_values_reach_the_configuration_with_their_types():
    cfg = configs_of(["--hidden", "32", "--lr", "1e-3", "--set", "training.early_stopping.patience=null",
                      "--set", "optimizer.clip_norm=2", "--activation", "elu"])[0]
    assert cfg.model.hidden == (32,)  # one width becomes a list of one layer
    assert cfg.optimizer.learning_rate == 0.001  # YAML reads 1e-3 as a string; the configuration converts it
    assert cfg.training.early_stopping.patience is None
    assert cfg.optimizer.clip_norm == 2.0 and cfg.model.activation == "elu"
    assert configs_of(["--hidden", "32,16"])[0].model.hidden == (32, 16)


# --- bad input: exit code 2 and a message naming the key and the fix -----------------------------------

@pytest.fixture
def bad_inputs(tmp_path, trained, cache):
    listing = tmp_path / "list.yaml"
    listing.write_text("- data\n- model\n")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 6), np.float32))
    checkpoint = trained[0]["variants"][0]["checkpoint"]
    return {
        "unknown key": (["--set", "model.hiden=3"], "model.hiden: unknown key (did you mean 'hidden'?)"),
        "unknown section": (["--set", "modle.hidden=3"], "modle: unknown key (did you mean 'model'?)"),
        "bad value": (["--dropout", "1.5"], "model.dropout: bad value 1.5"),
        "bad choice": (["--activation", "relux"], "model.activation: 'relux' is not allowed (did you mean 'relu'?)"),
        "set without =": (["--set", "model.dropout"], "--set 'model.dropout': expected KEY=VALUE"),
        "missing config": (["--config", tmp_path / "nope.yaml"], "nope.yaml"),
        "config not a mapping": (["--config", listing], f"{listing}: expected a mapping of sections"),
        "batch too large": ([*DATA, "--batch-size", "500", *cache], "training.batch_size: 500 exceeds the 204 training samples"),
        "predict without inputs": (["--predict", checkpoint], "--predict needs --inputs FILE"),
        "evaluate missing checkpoint": (["--evaluate", tmp_path / "gone"], "gone: not a jaxmlp checkpoint (missing config.json)"),
        "predict missing checkpoint": (["--predict", tmp_path / "gone", "--inputs", x], "missing config.json"),
    }


@pytest.mark.parametrize("case", ["unknown key", "unknown section", "bad value", "bad choice", "set without =",
                                  "missing config", "config not a mapping", "batch too large",
                                  "predict without inputs", "evaluate missing checkpoint",
                                  "predict missing checkpoint"])
def test_bad_input_exits_with_2_and_says_what_is_wrong(bad_inputs, case):
    argv, message = bad_inputs[case]
    code, out, err = run_main(argv)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and message in err


# --- the module entry point in a fresh process ---------------------------------------------------------

def test_module_entry_point_exits_with_the_commands_code():
    """One fresh process (the success path's code 0 is checked in-process above)."""
    bad = subprocess.run([sys.executable, "-m", "jaxmlp.train", "--set", "model.hiden=3"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "error: command line: 1 invalid value(s)" in bad.stderr and "did you mean 'hidden'?" in bad.stderr


def test_set_reads_comma_lists_like_the_flags():
    """`--set KEY=a,b` goes through parse_value as the flags do (a list), not yaml.safe_load alone (a string)."""
    assert configs_of(["--set", "model.hidden=32,16"])[0].model.hidden == (32, 16)
    assert configs_of(["--set", "model.hidden=64,"])[0].model.hidden == (64,)


def test_missing_dataset_files_exit_with_2_and_name_the_fix(tmp_path, cache):
    """DataUnavailableError (MNIST family without its files) is bad input: exit code 2, no traceback."""
    code, out, err = run_main(["--dataset", "mnist", "--set", f"data.data_dir={tmp_path}",  # no files there
                               "--set", f"data.cache_dir={tmp_path / 'cache'}",  # and no prepared cache
                               "--no-progress", *cache])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "data.data_dir" in err and "JAXMLP_DATA_DIR" in err
