"""One `cli run` at a time per Dagster instance: an exclusive lock file in $DAGSTER_HOME.

Two processes opening a fresh SQLite instance at once both create its schema (two
`alembic_version` rows, and every later step fails); on an existing instance both train and
the later registration fails on an alias conflict. The lock is taken before the instance is
opened and held until the process ends (the kernel drops it when a killed process exits).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "trending-cli-run.lock"


class CliBusyError(RuntimeError):
    """Another `cli run` holds the instance."""


@contextmanager
def exclusive_cli_run(dagster_home: Path) -> Iterator[None]:
    """Hold the instance's run lock for the block; refuse at once when another process holds
    it (waiting would only retrain what that run is training)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / LOCK_FILE
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise CliBusyError(
                f"another `cli run` (pid {holder}) is using the Dagster instance in "
                f"{dagster_home} (lock {path}); try again when it has finished") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
