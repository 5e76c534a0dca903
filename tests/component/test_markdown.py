"""Markdown from outside text: exact escapes, tables that keep their columns, and rendered
HTML with no element the text asked for (markdown-it, CommonMark with HTML and GFM tables,
as the UI renders metadata markdown)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dagster import instance_for_test
from markdown_it import MarkdownIt

from tests.conftest import write_test_configs
from trending_assets.assets.ingestion import _left_out_table, _quarantine_table
from trending_assets.checks.outcomes import ExpectationOutcome, SuiteOutcome
from trending_assets.definitions import build_definitions
from trending_assets.ml.gate import blessing_markdown, criteria_markdown
from trending_assets.ml.markdown import md_bullets, md_cell, md_table, md_text
from trending_assets.settings import load_settings

PIXEL = "![x](http://e/x.png)"
SEPARATOR = re.compile(r"(?<!\\)(?:\\\\)*\|")  # a pipe after an even run of backslashes
HOSTILE = [
    "Drama|Westerns",
    PIXEL,
    "[a](javascript:x)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "first line\n# second line\r\n> third",
    "`code` and ``more``",
    "<http://e/auto>",
    "tail \\",
]


@pytest.mark.parametrize(("text", "cell", "running"), [
    ("Drama|Westerns", "Drama\\|Westerns", "Drama\\|Westerns"),
    (PIXEL, "!\\[x\\](http\\://e/x.png)", "!\\[x\\](http\\://e/x.png)"),
    ("[a](javascript:x)", "\\[a\\](javascript:x)", "\\[a\\](javascript:x)"),
    ("<img src=x onerror=alert(1)>", "\\<img src=x onerror=alert(1)>",
     "\\<img src=x onerror=alert(1)>"),
    ("<script>alert(1)</script>", "\\<script>alert(1)\\</script>",
     "\\<script>alert(1)\\</script>"),
    ("first line\n# second line\r\n> third", "first line # second line > third",
     "first line # second line > third"),
    ("`code`", "\\`code\\`", "\\`code\\`"),
    ("tail \\", "tail \\\\", "tail \\\\"),
    ("see www.e.com", "see www\\.e.com", "see www\\.e.com"),
    ("# Heading", "# Heading", "\\# Heading"),
    ("> quote", "> quote", "\\> quote"),
    ("- item", "- item", "\\- item"),
    ("+ item", "+ item", "\\+ item"),
    ("12. item", "12. item", "12\\. item"),
    ("3)", "3)", "3\\)"),
    ("  ---", "---", "\\---"),
    ("~~~", "~~~", "\\~~~"),
    ("macro_f1 0.210 < 0.300", "macro_f1 0.210 < 0.300", "macro_f1 0.210 < 0.300"),
    ("<!-- c -->, <?php?>, <a/>", "\\<!-- c -->, \\<?php?>, \\<a/>",
     "\\<!-- c -->, \\<?php?>, \\<a/>"),
    (None, "None", "None"),
    (0.5, "0.5", "0.5"),
])
def test_exact_escapes(text, cell, running):
    assert md_cell(text) == cell
    assert md_text(text) == running


class Rendered(HTMLParser):
    """The elements and the text of rendered HTML."""

    def __init__(self, markdown: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.rows: list[int] = []  # cells per table row
        renderer = MarkdownIt("commonmark", {"html": True}).enable("table")
        self.feed(renderer.render(markdown))

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append(0)
        elif tag in ("td", "th"):
            self.rows[-1] += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def active(self) -> set[str]:
        """Elements that fetch, link or run anything, or open a block the text asked for."""
        return set(self.tags) & {"img", "a", "script", "iframe", "code", "blockquote", "h1",
                                 "h2", "ul", "ol", "li", "pre", "hr"}


def test_a_table_of_hostile_cells_keeps_its_columns_and_shows_the_text():
    rows = [(i, text, "after") for i, text in enumerate(HOSTILE)]
    table = "\n".join(md_table(("n", "text", "last"), rows))
    # A renderer drops cells beyond the header's: count the raw column separators too.
    assert [len(SEPARATOR.findall(line)) for line in table.splitlines()] == [4] * (
        2 + len(HOSTILE))
    page = Rendered(table)
    assert page.rows == [3] * (1 + len(HOSTILE))
    assert page.active == set()
    shown = "".join(page.text)
    for text in HOSTILE:
        assert " ".join(text.splitlines()).strip() in shown


def test_running_text_opens_no_block_and_no_element():
    page = Rendered("\n\n".join(md_text(t) for t in [*HOSTILE, "# h", "> q", "1. x", "- y"]))
    assert page.active == set()
    assert set(page.tags) == {"p"}
    bullets = Rendered(md_bullets(["- nested", PIXEL, "<script>x</script>"]))
    assert bullets.tags.count("li") == 3 and bullets.active == {"ul", "li"}
    assert md_bullets([]) == "none"


def test_every_producer_escapes_outside_text():
    name = "<img src=x onerror=alert(1)>|x.csv"
    quarantine = Rendered(_quarantine_table(
        {name: {"quarantined_at": "2026-12-01", "reasons": [f"title {PIXEL} | bad"]}},
        stored=set()))
    assert quarantine.rows == [4, 4] and quarantine.active == set()
    assert name in "".join(quarantine.text)

    suite = SuiteOutcome("s", False, [ExpectationOutcome(
        "genres known", False, "1 of 2", "in {x}", [f"id1: 'Drama|{PIXEL}'", "id2: '<b>'"])])
    page = Rendered(suite.to_markdown())
    assert page.rows == [5, 5] and page.active == set() and "b" not in page.tags

    criteria = [{"name": "macro_f1", "observed": 0.5, "threshold": ">= 0.3", "outcome": "pass",
                 "reason": f"a | b {PIXEL}"}]
    page = Rendered("\n".join(criteria_markdown(criteria)))
    assert page.rows == [5, 5] and page.active == set()

    blessing = {"model": "m", "decision": "forced", "aliases": [],
                "summary": f"FORCED promotion by [me](http://e) ({PIXEL} <b>x</b>)",
                "override": {"author": "[me](http://e)", "reason": "<script>x</script>",
                             "used": True},
                "criteria": criteria, "champion": None,
                "candidate": {"overall": {"macro_f1": 0.5}, "slices": {}}}
    page = Rendered(blessing_markdown(blessing))
    assert page.active == {"h1", "h2"}  # the blessing's own headings only

    left_out = Rendered(_left_out_table({name: f"retired by [me](http://e) | {PIXEL}"}))
    assert left_out.rows == [2, 2] and left_out.active == set()
    assert name in "".join(left_out.text)
    assert f"retired by [me](http://e) | {PIXEL}" in "".join(left_out.text)


def test_bench_tables_keep_their_columns_when_a_detail_holds_pipes():
    from trending_assets.bench.bert_checks import Row, table_text

    detail = "torchrun exited with 1: Traceback | [rank0] x | <module>"
    page = Rendered(table_text([Row("data_parallel", "cpu", False, None, detail)]))
    assert page.rows == [5, 5] and page.active == set()
    assert detail in "".join(page.text)


def test_the_preview_of_a_hostile_landing_file_renders_as_text(tmp_path: Path, netflix,
                                                               tiny_bert_dir):
    root = tmp_path / "root"
    landing = root / "landing"
    landing.mkdir(parents=True)
    frame = netflix.iloc[:40].reset_index(drop=True).copy()
    frame.loc[0, "title"] = f"{PIXEL} <script>alert(1)</script>"
    frame.loc[0, "genres"] = "Dramas|Westerns"
    frame.to_csv(landing / "hostile.csv", index=False)
    settings = load_settings("local", write_test_configs(tmp_path / "configs", root,
                                                         tiny_bert_dir))
    defs = build_definitions(settings)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("landing_files", ["hostile.csv"])
        result = defs.resolve_job_def("ingest_landing_file").execute_in_process(
            instance=instance, partition_key="hostile.csv")
        (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    page = Rendered(metadata["preview"].value)
    assert page.rows == [len(metadata["columns"].value)] * 6 and page.active == set()
    assert f"{PIXEL} <script>alert(1)</script>" in page.text
    assert "Dramas|Westerns" in page.text
