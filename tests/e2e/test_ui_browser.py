"""The operator's path through the Dagster UI, in Debian's Chromium driven by Playwright.

Opens the asset graph, launches the training graph from the UI on a small sample, waits for
success, reads the evaluation report and its plots, and looks at a failed check. Every step
leaves a screenshot in test-artifacts/ui/; `make screenshots` copies the README's pictures
from there to docs/screenshots/. A second webserver shows landing files full of markdown and
HTML: every page and dialog showing their text must show it as text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.helpers.dagster_ui import ARTIFACTS, BAD_BATCH, GOOD_BATCH, DagsterUI, prepared_ui

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1600, "height": 1000}
UI_TIMEOUT_MS = 30_000  # one page or element; runs have their own, longer wait
expect.set_options(timeout=UI_TIMEOUT_MS)  # assertions too: a busy machine renders slowly
JOB_PAGE = "/locations/__repository__@trending_assets.definitions/jobs/train_models"
TRAINED = ["training_data", "data_splits", "tfidf_features", "reference_model",
           "xgboost_model", "bert_model", "reference_evaluation", "xgboost_evaluation",
           "bert_evaluation", "registered_xgboost_model", "registered_bert_model"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        "Debian's chromium is missing: `apt-get install -y chromium` (make test installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    yield page
    context.close()


def shot(page: Page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path)
    return path


def open_graph(page: Page, ui: DagsterUI) -> None:
    """The global asset graph with every group expanded, fitted to the window."""
    page.goto(f"{ui.url}/asset-groups")
    expect(page.get_by_role("button", name="asset_group training_data training_data")
           ).to_be_visible()
    hide_navigation = page.get_by_role("button", name="Hide navigation")
    if hide_navigation.is_visible():
        hide_navigation.click()
    page.wait_for_timeout(2000)  # the graph lays itself out in a web worker after loading
    if not page.get_by_text("reference_model", exact=True).filter(visible=True).count():
        # Groups start collapsed; the browser keeps them expanded once expanded.
        page.mouse.click(VIEWPORT["width"] // 2, VIEWPORT["height"] - 100)  # focus the canvas
        page.keyboard.press("Alt+KeyE")  # the graph's "expand all groups" (a toggle)
    expect_graph_nodes(page)
    page.reload()  # the graph fits itself to the window when it loads
    expect_graph_nodes(page)


def expect_graph_nodes(page: Page) -> None:
    for asset in ("raw_titles", "xgboost_model", "bert_evaluation", "reference_model"):
        expect(page.get_by_text(asset, exact=True).filter(visible=True).first).to_be_visible()


def test_operator_tour(dagster_ui: DagsterUI, page: Page):
    ui = dagster_ui
    open_graph(page, ui)
    shot(page, "graph_before")

    # Launch the training graph from the job's page, as a person would.
    known = ui.run_ids("train_models")
    page.goto(ui.url + JOB_PAGE)
    page.locator("button", has_text="Materialize all").first.click()
    run_id = ui.wait_for_new_run("train_models", known)
    assert ui.wait_for_run(run_id) == "SUCCESS", ui.log
    assert {a: ui.latest_materialization_run(a) for a in TRAINED} == dict.fromkeys(TRAINED, run_id)
    page.goto(f"{ui.url}/runs/{run_id}")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()  # the event log loaded
    shot(page, "run")

    open_graph(page, ui)
    page.wait_for_timeout(2000)  # asset statuses (node colours) arrive after the layout
    shot(page, "graph")

    # The evaluation asset: report first, its plots inline, per-genre numbers as a table.
    page.goto(f"{ui.url}/assets/xgboost_evaluation")
    # Group, owner team and kinds from the asset's decorator.
    for catalog_entry in ("evaluation", "ml", "Scikit Learn", "Weights & Biases", "matplotlib"):
        expect(page.get_by_text(catalog_entry, exact=True).first).to_be_visible()
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    shot(page, "asset")
    report = show_markdown(page, "report")
    expect(report.get_by_text("Evaluation: xgboost")).to_be_visible()
    expect(report.get_by_text("Versus baseline")).to_be_visible()
    expect(report.get_by_text("Per genre (test)")).to_be_visible()
    expect(report.get_by_text("Most confused genres (test)")).to_be_visible()
    report.get_by_text("Evaluation: xgboost").scroll_into_view_if_needed()
    shot(page, "report_tables")
    page.keyboard.press("Escape")
    expect(report).to_have_count(0)

    plots = show_markdown(page, "plots").locator("img")
    expect(plots).to_have_count(3)
    for index in range(3):
        image = plots.nth(index)
        expect(image).to_have_attribute("src", _starts_with("data:image/png;base64,"))
        width = image.evaluate("i => i.complete ? i.naturalWidth : 0")
        assert width >= 400, f"plot {index} did not render ({width} px wide)"
    shot(page, "report")
    page.keyboard.press("Escape")

    page.get_by_placeholder("Filter metadata keys").fill("per_genre")
    expect(page.get_by_text("delta_F1")).to_be_visible()

    # A failed check: the landing file whose titles are all "podcast" was quarantined.
    page.goto(f"{ui.url}/assets/raw_titles?view=checks")
    expect(page.get_by_text("raw_titles_batch_quality").first).to_be_visible()
    expect(page.get_by_text("QUARANTINED: known kind").first).to_be_visible()
    expect(page.get_by_text(BAD_BATCH).first).to_be_visible()
    expect(page.get_by_text("Failed").first).to_be_visible()
    shot(page, "check_failure")

    # Sensors and the schedule are listed with the local default.
    page.goto(f"{ui.url}/automation")
    expect(page.get_by_text("landing_sensor")).to_be_visible()
    shot(page, "automation")


def show_markdown(page: Page, key: str) -> Locator:
    """Open the markdown metadata entry `key` of the asset page; the dialog showing it."""
    page.get_by_placeholder("Filter metadata keys").fill(key)
    page.get_by_text("[Show Markdown]").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    page.wait_for_timeout(600)  # the dialog fades in; a screenshot before would be pale
    return dialog


def _starts_with(prefix: str) -> re.Pattern:
    return re.compile("^" + re.escape(prefix))


# --- hostile text from landing files stays text -------------------------------------------


class Beacon:
    """An HTTP server on a loopback port that records every request: a page showing text
    from a landing file must never make one (an image, a link fetched while rendering)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        beacon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                beacon.hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def hostile_strings(beacon: str) -> list[str]:
    """Markdown and HTML that would fetch the beacon, run a script, add a link, a table
    column or a block if rendered rather than shown."""
    return [
        f"![x]({beacon}/image.png)",
        f'<img src="{beacon}/html-image.png">',
        "<img src=x onerror=window.__pwned=1>",
        "<script>window.__pwned=2</script>",
        f"[click me]({beacon}/link)",
        f"<{beacon}/autolink>",
        "cell | split | here",
        "first line\n# a heading\n> a quote",
    ]


