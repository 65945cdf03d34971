"""Leases on a sweep's parent runs, against a real SQLite store: a resume of a parent another
live process holds is refused, a claim overwritten meanwhile is refused, and a fresh run
marks parents of dead processes KILLED."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from jaxmlp.sweep import ownership
from jaxmlp.sweep.ownership import Lease, ResumeRefused, claim, kill_abandoned, refuse_if_held
from jaxmlp.tracking import Tracker

from tests.helpers.sweep import start_child, start_parent


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Tracker:
    tracker = Tracker(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")
    tracker.client
    return tracker


@pytest.fixture
def exp(store, request) -> str:
    return store.experiment(request.node.name)


def lease_of(pid: int) -> Lease:
    """The lease a process of this host with this pid would write."""
    return dataclasses.replace(Lease.mine(), pid=pid, started=ownership._process_start(pid), token=f"t{pid}")


@pytest.fixture
def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_parent_another_live_process_holds_is_refused_and_a_dead_ones_is_not(store, exp, dead_pid):
    live = start_parent(store, exp, "live")
    store.set_lease(live, lease_of(os.getppid()).encode())
    with pytest.raises(ResumeRefused, match=rf"s.yaml: parent run {live} is being run by process {os.getppid()}"):
        refuse_if_held(store.parent(live), Lease.mine(), "s.yaml")
    dead = start_parent(store, exp, "dead")
    store.set_lease(dead, lease_of(dead_pid).encode())
    refuse_if_held(store.parent(dead), Lease.mine(), "s.yaml")
    mine = Lease.mine()
    store.set_lease(live, mine.encode())
    refuse_if_held(store.parent(live), mine, "s.yaml")  # its own lease


def test_a_claim_holds_unless_another_lease_is_written_meanwhile(store, exp, monkeypatch):
    parent = start_parent(store, exp)
    mine = Lease.mine()
    monkeypatch.setattr(ownership.time, "sleep", lambda seconds: None)
    claim(store, store.parent(parent), mine, "s.yaml")
    assert Lease.decode(store.parent(parent).lease) == mine

    other = lease_of(os.getppid())
    monkeypatch.setattr(ownership.time, "sleep", lambda seconds: store.set_lease(parent, other.encode()))
    with pytest.raises(ResumeRefused, match=rf"parent run {parent} was taken at the same moment by process "
                                            rf"{os.getppid()}"):
        claim(store, store.parent(parent), mine, "s.yaml")


def test_a_fresh_run_kills_the_parents_of_dead_processes_and_leaves_live_ones(store, exp, dead_pid):
    dead, live, released = (start_parent(store, exp, name, sweep_name="s") for name in ("dead", "live", "released"))
    store.set_lease(dead, lease_of(dead_pid).encode())
    store.set_lease(live, lease_of(os.getppid()).encode())
    store.set_lease(released, "")
    child = start_child(store, exp, dead, "c", "k")
    notices = kill_abandoned(store, exp, "s")
    assert len(notices) == 2
    assert any(f"parent run {dead} of this sweep was left RUNNING by process {dead_pid}" in n for n in notices)
    assert any("a process that recorded no owner" in n and released in n for n in notices)
    status = {run: store.client.get_run(run).info.status for run in (dead, live, released, child)}
    assert status == {dead: "KILLED", live: "RUNNING", released: "KILLED", child: "KILLED"}
    assert store.parent(dead).lease == ""
