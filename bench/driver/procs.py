"""Child processes (servers) and what /proc says about them.

Servers run in their own process so that the client side and the server side each get a
core on a 2-core machine, as in the peer bench.  A child never outlives the bench: it gets
``PR_SET_PDEATHSIG`` and is stopped (SIGTERM, then SIGKILL) when its block ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident set size now."""
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes(pid: int) -> int | None:
    """The highest resident set size since the process started (VmHWM)."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_delay_seconds(pid: int) -> float | None:
    """Seconds the process's live threads spent runnable but waiting for a core (the second
    field of ``/proc/<pid>/task/<tid>/schedstat``).  Threads that already ended are not
    counted, so a difference over a section is a lower bound."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                total += int(stat.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile, or the kernel keeps no schedstat
    return total / 1e9


@attrs.frozen
class Child:
    pid: int
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/"


class ChildFailedError(RuntimeError):
    """A server child exited or did not listen in time."""


@asynccontextmanager
async def run_child(
    argv: Sequence[str], port: int, *, log: Path, startup_timeout: float = 30.0
) -> AsyncIterator[Child]:
    """Start ``argv``, wait until it accepts TCP connections on ``port``, stop it on exit.

    The child's stderr goes to the file ``log``: a pipe nobody drains would stall a server
    that logs every connection.
    """
    process = _spawn(argv, log)
    try:
        with trio.fail_after(startup_timeout):
            while True:
                if process.poll() is not None:
                    text = await trio.Path(log).read_text()
                    raise ChildFailedError(f"{' '.join(argv[2:4])} exited: {text[-2000:]}")
                try:
                    stream = await trio.open_tcp_stream(HOST, port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        yield Child(process.pid, port)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


def _spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    # Popen from the main thread on purpose: PR_SET_PDEATHSIG fires when the *thread* that
    # forked the child ends, and trio.lowlevel.open_process forks from a worker thread that
    # is retired after a few idle seconds (the child got SIGKILL mid-run).
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_die_with_parent,
        )


async def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            while process.poll() is None:
                await trio.sleep(0.02)
    if process.poll() is None:
        process.kill()
    process.wait()


def kora_serve_argv(port: int, db: str) -> list[str]:
    """``kora serve`` with its defaults, on ``port`` with the SQLite file ``db``."""
    return [sys.executable, "-m", "kora.cli", "serve", "--port", str(port), "--db", db]


def module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