# A batch that passes its own suite (60 real titles sharing one synopsis) but fails
# training_data_quality's duplicate-synopsis rate, which names it; and one quarantined for
# its `kind` values. Both names are hostile too: file names reach tables and descriptions.
HOSTILE_ACCEPTED = "shared <img src=x onerror=window.__pwned=3> [a](b) | c.csv"
HOSTILE_QUARANTINED = "kinds <img src=x onerror=window.__pwned=4> [d](e) | f.csv"
# Hidden: never ingested, listed with the reason in training_data's skipped_files.
HOSTILE_HIDDEN = ".hidden <img src=x onerror=window.__pwned=5> [g](h).csv"


def hostile_landing(beacon: str) -> Callable[[Path, pd.DataFrame], list[str]]:
    def write(landing: Path, netflix: pd.DataFrame) -> list[str]:
        hostile = hostile_strings(beacon)
        landing.mkdir(parents=True, exist_ok=True)
        netflix.sample(600, random_state=1).to_csv(landing / GOOD_BATCH, index=False)
        shared = netflix.sample(60, random_state=3).reset_index(drop=True)
        shared["title"] = [hostile[i % len(hostile)] for i in range(len(shared))]
        shared["description"] = " ".join(hostile) + " is the synopsis of every title here"
        shared.to_csv(landing / HOSTILE_ACCEPTED, index=False)
        kinds = netflix.sample(60, random_state=4).reset_index(drop=True)
        kinds["kind"] = [hostile[i % len(hostile)] for i in range(len(kinds))]
        kinds.to_csv(landing / HOSTILE_QUARANTINED, index=False)
        shared.to_csv(landing / HOSTILE_HIDDEN, index=False)
        return [GOOD_BATCH, HOSTILE_ACCEPTED, HOSTILE_QUARANTINED]

    return write


@pytest.fixture(scope="module")
def beacon() -> Iterator[Beacon]:
    server = Beacon()
    yield server
    server.close()


@pytest.fixture(scope="module")
def hostile_ui(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path,
               netflix: pd.DataFrame, beacon: Beacon) -> Iterator[DagsterUI]:
    with prepared_ui(tmp_path_factory.mktemp("hostile_ui"), tiny_bert_dir, netflix,
                     landing=hostile_landing(beacon.url), then=["training_data"]) as ui:
        yield ui


