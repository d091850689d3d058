"""Starts ``kora serve`` processes quickly, for the server SIGKILL loop (B4 C2).

Importing the server stack takes about a second; the loop restarts the server 50 times.  This
script imports it once, then forks a child per ``spawn`` command read from stdin.  Each child
runs exactly ``kora serve --db DB --host 127.0.0.1 --port PORT`` (``kora.cli.main``) and
prints its "connect to" line like the real command.  The parent answers ``pid <n>`` for each
child; children are reaped automatically (SIGCHLD ignored), so a killed child disappears.

Commands (one per line): ``spawn <db> <port>``; end of input ends the zygote.
"""

from __future__ import annotations

import os
import signal
import sys

import kora.cli
import kora.server.cli


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        command, *args = line.split()
        if command != "spawn":
            continue
        db, port = args
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setpgid(0, 0)  # a kill of the child never reaches the zygote's group
            code = kora.cli.main(["serve", "--db", db, "--host", "127.0.0.1", "--port", port])
            sys.stdout.flush()
            os._exit(code)
        print(f"pid {pid}", flush=True)


if __name__ == "__main__":
    main()
