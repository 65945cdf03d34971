"""`python -m jaxmlp.train` on bad input: exit code 2 and one message naming the option or file,
the bad value and what is allowed; no traceback. Nothing here trains."""
from __future__ import annotations

import pytest

from jaxmlp import train

from tests.helpers.sweep import write_sweep
from tests.helpers.train import run_main


def configs_of(argv):
    return train.config_from_args(train.build_parser().parse_args([str(a) for a in argv]))


def refused(argv) -> str:
    """The stderr of the command in this process, which must refuse ARGV as bad input."""
    code, out, err = run_main(argv)
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


# --- values: YAML flow syntax, comma lists, values that are not YAML ---------------------------------

@pytest.mark.parametrize("text, value", [
    ("[16,16]", [16, 16]), ("[16, 16]", [16, 16]), ("{a: 1, b: 2}", {"a": 1, "b": 2}), ("'a,b'", "a,b"),
    ("128,128", [128, 128]), ("16,", [16]), ("relu,tanh", ["relu", "tanh"]),
])
def test_flow_syntax_is_read_whole_and_comma_lists_still_split(text, value):
    assert train.parse_value(text) == value


def test_flow_lists_reach_the_configuration_from_set_and_flags():
    assert configs_of(["--set", "model.hidden=[16,16]"])[0].model.hidden == (16, 16)
    assert configs_of(["--hidden", "[16,16]"])[0].model.hidden == (16, 16)
    assert configs_of(["--set", "model.hidden=16,16"])[0].model.hidden == (16, 16)
    assert configs_of(["--hidden", "128,128"])[0].model.hidden == (128, 128)


def test_a_set_value_that_is_not_yaml_names_the_option_and_the_value():
    err = refused(["--set", "model.hidden=[16,16"])
    assert err.startswith("error: --set 'model.hidden=[16,16': '[16,16' is not valid YAML (")
    assert "column 7" in err and "[128, 128]" in err and err.count("\n") == 1


def test_a_flag_value_that_is_not_yaml_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(["--hidden", "[16,16"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --hidden: '[16,16' is not valid YAML (" in err and "Traceback" not in err


# --- the --config file ---------------------------------------------------------------------------------

def test_a_config_file_of_invalid_yaml_is_named_with_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {name: digits\nmodel: [\n")
    err = refused(["--config", path])
    assert err.startswith(f"error: {path}: not valid YAML: ") and err.count("\n") == 1
    assert f'in "{path}", line 2, column 6' in err


@pytest.mark.parametrize("name, reason", [("missing.yaml", "no such file"), ("folder", "is a directory")])
def test_an_unreadable_config_file_is_named_with_the_reason(tmp_path, name, reason):
    (tmp_path / "folder").mkdir()
    path = tmp_path / name
    assert refused(["--config", path]) == \
        f"error: --config {path}: {reason}; give a YAML file with data/model/optimizer/training sections\n"


def test_a_sweep_file_given_to_config_points_to_the_sweep_command(tmp_path):
    path = write_sweep(tmp_path, {"name": "acts", "base": {"model": {"hidden": [8]}},
                                  "grid": {"model.activation": ["relu", "tanh"]}, "seeds": 2})
    err = refused(["--config", path])
    assert "  - grid: unknown key" in err
    assert err.endswith(f"\n{path} looks like a sweep file (top-level base, grid): "
                        f"run `python -m jaxmlp.sweep {path}` instead\n")


def test_a_config_file_with_other_unknown_keys_gets_no_sweep_hint(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("modle: {hidden: [8]}\nseeds: 2\n")
    err = refused(["--config", path])
    assert "modle: unknown key" in err and "sweep" not in err


# --- seeds and prediction inputs ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", [2**32, 2**64])
def test_a_seed_beyond_uint32_is_refused(seed):
    """`train --seeds 4294967296` was an OverflowError traceback."""
    assert f"--seeds: [0, {seed}]; give distinct integers in 0..4294967295" in \
        refused(["--seeds", "0", str(seed)])


def test_a_seed_given_twice_is_refused():
    # --epochs 0 is refused after the seeds: without the seeds check the command stops there, untrained
    assert refused(["--seeds", "0", "1", "1", "--epochs", "0"]) == \
        "error: --seeds: [0, 1, 1]; give distinct integers in 0..4294967295\n"


@pytest.fixture
def checkpoint(tmp_path):
    """An untrained 4-8-3 checkpoint, saved without running the command."""
    import jax
    import jax.numpy as jnp

    from jaxmlp.checkpoint import save_checkpoint
    from jaxmlp.config import load_config
    from jaxmlp.models import MLP

    params = MLP((8,), 3).init(jax.random.key(0), jnp.zeros((1, 4)))
    return save_checkpoint(tmp_path / "ckpt", load_config({"model": {"hidden": [8]}}), params,
                           {"task": "classification", "n_outputs": 3, "input_shape": [4]})


@pytest.mark.parametrize("name, reason", [("nope.npy", "no such file"), ("nope.csv", "no such file"),
                                          ("folder.npy", "is a directory")])
def test_unreadable_prediction_inputs_are_named_with_the_reason(checkpoint, tmp_path, name, reason):
    (tmp_path / "folder.npy").mkdir()
    path = tmp_path / name
    assert refused(["--predict", checkpoint, "--inputs", path]) == \
        f"error: --inputs {path}: {reason}; give a .npy or .csv file of preprocessed inputs\n"


def test_a_deeply_nested_config_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "deep.yaml").write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "deep.yaml: its lists and mappings nest deeper than 64 levels" in refused(["--config", tmp_path / "deep.yaml"])


def test_predicting_on_zero_rows_is_refused(checkpoint, tmp_path):
    """A 0-row .npy was a traceback."""
    import numpy as np

    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    err = refused(["--predict", checkpoint, "--inputs", tmp_path / "empty.npy"])
    assert "inputs of shape (0, 4): " in err and "of at least one row" in err
