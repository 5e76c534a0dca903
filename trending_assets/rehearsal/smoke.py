"""`python -m trending_assets.rehearsal.smoke`: the whole graph once, steps as Kubernetes Jobs.

Run in the code location's pod of a deployment (CD's staging smoke step) or in a pod of the
local Kubernetes stand-in (`make rehearse`): it puts a sample of the bundled titles in the
landing area (today's date folder when `automation.landing.layout` is dated), runs
`python -m trending_assets.cli run` (ingestion and training on this environment's executor:
`k8s_job_executor` in staging), and checks that every registered family got a new registry
version. Exit 0 only then; the registry versions made are printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from importlib import resources as package_files

import pandas as pd

from resources.registry import ModelRegistry
from trending_assets import cli
from trending_assets.exits import exit_on_config_error
from trending_assets.ml.families import registered_names, registry_model_name
from trending_assets.settings import Settings, load_settings
from trending_assets.storage_resources import storage_resources

REGISTERED_FAMILIES = registered_names()


def landing_key(settings: Settings, name: str, now: datetime) -> str:
    landing = settings.automation.landing
    folder = f"{now.strftime(landing.date_format)}/" if landing.layout == "dated" else ""
    return f"{folder}{name}"


def put_sample(settings: Settings, titles: int, name: str) -> str:
    data = package_files.files("trending_assets.data").joinpath(cli.SAMPLE_FILE)
    with data.open("rb") as handle:
        sample = pd.read_csv(handle, compression="gzip", keep_default_na=False)
    sample = sample.sample(min(titles, len(sample)), random_state=0)
    store = storage_resources(settings).landing.open()
    key = landing_key(settings, name, datetime.now(UTC))
    store.put_bytes(key, sample.to_csv(index=False).encode())
    return store.uri_of(key)


def registry_versions(registry: ModelRegistry) -> dict[str, list[int]]:
    return {registry_model_name(f): registry.versions(registry_model_name(f))
            for f in REGISTERED_FAMILIES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trending_assets.rehearsal.smoke",
                                     description=__doc__)
    parser.add_argument("--titles", type=int, default=1000, help="sample size (default 1000)")
    parser.add_argument("--name", default="smoke.csv", help="landing file name")
    args = parser.parse_args(argv)
    return exit_on_config_error(lambda: smoke(args.titles, args.name))


def smoke(titles: int, name: str) -> int:
    """Put the sample, run `cli run`, and check that every registered family got a version."""
    settings = load_settings()
    registry = storage_resources(settings).registry.open()
    before = registry_versions(registry)
    print(f"landing file: {put_sample(settings, titles, name)}", flush=True)
    status = cli.main(["run"])
    after = registry_versions(registry)
    made = {model: sorted(set(after[model]) - set(before[model])) for model in after}
    missing = [model for model, versions in made.items() if not versions]
    print(json.dumps({"cli_exit": status, "new_versions": made}))
    if status != 0 or missing:
        print(f"smoke FAILED: cli exit {status}; no new version of {missing or 'none missing'}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
