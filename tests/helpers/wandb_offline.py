"""Read the records of an offline W&B run file (`run-<id>.wandb`) for assertions.

wandb 0.31 no longer ships a Python reader (its core is in Go), so this reads the file
format directly: a 7-byte header, then LevelDB-log framed protobuf `Record`s.

`Run.finish()` can return before wandb's service has written every record, so `read_run`
waits for the run's `exit` record (written last) before it reads anything.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7  # ":W&B" + 2-byte magic + 1-byte version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(offset just after the record, record bytes) for every complete record."""
    assert data[:4] == b":W&B", "not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block  # block trailer padding
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):
            break  # a record still being written
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            out.append((pos, chunk))
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append((pos, pending + chunk))
        elif kind == 0 and length == 0:
            break
    return out


def records(path: Path) -> list[pb.Record]:
    out = []
    for _end, payload in frames(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def closed_run_records(run_folder: Path, timeout: float = 120.0) -> list[pb.Record]:
    """The run file's records once its `exit` record is there (the run is closed)."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(run_folder.glob("run-*.wandb"))
        if len(found) == 1 and found[0].stat().st_size > HEADER:
            written = records(found[0])
            if any(r.WhichOneof("record_type") == "exit" for r in written):
                return written
        if time.monotonic() > deadline:
            raise AssertionError(f"{run_folder}: no closed W&B run file after {timeout:.0f}s "
                                 f"(files: {[p.name for p in found]})")
        time.sleep(0.05)


def read_run(run_folder: Path, timeout: float = 120.0) -> dict[str, Any]:
    """{'history': [step dicts], 'summary': {...}, 'config': {...}, 'artifacts': [names]}."""
    run: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "artifacts": []}
    for record in closed_run_records(run_folder, timeout):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind in ("run", "config"):  # the run record carries the initial config
            updates = record.run.config.update if kind == "run" else record.config.update
            for item in updates:
                run["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "artifact":
            run["artifacts"].append(record.artifact.name)
    return run
