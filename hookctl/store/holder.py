"""Who holds a lease: this process's identity, and whether another holder's process is gone.

A claim records its holder: the machine (hostname, boot id and pid namespace, so two
containers or two boots never look like one machine) and the process (pid and its start time
from /proc, so a reused pid is not mistaken for the holder). A worker on the same machine can
then take at once the claims of a holder whose process has died, instead of waiting out the
lease; a holder on another machine keeps its lease, since nothing here can see its processes.
Where /proc is missing (not Linux), a holder is never judged gone: leases are waited out.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class Holder:
    """One process that may hold leases."""

    machine: str  # "hostname/boot-id/pid-namespace": processes that can see each other
    pid: int
    started: str  # the process's start time (clock ticks since boot), "" when unknown

    @property
    def key(self) -> str:
        """The identity recorded with each claim: 16 hex digits of a hash of the whole, so a
        claimed row grows by 16 bytes, not by the ~80 of the identity (the lease_holders
        table keeps the parts)."""
        whole = f"{self.machine}/{self.pid}/{self.started}".encode()
        return hashlib.sha256(whole).hexdigest()[:16]


def this_process() -> Holder:
    """The identity of the running process."""
    pid = os.getpid()
    return Holder(machine=machine(), pid=pid, started=start_time(pid) or "")


def machine() -> str:
    """This machine as a lease holder sees it: hostname, boot id, pid namespace."""
    boot = _read(_PROC / "sys/kernel/random/boot_id").strip()
    try:
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        namespace = ""
    return f"{_hostname()}/{boot}/{namespace}"


def _hostname() -> str:
    """socket.gethostname() without importing socket where os.uname() says the same."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def start_time(pid: int) -> str | None:
    """When process `pid` started (field 22 of /proc/PID/stat); None if there is no such
    process or it is a zombie (killed, not yet reaped: gone for our purposes)."""
    text = _read(_PROC / str(pid) / "stat")
    if not text:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after it.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def is_gone(holder: Holder, here: Holder) -> bool:
    """True only when `holder` is provably dead: on this machine, and its process is gone."""
    if holder.machine != here.machine or not holder.started or not here.started:
        return False  # another machine, or no /proc to look in: keep its lease
    return start_time(holder.pid) != holder.started


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
