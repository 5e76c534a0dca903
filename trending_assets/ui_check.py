"""`make ui`'s check before `dg dev`: refuse at once when the port is taken or a Dagster
daemon already runs on this instance.

Started anyway, `dg dev` prints "Serving ..." before failing on the port, and its daemon
keeps running beside the first one, so two daemons tick the same sensors and schedules.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from pathlib import Path

import psutil

DAEMON_MODULES = ("dagster._daemon", "dagster-daemon")


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on (or holds) host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # A port a closed server left in TIME_WAIT is free to serve on again.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _is_daemon(cmdline: list[str]) -> bool:
    """`python -m dagster._daemon run ...` (what dg dev / dagster dev start) or
    `dagster-daemon run ...`."""
    names = [Path(part).name for part in cmdline[:3]]
    return "run" in cmdline and any(m in names for m in DAEMON_MODULES)


def daemons_on(dagster_home: Path) -> list[int]:
    """Process ids of Dagster daemons whose DAGSTER_HOME is `dagster_home`."""
    home = dagster_home.resolve()
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if not _is_daemon(process.info["cmdline"] or []):
                continue
            theirs = process.environ().get("DAGSTER_HOME")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if theirs and Path(theirs).resolve() == home:
            found.append(process.info["pid"])
    return found


def problems(host: str, port: int, dagster_home: Path) -> list[str]:
    found = []
    if port_taken(host, port):
        found.append(f"port {port} on {host} is taken (another `make ui`?): open "
                     f"http://{host}:{port}, or start on another port: make ui PORT={port + 1}")
    pids = daemons_on(dagster_home)
    if pids:
        found.append(f"a Dagster daemon (pid {', '.join(map(str, pids))}) already runs on "
                     f"this instance ({dagster_home}); a second one would tick the same "
                     "sensors and schedules twice: stop the running `make ui` first")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trending_assets.ui_check",
                                     description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dagster-home", type=Path, required=True)
    args = parser.parse_args(argv)
    found = problems(args.host, args.port, args.dagster_home)
    for problem in found:
        print(f"make ui: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
