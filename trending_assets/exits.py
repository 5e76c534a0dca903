"""How the command-line entry points end on a bad configuration."""

from __future__ import annotations

import sys
from collections.abc import Callable

from trending_assets.settings import ConfigError

CONFIG_ERROR_EXIT = 2


def exit_on_config_error(command: Callable[[], int]) -> int:
    """Run `command` and return its exit status; a configuration error instead prints
    `configuration error: ...` on stderr (the message names the file, key and allowed
    values, so no traceback) and returns 2."""
    try:
        return command()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
