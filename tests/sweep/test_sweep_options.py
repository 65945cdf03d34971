"""Sweep command options and what a parent run records: --devices and --max-variants in the
plan, and the library's `devices` and `max_variants` in the run; the parent's tags (git
commit, versions, note); `python -m jaxmlp.tracking model RUN_ID [--register NAME]`; a
repeated run with a warm compilation cache compiles nothing."""
from __future__ import annotations

import contextlib
import io
import json
import platform
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest


from tests.helpers.sweep import TINY_BASE, run_sweep_cli, run_tracked, store_client, write_sweep

SPEC = {"name": "options", "description": "relu against tanh, two seeds each: a note for the parent run",
        "base": TINY_BASE, "grid": {"model.activation": ["relu", "tanh"]}, "seeds": 2}


def _plan(path, *args) -> list[list[str]]:
    """The group rows that --dry-run prints: [id, variants, structures, devices, ...]."""
    result = run_sweep_cli(path, "--dry-run", *args)
    assert result.code == 0, result.err
    return [line.split() for line in result.out.splitlines()[2:] if line.strip()]


def test_devices_and_max_variants_override_the_file_in_the_plan(tmp_path):
    path = write_sweep(tmp_path, {**SPEC, "execution": {"devices": "all"}})
    assert [(r[1], r[3]) for r in _plan(path)] == [("4", "2")]  # conftest: two XLA CPU devices
    assert [(r[1], r[3]) for r in _plan(path, "--devices", "one")] == [("4", "1")]
    # --max-variants bounds the slots of a program; the other variants wait in its queue
    assert [(r[1], r[7], r[8]) for r in _plan(path, "--max-variants", "2")] == [("4", "2", "2")]
    assert [(r[1], r[3], r[7]) for r in _plan(path, "--max-variants", "1")] == [("4", "1", "1")]  # 1 slot: not sharded
    assert [(r[1], r[3], r[7]) for r in _plan(path, "--devices", "one", "--max-variants", "1")] == [("4", "1", "1")]


def test_the_dry_run_of_a_study_over_two_widths_counts_a_program_per_shape(tmp_path):
    """It said "1 compiled program(s)" while the study compiles one program per width."""
    spec = {"name": "opt-shapes", "base": TINY_BASE, "optimize": {"trials": 4, "batch": 2, "params": {
        "model.hidden": {"choice": [[8], [16]]}, "optimizer.learning_rate": {"loguniform": [1e-2, 0.5]}}}}
    result = run_sweep_cli(write_sweep(tmp_path, spec), "--dry-run")
    assert result.code == 0, result.err
    assert "1 group(s), 2 compiled program(s)" in result.out and "2 programs, one per shape" in result.out
    one = run_sweep_cli(write_sweep(tmp_path, {**spec, "name": "opt-one-shape", "optimize": {
        **spec["optimize"], "params": {"optimizer.learning_rate": {"loguniform": [1e-2, 0.5]}}}}), "--dry-run")
    assert one.code == 0 and "1 group(s), 1 compiled program(s)" in one.out, one.err


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, cache) -> SimpleNamespace:
    """The sweep run by the library from a git work tree, on one device (of the two XLA CPU
    devices pytest has, conftest.py), two variants at a time in its one program (the command's
    --max-variants 2 --devices one)."""
    folder = tmp_path_factory.mktemp("options")
    path = write_sweep(folder, SPEC)
    git = lambda *a: subprocess.run(["git", *a], cwd=folder, capture_output=True, text=True, check=True)  # noqa: E731
    git("init", "-q")
    git("add", path.name)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "the sweep")
    run = run_tracked(path, cache, max_variants=2, devices="one")
    (parent,) = run.parents
    return SimpleNamespace(result=run.result, uri=run.uri, client=run.client, parent=parent, children=run.children,
                           commit=git("rev-parse", "HEAD").stdout.strip(), path=path)


@pytest.mark.slow
def test_max_variants_bounds_the_slots_of_the_one_program(tracked):
    assert tracked.result.ok, tracked.result.failures
    assert sum(r.finished for r in tracked.result.records) == 4
    assert len({c.data.tags["jaxmlp.group"] for c in tracked.children}) == 1
    assert tracked.parent.data.params["n_programs"] == "1"
    # two slots for four variants: they trained two at a time, every epoch of the program two slots
    slot_epochs, variant_epochs = tracked.result.slot_epochs, tracked.result.variant_epochs
    assert slot_epochs % 2 == 0 and slot_epochs / 2 < variant_epochs <= slot_epochs


