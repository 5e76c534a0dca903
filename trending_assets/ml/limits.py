"""How much of a landing file is read before it is refused (plain pydantic, no Dagster).

Declared once here, without defaults; `Settings.data.landing_limits` composes it and
configs/base.yaml holds the values. Every limit is checked while the file is read, so a
compressed file that expands without end, or one endless line, stops at the limit instead
of at the memory of the machine.
"""

from __future__ import annotations

from functools import cache

from pydantic import Field, StrictInt, model_validator

from trending_assets.ml.config import StrictModel, merged_config

# A reader looks at the first bytes before it knows the format; a line limit below this
# could not be checked in that window.
SNIFF_BYTES = 8192


class LandingLimits(StrictModel):
    max_expanded_bytes: StrictInt = Field(
        ge=SNIFF_BYTES,
        description="bytes of a landing file after decompression (the stored size of an "
                    "uncompressed file); bounds the memory of reading one file")
    max_rows: StrictInt = Field(ge=1, description="data rows in one landing file")
    # Far above any real synopsis: the batch suite judges lengths and names the rows; these
    # two only bound what one value or line can cost before the suite sees it.
    max_field_chars: StrictInt = Field(
        ge=1, description="characters in one value (a synopsis, a tag list)")
    max_line_bytes: StrictInt = Field(
        ge=SNIFF_BYTES,
        description="bytes in one line of a CSV or JSON Lines file, checked before the line "
                    "is split into values")

    @model_validator(mode="after")
    def _ordered(self) -> LandingLimits:
        if self.max_line_bytes > self.max_expanded_bytes:
            raise ValueError(f"max_line_bytes ({self.max_line_bytes}) must not be above "
                             f"max_expanded_bytes ({self.max_expanded_bytes})")
        return self


@cache
def configured_limits() -> LandingLimits:
    """The limits configs/ sets, for a reader not given any (the stand-alone trainers, the
    strict reader); the pipeline passes its settings' `data.landing_limits`."""
    return LandingLimits.model_validate(merged_config()["data"]["landing_limits"])


class LandingLimitExceeded(ValueError):
    """A landing file went over one of its reading limits; the message names the limit."""

    def __init__(self, limit: str, value: int, what: str) -> None:
        self.limit, self.value = limit, value
        super().__init__(
            f"over the limit data.landing_limits.{limit} ({value:,}): {what}; split the file "
            "into smaller files (or raise the limit in configs/ if the machine has the memory)")
