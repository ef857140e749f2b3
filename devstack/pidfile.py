"""Pid files of the stack's detached processes, and stopping them without hitting anybody else.

A stack that crashed, was killed or outlived a reboot leaves its pid files behind, and the next `up` or
`down` stops what they name. Linux reuses pids, so by then a recorded pid may belong to an unrelated
process, or to the same program serving another stack. What runs under a pid now is in
`/proc/PID/cmdline` (proc_pid_cmdline(5)); a recorded process counts as ours only while its argv still
holds what we started it with, including this stack's directory. Everything else under that pid is
left alone, and its pid file is dropped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path


def write(path: Path, pid: int) -> None:
    path.write_text(f"{pid}\n")


def read(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def argv(pid: int) -> list[str]:
    """What runs under `pid` now; empty when nothing does (or a zombie, whose cmdline is empty)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def runs(pid: int, marks: Sequence[str]) -> bool:
    """`pid` runs a process whose argv has every one of `marks` as a whole argument."""
    current = argv(pid)
    return bool(current) and all(m in current for m in marks)


def alive(pid: int) -> bool:
    """Runs and is not a zombie; reaps it first if it is our own exited child."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def running(path: Path, marks: Sequence[str]) -> int | None:
    """The pid recorded in `path` when it still runs the process `marks` describe, else None."""
    pid = read(path)
    return pid if pid is not None and pid > 1 and runs(pid, marks) and alive(pid) else None


def stop(path: Path, marks: Sequence[str], *, grace: float = 5.0) -> bool:
    """Stop the process recorded in `path` if it is still the one `marks` describe; drop the file.

    SIGTERM first, SIGKILL after `grace` seconds; to its whole process group when it leads one (the
    stack starts each in its own session, so the group is its own tree). True when it was running.
    """
    pid = running(path, marks)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid) and runs(pid, marks):
            _signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    path.unlink(missing_ok=True)
    return pid is not None


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
