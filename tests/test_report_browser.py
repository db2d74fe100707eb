"""The generated site in a real headless Chromium, from file:// and offline.

Checks what a reader gets: pages load with no console errors and no request
leaving the site folder, the charts are drawn (uPlot, vendored) with a real
size, every point inside the plot and the values of a bar shown on hover,
the numbers are in tables without JavaScript, and pages fit a 1280 px
window and a phone without the body scrolling sideways. Screenshots land in
test-artifacts/ at the repository root.
"""
import os
from pathlib import Path

import pytest

from synthetic import build_synthetic
from hueyscope.reports.builder import build_report, slug
from report_helpers import chart_specs, trim_store

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
    """Reports of one event, the recorded run (seconds long), a day and two
    days of synthetic history."""
    folder = tmp_path_factory.mktemp("browser")
    synthetic = folder / "synthetic.db"
    build_synthetic(synthetic, events=30_000, seed=3, days=2)
    day = folder / "day.db"
    build_synthetic(day, events=10_000, seed=4, days=1)
    one = trim_store(recorded_store, folder / "one.db",
                     "id = (select min(id) from events where signal = 'complete')")
    return {
        "recorded": build_report([recorded_store], folder / "recorded").parent,
        "synthetic": build_report([synthetic], folder / "synthetic").parent,
        "day": build_report([day], folder / "day").parent,
        "one": build_report([one], folder / "one").parent,
    }


def open_page(browser, path, width=1280, javascript=True):
    """Load a page; return it with its console errors and outside requests."""
    page = browser.new_page(viewport={"width": width, "height": 900},
                            java_script_enabled=javascript)
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
    """Every chart of the page drawn: a visible canvas of a real size."""
    charts = page.locator("div.chart")
    assert charts.count() >= minimum
    page.wait_for_selector("div.chart[data-drawn]", timeout=10_000)
    assert page.locator("div.chart[data-drawn]").count() == charts.count()
    for i in range(charts.count()):
        canvas = charts.nth(i).locator("canvas")
        canvas.scroll_into_view_if_needed()
        assert canvas.is_visible()
        box = canvas.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100, box


# Where uPlot put each point, and the ticks it drew, read from the chart
# object charts.js leaves on its element.
GEOMETRY = """el => {
  const u = el.uplot, over = u.over.getBoundingClientRect();
  const points = [];
  u.data.slice(1).forEach(values => values.forEach((v, i) => {
    if (v !== null) points.push([u.valToPos(u.data[0][i], "x"), u.valToPos(v, "y")]);
  }));
  return {width: over.width, height: over.height, points: points,
          splits: u.axes[0]._splits, values: u.axes[0]._values};
}"""


def assert_points_inside(page):
    """No point outside the plot; the x ticks are the ones the spec says."""
    charts = page.locator("div.chart[data-drawn]")
    for i in range(charts.count()):
        chart = charts.nth(i)
        geometry = chart.evaluate(GEOMETRY)
        assert geometry["points"]
        for x, y in geometry["points"]:
            assert 0 <= x <= geometry["width"] and 0 <= y <= geometry["height"], (
                x, y, geometry["width"], geometry["height"])
        spec = chart.evaluate(
            "el => JSON.parse(el.querySelector('script.chart-spec').textContent)")
        assert geometry["splits"] == [t for t, _ in spec["ticks"]]
        assert geometry["values"] == [label for _, label in spec["ticks"]]


def hover_bar(page, chart_id, index):
    """Move the mouse over bar ``index``; the legend's text, row by row."""
    chart = page.locator("#chart-%s" % chart_id)
    chart.scroll_into_view_if_needed()
    x = chart.evaluate("(el, i) => { const u = el.uplot, r = u.over."
                       "getBoundingClientRect(); return r.left + u.valToPos("
                       "u.data[0][i], 'x'); }", index)
    box = chart.locator(".u-over").bounding_box()
    page.mouse.move(x, box["y"] + box["height"] - 5)
    legend = chart.locator(".u-legend")
    label = chart.evaluate("(el, i) => JSON.parse(el.querySelector("
                           "'script.chart-spec').textContent).labels[i]", index)
    page.wait_for_function("([el, text]) => el.innerText.includes(text)",
                           arg=[legend.element_handle(), label], timeout=5000)
    return legend.locator("tr").evaluate_all(
        "rows => rows.map(r => [...r.children].map(c => c.innerText.trim())"
        ".join(' '))")


@pytest.mark.timeout(120)
def test_pages_render_in_chromium(browser, sites):
    ARTIFACTS.mkdir(exist_ok=True)
    synthetic = sites["synthetic"]
    index = open_page(browser, synthetic / "index.html")
    assert_charts_drawn(index, 2)
    assert_points_inside(index)
    # The stylesheet is applied (right-aligned numbers).
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


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["one", "recorded", "day"])
def test_charts_at_every_scale(browser, sites, name):
    """One event, a run of seconds, a day: drawn, inside the plot, clean."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(browser, sites[name] / "index.html")
    assert_charts_drawn(page, 1)
    assert_points_inside(page)
    # Drawn charts fold their tables of numbers away.
    assert not page.locator("details.chart-data[open]").count()
    page.screenshot(path=str(ARTIFACTS / ("report-index-%s.png" % name)),
                    full_page=True)
    assert not page.errors and not page.outside, (page.errors, page.outside)


@pytest.mark.timeout(120)
def test_hover_shows_the_values_of_a_bar(browser, sites):
    """Hovering the busiest second of the recorded run shows its bucket and
    its counts: the label and numbers of the spec, so of the table too."""
    path = sites["recorded"] / "index.html"
    spec = chart_specs(path)["throughput"]
    totals = [sum(v) for v in zip(*(s["values"] for s in spec["series"]))]
    busiest = totals.index(max(totals))
    page = open_page(browser, path)
    assert_charts_drawn(page, 2)
    legend = hover_bar(page, "throughput", busiest)
    expected = ["%s %s" % (spec["head"][0], spec["labels"][busiest])] + [
        "%s %s" % (s["name"], "{:,}".format(s["values"][busiest]))
        for s in spec["series"]]
    assert sorted(legend) == sorted(expected), legend
    assert not page.errors


@pytest.mark.timeout(120)
def test_numbers_without_javascript(browser, sites):
    """With scripts off nothing is drawn, and the tables of numbers show."""
    page = open_page(browser, sites["day"] / "index.html", javascript=False)
    assert page.locator("div.chart").count() == 2
    assert page.locator("div.chart[data-drawn]").count() == 0
    tables = page.locator("details.chart-data table")
    assert tables.count() == 2
    assert tables.first.is_visible() and tables.nth(1).is_visible()
    assert tables.first.locator("tbody tr").count() > 10


@pytest.mark.timeout(120)
def test_runs_table_fits_a_1280_px_window(browser, sites):
    """Neither the page nor the runs table scrolls sideways at 1280 px."""
    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("recorded", "synthetic"):
        page = open_page(browser, sites[name] / "runs.html", width=1280)
        assert page.evaluate("document.documentElement.scrollWidth - "
                             "document.documentElement.clientWidth") <= 1
        table = page.locator(".scroll").first
        assert table.evaluate("e => e.scrollWidth - e.clientWidth") <= 1, name
        page.screenshot(path=str(ARTIFACTS / ("report-runs-%s.png" % name)),
                        full_page=True)
        assert not page.errors and not page.outside