@pytest.mark.slow
def test_the_parent_carries_git_commit_versions_devices_and_the_note(tracked):
    import flax
    import jax
    import optax

    tags = tracked.parent.data.tags
    assert tags["mlflow.source.git.commit"] == tracked.commit
    assert (tags["jax_version"], tags["flax_version"], tags["optax_version"]) == (
        jax.__version__, flax.__version__, optax.__version__)
    assert tags["python_version"] == platform.python_version()
    assert tags["devices"] == ", ".join(str(d) for d in jax.devices())
    assert tags["mlflow.note.content"] == SPEC["description"]
    assert tags["jaxmlp.sweep_file"] == str(tracked.path)


@pytest.mark.slow
def test_a_sweep_file_outside_git_gets_no_commit_tag(tmp_path, cache):
    run = run_tracked(write_sweep(tmp_path, {**SPEC, "name": "no-git", "grid": {}, "seeds": [0]}), cache)
    assert run.result.ok
    (parent,) = run.parents
    assert "mlflow.source.git.commit" not in parent.data.tags and parent.data.tags["jax_version"]


def _tracking_cli(*args) -> str:
    from jaxmlp.tracking.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(a) for a in args]) == 0
    return out.getvalue()


@pytest.mark.slow
def test_tracking_model_command_logs_and_registers_a_childs_checkpoint(tracked, tmp_path, monkeypatch):
    import mlflow.pyfunc

    from jaxmlp.checkpoint import load_checkpoint, predict

    child = max(tracked.children, key=lambda c: c.data.metrics["best_val_loss"])  # not the one with a model
    run_id = child.info.run_id
    before = {m.model_id for m in tracked.client.search_logged_models([tracked.parent.info.experiment_id])}
    out = _tracking_cli("model", run_id, "--tracking-uri", tracked.uri, "--register", "from-cli")
    logged, registered = out.splitlines()
    assert logged.startswith("logged models:/") and logged.endswith(f" on run {run_id}")
    assert registered == "registered as from-cli version 1"
    uri = logged.split()[1]
    models = {m.model_id: m for m in tracked.client.search_logged_models([tracked.parent.info.experiment_id])}
    (new,) = set(models) - before
    assert uri == f"models:/{new}" and models[new].source_run_id == run_id
    (version,) = tracked.client.search_model_versions("name='from-cli'")
    assert (int(version.version), version.run_id) == (1, run_id)

    checkpoint = load_checkpoint(tracked.client.download_artifacts(run_id, "checkpoint", str(tmp_path)))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked.uri)
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    expected = predict(checkpoint, x)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(uri).predict(x), expected, rtol=1e-6)
    np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/from-cli/1").predict(x), expected, rtol=1e-6)

    again = _tracking_cli("model", run_id, "--tracking-uri", tracked.uri)  # without --register: no new version
    assert len(again.splitlines()) == 1 and again.split()[1] != uri
    assert len(tracked.client.search_model_versions("name='from-cli'")) == 1


