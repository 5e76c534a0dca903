"""Benchmark: one landing sensor tick with 10k and 100k objects under the prefix, 10 new.

    python -m trending_assets.bench.sensor [--sizes 10000 100000] [--rounds 3]

Needs the test extra (`moto[server]`). The landing area holds N older objects, 100 per
day in date folders (`<prefix>/2026-11-27/...`), and the sensor's cursor already knows
them (as after earlier ticks). Ten new objects are uploaded to today's folder with boto3
over HTTP, then one tick of the landing sensor (`landing_tick`, the sensor's body: the S3
client, the listing, the partition lookups and run requests for the 10 on a Dagster
instance) is timed; `of which client` is building the S3 client, a constant per tick.
Median of `--rounds` rounds, each with 10 fresh objects (the S3 baseline: one round, as a
full listing of 100k objects takes minutes on the emulator). Two layouts in one run:

- dated (staging/production): a tick lists today's and yesterday's folders only;
- flat (the baseline, what `dagster_aws.s3.sensor.get_objects` does): a tick lists the
  whole prefix and compares it with the cursor.

Backends: S3 = a moto server on loopback (the S3 REST protocol over HTTP). Filling it with
100k objects by HTTP PUT would take many minutes on this machine, so the N older objects
are written through moto's own backend API in the same process (no HTTP; timed apart,
`fill_s`); only the 10 new ones are uploaded over HTTP, and every tick lists over HTTP.
moto scans and sorts its whole bucket on every LIST request, whatever the prefix (real S3
reads an index), so each LIST costs there in proportion to the total: `moto cost/LIST`
measures that per-request cost with a LIST of an empty prefix, and `tick - moto LIST cost`
(`net_tick_s`) takes it out: what the tick would cost against an indexed store. The local
folder (the same sensor code over a directory, one `stat` per listed file) has no such
emulator cost.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from dagster import DagsterInstance

from resources.listing import ObjectLister, lister_for
from resources.storage import ArtifactStoreResource
from trending_assets.automation.landing import LandingCursor, landing_tick, listing_scopes
from trending_assets.settings import LandingSensorSettings

SIZES = (10_000, 100_000)
NEW_OBJECTS = 10
PER_DAY = 100
PREFIX = "landing"
LAYOUTS = {"dated": LandingSensorSettings(layout="dated", lookback_days=1),
           "flat": LandingSensorSettings(layout="flat")}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def day_folder(days_ago: int, now: datetime) -> str:
    return (now - timedelta(days=days_ago)).strftime("%Y-%m-%d")


def older_keys(total: int, now: datetime) -> list[str]:
    """`total` keys, PER_DAY per date folder, from yesterday backwards."""
    return [f"{day_folder(1 + i // PER_DAY, now)}/batch-{i:06d}.csv" for i in range(total)]


class Moto:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # The sensor builds its own S3 client from the environment: point it at the emulator
        # with throwaway credentials (and no proxy for loopback).
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "NO_PROXY": "127.0.0.1"})
        self.port = _free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="bench", aws_secret_access_key="bench",
            config=Config(max_pool_connections=16))

    def fill(self, bucket: str, keys: list[str]) -> float:
        """Write objects through moto's backend in this process (no HTTP); seconds taken."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        start = time.perf_counter()
        for key in keys:
            backend.put_object(bucket, f"{PREFIX}/{key}", key.encode())
        return time.perf_counter() - start

    def empty_list_s(self, bucket: str) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            self.client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/no-such-folder/")
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def stop(self) -> None:
        self.server.stop()


class CountingLister(ObjectLister):
    """Counts the LIST pages a tick asks for (one per `page_size` keys, at least one)."""

    def __init__(self, inner: ObjectLister) -> None:
        self.inner = inner
        self.requests = 0

    def list(self, prefix: str = "", page_size: int = 1000, leftovers: bool = False):
        listed = 0
        for obj in self.inner.list(prefix, page_size, leftovers):
            listed += 1
            yield obj
        self.requests += max(1, -(-listed // page_size))


def warm_cursor(known: dict[str, str], layout: LandingSensorSettings, now: datetime) -> str:
    """The cursor earlier ticks leave behind: every older object (key -> ETag) already seen."""
    cursor = LandingCursor()
    for scope in listing_scopes(layout, now):
        cursor.seen[scope] = {k: t for k, t in known.items() if k.startswith(scope)}
    return cursor.dump()


def time_ticks(resource: ArtifactStoreResource, layout_name: str, rounds: int,
               upload: Callable[[str], str], known: dict[str, str],
               now: datetime) -> dict[str, Any]:
    """Median tick time over `rounds` rounds of NEW_OBJECTS uploads + one tick each."""
    layout = LAYOUTS[layout_name]
    instance = DagsterInstance.ephemeral()
    cursor = warm_cursor(known, layout, now)
    # One untimed tick with nothing new: client, instance and imports warmed up (the
    # baseline skips it, a full listing is slow enough on the emulator).
    if layout_name == "dated":
        warmup, _ = landing_tick(instance, resource.open(), layout, cursor)
        assert not warmup.run_requests, "the warm cursor should know every older object"
    ticks, opens, requests, listed = [], [], 0, 0
    for round_number in range(rounds):
        for i in range(NEW_OBJECTS):
            key = f"{day_folder(0, now)}/new-{layout_name}-{round_number}-{i:02d}.csv"
            known[key] = upload(key)  # older objects for the next layout's ticks
        start = time.perf_counter()
        store = resource.open()
        opens.append(time.perf_counter() - start)
        counting = CountingLister(lister_for(store))
        result, tick = landing_tick(instance, store, layout, cursor, counting)
        ticks.append(time.perf_counter() - start)
        assert len(result.run_requests) == NEW_OBJECTS, f"{layout_name}: expected {NEW_OBJECTS}"
        cursor = result.cursor
        requests, listed = counting.requests, tick.listed
    return {"tick_s": statistics.median(ticks), "open_s": statistics.median(opens),
            "list_requests": requests,
            "keys_listed": listed, "rounds": len(ticks)}


def bench_s3(moto: Moto, total: int, rounds: int, now: datetime) -> dict[str, Any]:
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    moto.client.create_bucket(Bucket=bucket)
    keys = older_keys(total, now)
    fill_s = moto.fill(bucket, keys)
    # A single-part upload's ETag is the MD5 of its content (moto computes it the same way).
    known = {k: hashlib.md5(k.encode()).hexdigest() for k in keys}
    resource = ArtifactStoreResource(uri=f"s3://{bucket}/{PREFIX}", s3_endpoint_url=moto.endpoint)

    def upload(key: str) -> str:
        response = moto.client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}",
                                          Body=key.encode())
        return response["ETag"].strip('"')

    out = {"fill_s": fill_s, "empty_list_s": moto.empty_list_s(bucket)}
    for layout in LAYOUTS:
        out[layout] = time_ticks(resource, layout, rounds if layout == "dated" else 1,
                                 upload, known, now)
    return out


