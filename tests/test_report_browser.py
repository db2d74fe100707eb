"""The generated site in a real headless Chromium, from file:// and offline.

Checks what a reader gets: pages load with no console errors and no request
leaving the site folder, the charts are drawn with a real size, pages work at
phone width without the body scrolling sideways. Screenshots land in
test-artifacts/ at the repository root.
"""
import os
from pathlib import Path

import pytest

from hueyscope.events.synthetic import build_synthetic
from hueyscope.reports.builder import build_report, slug

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _need_chromium():
    missing = None
    if not os.path.exists(CHROMIUM):
        missing = "Debian's chromium is not installed at %s" % CHROMIUM
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def browser():
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def sites(recorded_store, tmp_path_factory):
    """The recorded run's report, and a larger synthetic one."""
    folder = tmp_path_factory.mktemp("browser")
    synthetic = folder / "synthetic.db"
    build_synthetic(synthetic, events=30_000, seed=3, days=2)
    return {
        "recorded": build_report([recorded_store], folder / "recorded").parent,
        "synthetic": build_report([synthetic], folder / "synthetic").parent,
    }


def open_page(browser, path, width=1280):
    """Load a page; return it with its console errors and outside requests."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.errors, page.outside = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    root = "file://" + str(path.parent.parent if path.parent.name in ("tasks", "runs")
                           else path.parent)

    def watch(request):
        if not request.url.startswith(root):
            page.outside.append(request.url)

    page.on("request", watch)
    response = page.goto(path.as_uri())
    assert response is None or response.ok
    page.wait_for_load_state("load")
    return page


def assert_charts_drawn(page, minimum):
    charts = page.locator("svg.chart")
    assert charts.count() >= minimum
    for i in range(charts.count()):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        assert chart.is_visible()
        box = chart.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 20, box


@pytest.mark.timeout(120)
def test_pages_render_in_chromium(browser, sites):
    ARTIFACTS.mkdir(exist_ok=True)
    synthetic = sites["synthetic"]
    index = open_page(browser, synthetic / "index.html")
    assert_charts_drawn(index, 2)
    # The throughput chart has bars and the stylesheet applied (right-aligned numbers).
    assert index.locator("svg.chart").first.locator("rect").count() > 10
    align = index.locator("td.num").first.evaluate(
        "e => getComputedStyle(e).textAlign")
    assert align == "right"
    index.screenshot(path=str(ARTIFACTS / "report-index.png"), full_page=True)
    assert not index.errors and not index.outside, (index.errors, index.outside)

    task = synthetic / "tasks" / ("%s.html" % slug("flaky_network_call"))
    page = open_page(browser, task)
    assert_charts_drawn(page, 2)
    page.screenshot(path=str(ARTIFACTS / "report-task.png"), full_page=True)
    assert not page.errors and not page.outside

    phone = open_page(browser, task, width=390)
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, "the page scrolls sideways on a phone"
    phone.screenshot(path=str(ARTIFACTS / "report-task-phone.png"), full_page=True)
    assert not phone.errors and not phone.outside


@pytest.mark.timeout(120)
def test_every_page_of_the_recorded_run_loads_clean(browser, sites):
    site = sites["recorded"]
    paths = sorted(site.rglob("*.html"))
    assert len(paths) >= 10
    for path in paths:
        page = open_page(browser, path)
        assert page.locator("h1").is_visible(), path
        assert not page.errors and not page.outside, (path, page.errors, page.outside)
        if path.parent.name == "tasks":
            assert_charts_drawn(page, 2)
        page.close()
    failures = open_page(browser, site / "failures.html")
    failures.screenshot(path=str(ARTIFACTS / "report-failures.png"), full_page=True)
    # Printing works: the navigation is hidden, the content is kept.
    failures.emulate_media(media="print")
    assert not failures.locator("header nav").is_visible()
    assert failures.locator("h1").is_visible()
