"""Runs whose `cli run` process died (SIGKILL, OOM, a closed laptop) are marked failed.

The CLI records its host and pid as run tags; a run still STARTING or STARTED whose process
no longer exists on this host can never finish, so it is reported failed and its BERT
checkpoints (hundreds of MB each) are discarded, since nothing will resume them.
"""

from __future__ import annotations

import os
import socket

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from resources.storage import ArtifactCheckpoints, ArtifactStore
from trending_assets.ml.bert.checkpoint import discard_checkpoints

PID_TAG = "trending/cli_pid"
HOST_TAG = "trending/cli_host"


def cli_process_tags() -> dict[str, str]:
    """Tags that let a later `cli run` tell whether this process is still alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fail_dead_cli_runs(instance: DagsterInstance, store: ArtifactStore) -> list[str]:
    """Mark failed every unfinished run started by a CLI process of this host that is gone,
    discard its checkpoints; return the run ids. Runs from other hosts are left alone: a pid
    means nothing there."""
    host = socket.gethostname()
    ended = []
    unfinished = instance.get_runs(RunsFilter(
        statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED],
        tags={HOST_TAG: host}))
    for run in unfinished:
        pid = run.tags.get(PID_TAG, "")
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        instance.report_run_failed(
            run, f"the `cli run` process (pid {pid}) that ran it is gone; marked failed by a "
                 "later `cli run`")
        discard_checkpoints(ArtifactCheckpoints.of_run(store, "bert", run.run_id))
        ended.append(run.run_id)
    return ended