def bench_local(total: int, rounds: int, now: datetime, root: Path) -> dict[str, Any]:
    landing = root / f"landing-{total}"
    start = time.perf_counter()
    for key in older_keys(total, now):
        path = landing / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
    fill_s = time.perf_counter() - start
    resource = ArtifactStoreResource(uri=str(landing))

    def upload(key: str) -> str:
        path = landing / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
        return f"{path.stat().st_size}-{path.stat().st_mtime_ns}"

    known = {o.key: o.etag for o in lister_for(resource.open()).list()}
    out: dict[str, Any] = {"fill_s": fill_s}
    for layout in LAYOUTS:
        out[layout] = time_ticks(resource, layout, rounds, upload, known, now)
    return out


def net_tick_s(figures: dict[str, Any], layout: str) -> float:
    """A tick without what the emulator charges per LIST for scanning its whole bucket."""
    f = figures[layout]
    return f["tick_s"] - f["list_requests"] * figures["empty_list_s"]


def format_table(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    header = ("backend", "objects", "layout", "fill_s", "tick_s", "of which client",
              "LIST requests", "keys listed", "moto cost/LIST", "tick - moto LIST cost",
              "vs flat")
    rows = [header]
    for backend, by_size in results.items():
        for total, figures in by_size.items():
            for layout in LAYOUTS:
                f = figures[layout]
                ratio = figures["flat"]["tick_s"] / f["tick_s"]
                rows.append((
                    backend, f"{total:,}", layout if layout == "dated" else "flat (baseline)",
                    f"{figures['fill_s']:.1f}", f"{f['tick_s']:.3f}", f"{f['open_s']:.3f}",
                    str(f["list_requests"]) if backend != "local" else "-",
                    f"{f['keys_listed']:,}",
                    f"{figures['empty_list_s'] * 1000:.0f} ms" if "empty_list_s" in figures
                    else "-",
                    f"{net_tick_s(figures, layout):.3f}" if "empty_list_s" in figures
                    else "-",
                    "1.0x" if layout == "flat" else f"{ratio:.1f}x faster"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trending_assets.bench.sensor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.getLogger("dagster").setLevel(logging.WARNING)
    now = datetime.now(UTC)
    results: dict[str, dict[int, dict[str, Any]]] = {"s3 (moto)": {}, "local": {}}
    moto = Moto()
    try:
        for total in args.sizes:
            results["s3 (moto)"][total] = bench_s3(moto, total, args.rounds, now)
    finally:
        moto.stop()
    with tempfile.TemporaryDirectory() as tmp:
        for total in args.sizes:
            results["local"][total] = bench_local(total, args.rounds, now, Path(tmp))
    print(f"one landing_sensor tick, {NEW_OBJECTS} new objects, median of {args.rounds} "
          f"rounds (S3 baseline: 1); older objects {PER_DAY} per day folder; fill_s: writing "
          "the older objects (S3: through moto's backend, not HTTP), not part of a tick")
    print(format_table(results))
    s3, local = results["s3 (moto)"], results["local"]

    def by_size(source: dict[int, dict[str, Any]], layout: str, field: str) -> dict[str, Any]:
        return {str(n): round(v[layout][field], 4) if isinstance(v[layout][field], float)
                else v[layout][field] for n, v in source.items()}

    summary = {
        "tick_s": by_size(s3, "dated", "tick_s"),
        "baseline_tick_s": by_size(s3, "flat", "tick_s"),
        "list_requests": by_size(s3, "dated", "list_requests"),
        "baseline_list_requests": by_size(s3, "flat", "list_requests"),
        "net_tick_s": {str(n): round(net_tick_s(v, "dated"), 4) for n, v in s3.items()},
        "keys_listed": by_size(s3, "dated", "keys_listed"),
        "client_s": by_size(s3, "dated", "open_s"),
        "moto_empty_list_s": {str(n): round(v["empty_list_s"], 4) for n, v in s3.items()},
        "fill_s": {str(n): round(v["fill_s"], 1) for n, v in s3.items()},
        "local_tick_s": by_size(local, "dated", "tick_s"),
        "local_baseline_tick_s": by_size(local, "flat", "tick_s"),
        "speedup_vs_baseline": {str(n): round(v["flat"]["tick_s"] / v["dated"]["tick_s"], 1)
                                for n, v in s3.items()},
        "new_objects": NEW_OBJECTS,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