def test_hostile_landing_text_is_shown_as_text(hostile_ui: DagsterUI, beacon: Beacon,
                                               page: Page):
    """Titles, synopses, `kind` values and file names from landing files reach the check
    descriptions and markdown metadata the UI shows; opened in Chromium, none of it runs,
    loads, links or adds a column: it reads as the text that was landed."""
    ui = hostile_ui
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    hostile = hostile_strings(beacon.url)
    shown: dict[str, str] = {}  # markdown entry (page: key) -> the text its dialog shows

    def read_markdown(where: str) -> None:
        buttons = page.get_by_text("[Show Markdown]")
        expect(buttons.first).to_be_visible()
        for index in range(buttons.count()):
            buttons.nth(index).click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_be_visible()
            key, _, text = dialog.inner_text().partition("\n")
            shown[f"{where}: {key}"] = text
            expect_inert(dialog)
            page.keyboard.press("Escape")
            expect(dialog).to_have_count(0)

    def expect_inert(scope: Page | Locator) -> None:
        assert page.evaluate("typeof window.__pwned") == "undefined", "a landed script ran"
        for element in ("img", "iframe", "script", "link"):
            for attribute in ("src", "href"):
                selector = f'{element}[{attribute}^="{beacon.url}"]'
                expect(scope.locator(selector)).to_have_count(0)
        # The UI turns any address in text into a link to itself; a landed link must never
        # become one under other words ("click me").
        for link in scope.locator(f'a[href^="{beacon.url}"]').all():
            assert link.inner_text() == link.get_attribute("href"), link.evaluate(
                "a => a.outerHTML")

    # The quarantined batch: its check's description and markdown quote the `kind` values.
    page.goto(f"{ui.url}/assets/raw_titles?view=checks&checkDetail=raw_titles_batch_quality")
    expect(page.get_by_text(HOSTILE_QUARANTINED, exact=True)).to_be_visible()  # `file`
    description = page.get_by_text("QUARANTINED: known kind: 60 of 60 kinds not in set")
    expect(description).to_be_visible()
    for value in hostile[:5]:  # the five example rows, each value quoted as landed
        expect(description).to_contain_text(f"'{value}'")
    expect_inert(page)
    read_markdown("raw_titles_batch_quality")
    shot(page, "hostile_check")

    # The batch that spoils training_data: named in the failed check's description.
    page.goto(f"{ui.url}/assets/training_data?view=checks&checkDetail=training_data_quality")
    expect(page.get_by_text(f"most from {HOSTILE_ACCEPTED} (52 rows)")).to_be_visible()
    expect_inert(page)
    read_markdown("training_data_quality")

    # Its titles and synopsis in the partition's preview table.
    page.goto(f"{ui.url}/assets/raw_titles?view=partitions&partition={quote(HOSTILE_ACCEPTED)}")
    read_markdown("raw_titles preview")
    shot(page, "hostile_preview")

    # training_data lists the quarantined file and the hidden one it never ingests (the
    # overview shows both tables inline).
    page.goto(f"{ui.url}/assets/training_data")
    page.get_by_placeholder("Filter metadata keys").fill("quarantined_batches")
    expect(page.get_by_role("cell", name=HOSTILE_QUARANTINED, exact=True)).to_be_visible()
    quarantined = page.locator("td:not(:has(td))", has_text="known kind: 60 of 60 kinds")
    for value in hostile[:5]:
        expect(quarantined).to_contain_text(f"'{value}'")
    expect_inert(page)
    page.get_by_placeholder("Filter metadata keys").fill("skipped_files")  # a table, inline
    expect(page.get_by_role("cell", name=HOSTILE_HIDDEN, exact=True)).to_be_visible()
    expect(page.get_by_text("not ingested: a hidden name")).to_be_visible()
    expect_inert(page)
    shot(page, "hostile_skipped_files")

    preview = shown["raw_titles preview: preview"]
    for title in hostile[:5]:  # the first five rows' titles, each in its own cell as landed
        assert f"\t{title}\t" in preview, (title, preview)
    synopsis = " ".join(" ".join(h.splitlines()) for h in hostile)
    assert preview.count(synopsis) == 5, preview  # one line, no column split off by a pipe
    for value in hostile[:5]:
        assert f"'{value}'" in shown["raw_titles_batch_quality: sample_offending_rows"]
    assert HOSTILE_ACCEPTED in shown["training_data_quality: contributing_batches"]

    assert alerts == [], alerts
    # Whatever the pages fetched has been fetched by now (every page and dialog was shown).
    assert beacon.hits == [], f"the UI fetched a URL from a landing file: {beacon.hits}"
