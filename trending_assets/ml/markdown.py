"""Markdown built from outside text: titles, synopses, genres, file names, reasons, check
descriptions, people's override reasons.

The Dagster UI renders metadata markdown (GitHub flavour). Text from a landing file must
show as the text it is: never an image fetched from someone's host when the page opens, a
link, an HTML element, an extra table column or a new block (heading, quote, list, code).
Every table cell and every piece of running text built from such text goes through
`md_cell` or `md_text`. The escapes are backslashes (and one join of lines), so the page
shows the original characters.

Emphasis (`*`, `_`, `~`) is left alone: it only changes how text looks, and escaping it
would make every `macro_f1` in a raw report hard to read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# Backslash: else a trailing one escapes the cell's closing pipe. Backtick: code spans.
# Pipe: table columns. Brackets: links, images, reference definitions.
_INLINE = str.maketrans({c: "\\" + c for c in "\\`|[]"})
# `<` before a letter, `/`, `!` or `?` opens an HTML element or an <autolink> (not in
# "0.2 < 0.3"). Bare URLs become links in GitHub-flavoured markdown ("autolink literals");
# an escaped character inside `scheme://` or `www.` stops that on GitHub. The Dagster UI
# links an address in text anyway, to itself and under its own text: never fetched.
_ACTIVE = re.compile(r"(?i)<(?=[a-z/!?])|(?<=[a-z0-9]):(?=//)|(?<=\bwww)\.")
# What opens a block at the start of a line: heading, quote, list item, thematic break or
# setext underline, code fence, ordered list item ("1." or "1)" before a space: not "0.5").
_BLOCK_START = re.compile(r"^(?:([#>+\-*=_~])|(\d{1,9})([.)])(?=\s|$))")


def md_cell(value: object) -> str:
    """`value` as the literal content of a markdown table cell (or any inline position):
    one line, nothing in it a pipe, link, image, HTML element, code span or autolink."""
    text = " ".join(str(value).splitlines()).strip()
    return _ACTIVE.sub(lambda m: "\\" + m.group(0), text.translate(_INLINE))


def md_text(value: object) -> str:
    """`value` as literal running text that may start a line (a paragraph, a bullet's or a
    heading's text): `md_cell`, and a leading `#`, `>`, list marker or fence escaped."""
    return _BLOCK_START.sub(
        lambda m: "\\" + m.group(1) if m.group(1) else m.group(2) + "\\" + m.group(3),
        md_cell(value))


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]],
             align: Sequence[str] | None = None) -> list[str]:
    """The lines of a markdown table; every cell through `md_cell`. `align` gives each
    column's delimiter ('---', '---:'); left-aligned when not given."""
    delimiters = list(align) if align is not None else ["---"] * len(header)
    return ["| " + " | ".join(md_cell(h) for h in header) + " |",
            "|" + "|".join(delimiters) + "|",
            *("| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows)]


def md_value(value: object, signed: bool = False) -> str:
    """How a report shows a value in a table: a dash for nothing, a float to 3 decimals
    (`signed`: with its sign, for differences), anything else as its text. Not escaped:
    `md_table` escapes every cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return str(value)


def numbers_right(columns: int) -> list[str]:
    """`md_table`'s `align` for a name column followed by number columns."""
    return ["---"] + ["---:"] * (columns - 1)


def md_bullets(items: Iterable[object], empty: str = "none") -> str:
    """One bullet per item (each through `md_text`), or `empty` when there are none."""
    lines = [f"- {md_text(item)}" for item in items]
    return "\n".join(lines) if lines else empty
