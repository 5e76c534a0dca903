"""Every command-line entry point ends a configuration error the same way: one line, exit 2."""

from __future__ import annotations

import pytest

from trending_assets import cli
from trending_assets.automation import requests
from trending_assets.rehearsal import smoke

ENTRY_POINTS = {
    "cli": lambda: cli.main(["registry", "verify"]),
    "requests submit": lambda: requests.main(["submit", "--reason", "r", "--requested-by", "me"]),
    "smoke": lambda: smoke.main([]),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_configuration_error_prints_one_line_and_exits_2(entry, monkeypatch, capsys) -> None:
    monkeypatch.setenv("APP_ENV", "prod")
    assert ENTRY_POINTS[entry]() == 2
    captured = capsys.readouterr()
    assert captured.err == ("configuration error: APP_ENV='prod' is not an environment; "
                            "use one of local, staging, production\n")
    assert captured.out == ""
