"""The operator's path through the Dagster UI, in Debian's Chromium driven by Playwright.

Opens the asset graph, launches the training graph from the UI on a small sample, waits for
success, reads the evaluation report and its plots, and looks at a failed check. Every step
leaves a screenshot in test-artifacts/ui/; `make screenshots` copies the README's pictures
from there to docs/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.helpers.dagster_ui import ARTIFACTS, BAD_BATCH, DagsterUI

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1600, "height": 1000}
UI_TIMEOUT_MS = 30_000  # one page or element; runs have their own, longer wait
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
