"""A chunk killed mid-training goes on from its snapshot on --resume, and ends as if never
interrupted: SIGKILL after a periodic snapshot, SIGTERM with the snapshot written on the way out."""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.helpers.sweep import (kill_leftovers, runs_by_status, start_sweep, store_client, sweep_runs, wait_until,
                           write_sweep)

pytestmark = pytest.mark.slow

EPOCHS = 1500  # the patience-None variant trains them all: a kill after its first snapshot lands mid-chunk
#: One chunk of two variants: one stops early (patience 5), one trains every epoch.
LONG = {"base": {"data": {"name": "digits"}, "model": {"hidden": [24]},
                 "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
                 "training": {"epochs": EPOCHS, "batch_size": 64}},
        "grid": {"training.early_stopping.patience": [5, None]}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, new_store, cache) -> dict:
    """The same sweep trained without interruption: each variant's final metrics by patience."""
    folder = tmp_path_factory.mktemp("whole")
    uri = new_store(folder)
    path = write_sweep(folder, {"name": "snap", **LONG})
    process = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, log=folder / "log")
    assert process.wait(timeout=600) == 0, (folder / "log").read_text()[-3000:]
    return _finals(store_client(uri), "snap")


def _finals(client, name: str) -> dict:
    _, children = sweep_runs(client, name)
    out = {}
    for c in (c for c in children if c.info.status == "FINISHED"):  # (a killed invocation's runs are KILLED)
        assert c.data.params["training.early_stopping.patience"] not in out
        history = client.get_metric_history(c.info.run_id, "val_loss")
        out[c.data.params["training.early_stopping.patience"]] = (
            {k: c.data.metrics[k] for k in ("test_accuracy", "test_loss", "best_epoch", "stopped_epoch")},
            [m.value for m in sorted(history, key=lambda m: m.step)])
    return out


@pytest.mark.parametrize("signum, every", [(signal.SIGKILL, "0.2"), (signal.SIGTERM, "1e9")],
                         ids=["SIGKILL-periodic", "SIGTERM-on-the-way-out"])
def test_resume_goes_on_from_the_snapshot_and_ends_as_if_uninterrupted(tmp_path, store_uri, cache, uninterrupted,
                                                                      signum, every):
    uri = store_uri
    path = write_sweep(tmp_path, {"name": "snap", **LONG})
    snapshots = tmp_path / "snapshots"
    client = store_client(uri)
    first = start_sweep(path, "--tracking-uri", uri, "--compile-cache", cache, "--snapshot-every", every,
                        log=tmp_path / "first.log")
    try:
        if signum == signal.SIGKILL:
            wait_until(lambda: any(snapshots.glob("*.snapshot")), "a snapshot was written", first,
                       tmp_path / "first.log")
        else:
            wait_until(lambda: runs_by_status(sweep_runs(client, "snap", settled=False)[1]).get("FINISHED"),
                       "the early-stopped variant FINISHED", first, tmp_path / "first.log")
        signalled = time.time()
        os.kill(first.pid, signum)
        code = first.wait(timeout=120)
    finally:
        kill_leftovers([first])
    assert code in (-signal.SIGKILL, 128 + signal.SIGTERM), (tmp_path / "first.log").read_text()[-3000:]
    (snapshot,) = snapshots.glob("*.snapshot")
    if signum == signal.SIGTERM:  # written on the way out, not before (--snapshot-every 1e9)
        assert snapshot.stat().st_mtime >= signalled - 0.05  # (file times are a few ms coarse)

    second = start_sweep(path, "--resume", "--tracking-uri", uri, "--compile-cache", cache,
                         "--snapshot-every", every, log=tmp_path / "second.log")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    (line,) = [line for line in log.splitlines() if "goes on from its snapshot after epoch" in line]
    assert 0 < int(line.rsplit(" ", 1)[1]) < EPOCHS
    assert not snapshot.exists() and not any(snapshots.iterdir())  # removed once the chunk ended
    assert _finals(client, "snap") == uninterrupted
    whole = uninterrupted["None"]
    assert len(whole[1]) == EPOCHS and whole[0]["stopped_epoch"] == EPOCHS
