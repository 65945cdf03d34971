"""One owner per parent run: the lease a sweep process writes on the parent it runs.

A lease names the process (host, pid, the process's start on this boot) and carries a
token and a heartbeat. It is held while that process lives: on the same host that is
checked directly (a pid reused by another process does not count, its start differs);
for a process on another host, while its heartbeat is younger than `LEASE_TIMEOUT`. A
sweep that ends, or is interrupted, releases it; a SIGKILL leaves it behind, and the next
`--resume` takes it over.

MLflow has no compare-and-set, so a claim is write, wait `SETTLE_SECONDS`, read back: of
two resumes started at the same moment, the one whose lease was overwritten refuses.

`refuse_if_held`, `claim` and `kill_abandoned` apply leases to a sweep's parent runs through a
tracker (a `Tracker` or `TrackerProcess`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

class ResumeRefused(RuntimeError):
    """--resume found a parent run of a different sweep file content, or one a live process runs."""


#: Seconds between heartbeats of a running sweep.
HEARTBEAT_SECONDS = 30.0
#: A lease from another host whose heartbeat is older than this is taken to be abandoned.
LEASE_TIMEOUT = 180.0
#: A claim waits this long before it reads back whose lease the parent holds.
SETTLE_SECONDS = 1.5


def _process_start(pid: int) -> str | None:
    """An identifier of the process's start (boot id and start time in clock ticks); None
    where the system does not say (no /proc) or the process does not exist."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) ": state is field 3, starttime 22
    return f"{boot}:{fields[19]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclasses.dataclass(frozen=True)
class Lease:
    host: str
    pid: int
    started: str | None
    token: str
    heartbeat: float

    @classmethod
    def mine(cls) -> "Lease":
        """A new lease for this process."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start(pid), uuid.uuid4().hex, time.time())

    def renewed(self) -> "Lease":
        return dataclasses.replace(self, heartbeat=time.time())

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, text: str | None) -> "Lease | None":
        """The lease in a tag's value; None for no lease, a released one ("") or an unreadable one."""
        if not text:
            return None
        try:
            fields = json.loads(text)
            return cls(str(fields["host"]), int(fields["pid"]), fields.get("started"), str(fields["token"]),
                       float(fields["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            return None

    def held_elsewhere(self, now: float | None = None) -> bool:
        """Whether another process that still runs holds this lease (an earlier sweep of this
        same process, such as a test's, does not count)."""
        return not (self.host == socket.gethostname() and self.pid == os.getpid()) and self.alive(now)

    def alive(self, now: float | None = None) -> bool:
        """Whether the process holding this lease still runs (see the module's docstring)."""
        if self.host == socket.gethostname():
            if self.started is not None:
                return _process_start(self.pid) == self.started
            return _pid_alive(self.pid)
        return (now or time.time()) - self.heartbeat < LEASE_TIMEOUT

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.heartbeat))
        return f"process {self.pid} on host {self.host} (last heartbeat {since})"


def refuse_if_held(parent: Any, mine: Lease, where: str | os.PathLike) -> None:
    """Refuse to resume a parent run (`ParentRun`) that another live process holds."""
    holder = Lease.decode(parent.lease)
    if holder is not None and holder.token != mine.token and holder.held_elsewhere():
        raise ResumeRefused(
            f"{where}: parent run {parent.run_id} is being run by {holder.describe()}; "
            "a second resume would train its variants twice. Wait for it to end (or stop it), then "
            "--resume again.")


def claim(tracker: Any, parent: Any, mine: Lease, where: str | os.PathLike) -> None:
    """Take the parent's lease: write it, wait, read back whose it is."""
    tracker.set_lease(parent.run_id, mine.encode())
    time.sleep(SETTLE_SECONDS)  # a resume started at the same moment writes its lease meanwhile
    now = tracker.parent(parent.run_id)
    holder = Lease.decode(now.lease if now else None)
    if holder != mine:
        raise ResumeRefused(
            f"{where}: parent run {parent.run_id} was taken at the same moment by "
            f"{holder.describe() if holder else 'another process'}; it continues the sweep, this one stops.")


def kill_abandoned(tracker: Any, experiment_id: str, sweep_name: str) -> list[str]:
    """A fresh run: parents of this sweep left RUNNING by a process that is gone are marked
    KILLED (with their RUNNING children); return what was done, to print."""
    notices = []
    for parent in tracker.running_parents(experiment_id, sweep_name):
        holder = Lease.decode(parent.lease)
        if holder is not None and holder.held_elsewhere():
            continue  # another sweep of this name, running now
        who = holder.describe() if holder else "a process that recorded no owner"
        n = tracker.kill_abandoned(parent.run_id, f"left RUNNING by {who}, which is gone")
        notices.append(f"parent run {parent.run_id} of this sweep was left RUNNING by {who}, which is gone: "
                       f"it and {n} child run(s) were marked KILLED; --resume would have continued it")
    return notices
