"""Dashboards in a real headless browser (Debian's chromium driven by playwright).

The report (3 agents x 3 seeds x 100 rounds) loads from disk with no console
error, draws every figure with one line per agent, and its screenshot is not
blank; in the Dash app, choosing agents in the dropdown changes the figure's traces.
Skipped, with the reason, when playwright or /usr/bin/chromium is missing.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboards.figures import agent_colors
from dashboards.report import write_report
from tests.dashboard_fixtures import make_run_dir

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
AGENTS = ("oracle", "random", "popular")
FIGURES = ("fig-recall", "fig-bias", "fig-concentration", "fig-lorenz", "fig-deciles", "fig-drift", "fig-scores")

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    sync_playwright is None or not CHROMIUM.exists(),
    reason="browser tests need the playwright Python package and Debian's chromium at /usr/bin/chromium "
           "(pip install playwright; apt-get install chromium); .ci/run installs both",
)

TRACES_JS = """id => document.getElementById(id).data.filter(t => t.meta && t.meta.role !== 'band')
                   .map(t => [t.meta.agent, t.meta.metric || t.meta.role, (t.line && t.line.color) || null])"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def open_page(browser: Browser, errors: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
    return page


def not_blank(png: bytes) -> None:
    """A screenshot with real content: many colours and a spread of brightness."""
    try:
        from PIL import Image, ImageStat
    except ImportError:
        assert len(png) > 20_000, "screenshot PNG is suspiciously small (blank?)"
        return
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert max(ImageStat.Stat(img).stddev) > 10, "screenshot is (nearly) uniform"
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 50, "screenshot has too few colours to hold plots"


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run_dir(tmp_path_factory.mktemp("browser-run"), AGENTS, seeds=3, rounds=100)
    return write_report([run], run / "report.html")


def test_report_renders_without_errors(browser: Browser, report_file: Path) -> None:
    errors: list[str] = []
    page = open_page(browser, errors)
    page.goto(report_file.as_uri())
    page.wait_for_function("document.body.dataset.rendered === 'true'", timeout=30_000)
    plots = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => g.id)")
    assert sorted(plots) == sorted(FIGURES)
    colors = agent_colors(AGENTS)
    for fid in ("fig-recall", "fig-bias", "fig-concentration", "fig-drift"):
        lines: list[list[Any]] = page.evaluate(TRACES_JS, fid)
        for metric in {m for _, m, _ in lines}:  # one line per agent for every metric drawn
            assert sorted(a for a, m, _ in lines if m == metric) == sorted(AGENTS), (fid, metric)
        assert all(c == colors[a] for a, _, c in lines)
    assert sorted(a for a, _, _ in page.evaluate(TRACES_JS, "fig-deciles")) == sorted(AGENTS)
    assert page.evaluate("document.querySelectorAll('#fig-recall .scatterlayer .trace').length") >= 2 * len(AGENTS)
    assert page.locator("#summary-table tbody tr").count() == len(AGENTS)
    not_blank(page.locator("#fig-recall").screenshot())
    not_blank(page.screenshot(full_page=False))
    page.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def dash_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from werkzeug.serving import make_server

    from dashboards.app import make_app

    root = tmp_path_factory.mktemp("dash-runs")
    runs = [make_run_dir(root / "a", AGENTS, seeds=2, rounds=20), make_run_dir(root / "b", AGENTS, seeds=2, rounds=10, scenario="other")]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, make_app(runs).server, threaded=True)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join(timeout=10)


AGENTS_SHOWN = """() => { const g = document.querySelector('#figure .js-plotly-plot');
  return g && g.data ? Array.from(new Set(g.data.filter(t => t.meta && t.meta.role === 'mean').map(t => t.meta.agent))).sort() : null; }"""
SHOWN_IS = f"want => JSON.stringify(({AGENTS_SHOWN})()) === JSON.stringify(want)"


def choose_agent(page: Page, agent: str) -> None:
    """Open the agents dropdown (Dash 4: a multi-select list of options) and click one option."""
    if page.locator("#agents").get_attribute("aria-expanded") != "true":
        page.locator("#agents").click()
    page.locator(".dash-dropdown-option", has_text=agent).click()
    page.keyboard.press("Escape")


def test_dash_app_follows_the_agent_choice(browser: Browser, dash_url: str) -> None:
    errors: list[str] = []
    page = open_page(browser, errors)
    page.goto(dash_url)
    page.wait_for_function(SHOWN_IS, arg=sorted(AGENTS), timeout=30_000)
    runs = page.evaluate("new Set(document.querySelector('#figure .js-plotly-plot').data.map(t => t.meta && t.meta.run)).size")
    assert runs == 2  # the two runs side by side
    page.locator("#agents .dash-dropdown-clear").click()  # no agent: nothing to draw
    page.wait_for_function(SHOWN_IS, arg=[], timeout=15_000)
    assert "Nothing to draw" in page.inner_text("#note")
    choose_agent(page, "popular")  # choose one agent in the dropdown: only its lines
    page.wait_for_function(SHOWN_IS, arg=["popular"], timeout=15_000)
    choose_agent(page, "oracle")
    page.wait_for_function(SHOWN_IS, arg=["oracle", "popular"], timeout=15_000)
    choose_agent(page, "random")
    page.wait_for_function(SHOWN_IS, arg=sorted(AGENTS), timeout=15_000)
    choose_agent(page, "popular")  # choosing a selected agent again drops it
    page.wait_for_function(SHOWN_IS, arg=["oracle", "random"], timeout=15_000)
    choose_agent(page, "popular")
    page.wait_for_function(SHOWN_IS, arg=sorted(AGENTS), timeout=15_000)
    assert page.evaluate(AGENTS_SHOWN) == sorted(AGENTS)
    not_blank(page.locator("#figure").screenshot())
    page.close()
    assert not errors, errors