def test_tracking_model_command_refuses_an_unknown_run_and_a_run_without_checkpoint(tracked, capsys):
    from jaxmlp.tracking.__main__ import main

    before = tracked.client.search_logged_models([tracked.parent.info.experiment_id])
    for run_id, says in (("0123abc", f"no run with the id '0123abc' in {tracked.uri}"),
                         (tracked.parent.info.run_id, "has no checkpoint artifact: it is not a variant's child run")):
        assert main(["model", run_id, "--tracking-uri", tracked.uri]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "Traceback" not in err
    assert len(tracked.client.search_logged_models([tracked.parent.info.experiment_id])) == len(before)


@pytest.mark.slow
def test_tracking_command_on_a_new_store_prints_its_answer_and_not_mlflows_info_lines(tmp_path):
    result = subprocess.run([sys.executable, "-m", "jaxmlp.tracking", "model", "0123abc", "--tracking-uri",
                             f"sqlite:///{tmp_path}/new.db"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: no run with the id '0123abc' in sqlite:///{tmp_path}/new.db"]


COUNT_COMPILATIONS = """
import collections, json, sys
import jax.monitoring
events = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kwargs: events.update([event]))
from jaxmlp.commands.sweep import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "events": events}, f)
"""


@pytest.mark.slow
def test_a_repeated_run_with_a_warm_compilation_cache_compiles_nothing(tmp_path):
    """JAX's own events: the second process finds every program in the persistent cache (no
    miss, as many hits as requests) and writes no new cache file."""
    path = write_sweep(tmp_path, {**SPEC, "name": "warm", "seeds": [0]})
    xla = tmp_path / "xla"

    def run(n: int) -> dict:
        out = tmp_path / f"events{n}.json"
        done = subprocess.run([sys.executable, "-c", COUNT_COMPILATIONS, str(out), str(path), "--no-tracking",
                               "--no-progress", "--compile-cache", str(xla)], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(out.read_text())
        assert result["code"] == 0
        return result["events"]

    cold = run(1)
    files = sorted(p.name for p in xla.rglob("*") if p.is_file())
    warm = run(2)
    requests = "/jax/compilation_cache/compile_requests_use_cache"
    assert cold.get("/jax/compilation_cache/cache_misses", 0) > 0 and files
    assert warm.get(requests, 0) >= cold.get("/jax/compilation_cache/cache_misses", 0)
    assert warm.get("/jax/compilation_cache/cache_misses", 0) == 0
    assert warm.get("/jax/compilation_cache/cache_hits", 0) == warm[requests]
    assert "/jax/compilation_cache/task_disabled_cache" not in warm
    assert sorted(p.name for p in xla.rglob("*") if p.is_file()) == files


@pytest.mark.parametrize("args, message", [
    (["--max-variants", "-5"], "argument --max-variants: '-5': give a whole number, 1 or more"),
    (["--max-variants", "0"], "argument --max-variants: '0': give a whole number, 1 or more"),
])
def test_a_variant_cap_that_is_not_positive_is_an_argparse_error(tmp_path, capsys, args, message):
    """`--max-variants -5` was a traceback; `0` was silently accepted."""
    from jaxmlp.commands.sweep import main

    path = write_sweep(tmp_path, {"name": "cap", "base": TINY_BASE})
    with pytest.raises(SystemExit) as exit_:
        main([str(path), *args, "--no-tracking"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--register", ""], "error: --register '': "),
    (["--register", "a/b"], "error: --register 'a/b': Invalid model name 'a/b'. Names cannot contain '/' or ':'."),
    (["--register", "ok", "--alias", "a b"], "error: --alias 'a b': Invalid alias name: 'a b'."),
    (["--register", "ok", "--alias", "latest"], "error: --alias 'latest': 'latest' alias name (case insensitive) is reserved."),
    (["--register", "ok", "--alias", "v2"], "error: --alias 'v2': Version alias name 'v2' is reserved."),
])
def test_a_name_the_registry_would_refuse_is_refused_before_training(tmp_path, args, message):
    """`--register ""` was silently ignored; `--register a/b` refused only after training; a
    reserved alias ('latest', 'v<N>') too. MLflow's own checks, under either of their names
    (MLflow 3.18 renamed the alias ones)."""
    path = write_sweep(tmp_path, {"name": "register", "base": TINY_BASE})
    result = run_sweep_cli(path, *args, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--no-progress")
    assert result.code == 2 and result.out == ""
    assert result.err.startswith(message) and result.err.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged


@pytest.mark.parametrize("target, message", [
    ("/dev/zero", "/dev/zero: not a regular file; give a sweep file (YAML)"),
    ("deep.yaml", "deep.yaml: its lists and mappings nest deeper than 64 levels"),
])
def test_a_device_or_a_deeply_nested_file_is_refused_in_one_line(tmp_path, target, message):
    """/dev/zero was "no such sweep file"; a 5,000-deep list a RecursionError."""
    (tmp_path / "deep.yaml").write_text("name: deep\nbase: " + "[" * 5000 + "]" * 5000 + "\n")
    path = target if target.startswith("/") else tmp_path / target
    result = run_sweep_cli(path, "--no-tracking")
    assert result.code == 2 and result.err.startswith("error: ") and message in result.err
    assert result.err.count("\n") == 1


@pytest.mark.parametrize("args", [["--dry-run"], ["--no-tracking", "--no-progress"], ["--no-progress"]])
def test_a_plan_that_cannot_fit_the_memory_budget_is_refused_before_training(tmp_path, args):
    """--dry-run showed a 225 GiB part against a 6 GiB budget without a word; the run died of memory."""
    path = write_sweep(tmp_path, {"name": "huge", "base": {"data": {"name": "digits"},
                                                            "model": {"hidden": [100_000, 100_000]}}})
    result = run_sweep_cli(path, *args, "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db")
    assert result.code == 2
    (line,) = result.err.splitlines()
    assert line.startswith(f"error: {path}: group g00-") and "(digits 100000-100000 adam batch 32, " in line
    assert "GiB per device, above the memory budget of " in line and "shrink model.hidden" in line
    assert ("sweep 'huge'" in result.out) == ("--dry-run" in args)  # the plan is still shown
    if (tmp_path / "mlflow.db").exists():  # (the tracking process, started early, may have opened it)
        assert store_client(f"sqlite:///{tmp_path}/mlflow.db").get_experiment_by_name("huge") is None
