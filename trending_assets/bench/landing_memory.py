"""Benchmark: peak memory of reading hostile landing files under `data.landing_limits`.

    python -m trending_assets.bench.landing_memory [--bomb-mb 1100] [--rows 1000000]

Writes, streaming (never whole in memory), three gzip landing files into a temporary folder:

- gzip bomb: one line of `--bomb-mb` MB of one byte repeated (1.1 GB from about 1.1 MB);
- CSV bomb: a valid header and `--rows` copies of one valid 100-byte row;
- largest accepted: real Netflix rows (ids made unique) up to just under the configured
  `max_expanded_bytes` and `max_rows`: what the limits let through, so the bound itself.

Each is read the way raw_titles reads it (`read_bounded` + `assess_batch`'s reader,
`load_landing_file`, with the configured limits) in a fresh process, which reports its
peak resident memory (ru_maxrss); `baseline` is the same process reading nothing (Python,
pandas and the imports). The last line is JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_CHILD = """
import json, resource, sys
from resources.landing_reader import read_bounded
from resources.storage import LocalArtifactStore
from trending_assets.ml.landing_file import load_landing_file
from trending_assets.settings import load_settings
folder, name = sys.argv[1], sys.argv[2]
out = {}
if name:
    limits = load_settings().data.landing_limits
    stored = read_bounded(LocalArtifactStore(folder), name, limits.max_expanded_bytes)
    load = load_landing_file(stored.data, name, limits, size_bytes=stored.size,
                             sha256=stored.sha256)
    out = {"rows": len(load.frame), "problems": load.problems}
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

_MB = 2**20
_HEADER = b"id,title,kind,description,genres,year,source\n"


def _write_gzip(path: Path, chunks: Iterable[bytes]) -> None:
    with gzip.open(path, "wb", compresslevel=6) as out:
        for chunk in chunks:
            out.write(chunk)


def _bomb(size_mb: int) -> Iterator[bytes]:
    yield _HEADER
    for _ in range(size_mb):
        yield b"a" * _MB


def _csv_bomb(rows: int) -> Iterator[bytes]:
    yield _HEADER
    row = (b"1,A title,movie," + b"x" * 58 + b",Dramas,2020,netflix\n")
    for start in range(0, rows, 10_000):
        yield row * min(10_000, rows - start)


def _largest_accepted(max_bytes: int, max_rows: int) -> Iterator[bytes]:
    import pandas as pd

    source = Path(__file__).resolve().parents[1] / "data" / "netflix_titles_genres.csv.gz"
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    yield _HEADER
    written, rows, copy = len(_HEADER), 0, 0
    while True:
        part = frame.assign(id=frame["id"] + f"-{copy}")
        text = part.to_csv(index=False, header=False).encode()
        lines = text.splitlines(keepends=True)
        for line in lines:
            if written + len(line) > max_bytes - _MB or rows >= max_rows:
                return
            written += len(line)
            rows += 1
            yield line
        copy += 1


def _measure(folder: Path, name: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(folder), name], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trending_assets.bench.landing_memory")
    parser.add_argument("--bomb-mb", type=int, default=1100)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    from trending_assets.settings import load_settings

    limits = load_settings().data.landing_limits
    results = {"limits": limits.model_dump()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {
            "gzip_bomb": ("bomb.csv.gz", lambda: _bomb(args.bomb_mb)),
            "csv_bomb": ("rows.csv.gz", lambda: _csv_bomb(args.rows)),
            "largest_accepted": ("largest.csv.gz", lambda: _largest_accepted(
                limits.max_expanded_bytes, limits.max_rows)),
        }
        results["baseline"] = _measure(folder, "")
        print(f"baseline (imports only): {results['baseline']['peak_mb']:.0f} MB peak")
        for label, (name, chunks) in files.items():
            _write_gzip(folder / name, chunks())
            measured = _measure(folder, name)
            measured["file_bytes"] = (folder / name).stat().st_size
            results[label] = measured
            outcome = measured["problems"][0] if measured["problems"] else (
                f"read {measured['rows']:,} rows")
            print(f"{label}: {measured['file_bytes']:,} bytes stored, "
                  f"{measured['peak_mb']:.0f} MB peak; {outcome}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
