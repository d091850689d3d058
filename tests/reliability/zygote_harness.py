"""A helper process that forks children on demand (the SIGKILL loops start ~100 of them).

Starting Python and importing kora takes about a second; a zygote imports once and forks
per command, so a restart costs milliseconds.  The zygote answers each command with
``pid <n>``; its children are reaped automatically, so a killed child simply disappears.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio


class Zygote:
    def __init__(self, process: trio.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self._buffer = b""

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(
                    "the zygote ended: " + self.stderr_path.read_text(errors="replace")[-2000:]
                )
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    async def command(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(f"{text}\n".encode())


@asynccontextmanager
async def open_zygote(script: Path, workdir: Path) -> AsyncIterator[Zygote]:
    stderr_path = workdir / f"{script.stem}-stderr.log"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-u", str(script)],
            stdin=-1,  # subprocess.PIPE
            stdout=-1,
            stderr=stderr,
            cwd=workdir,
        )
        try:
            yield Zygote(process, stderr_path)
        finally:
            assert process.stdin is not None
            await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_dead(pid: int, within: float = 10.0) -> None:
    with trio.fail_after(within):
        while alive(pid):
            await trio.sleep(0.002)  # polling the kernel for the process's end


async def kill_and_wait(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    await wait_dead(pid)
