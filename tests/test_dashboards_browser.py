"""Dashboards in a real headless browser (Debian's chromium driven by playwright): what a user sees.

The report: every figure drawn with no console error, no plotly logo or cloud
button, a table of contents that scrolls to its section, a CSV link per figure
whose download holds the numbers drawn, provenance, bands inside the metric's
range, "1 seed: no intervals" and a note (not empty panels) for agents that
have not finished. The app: the agent choice, a grouped and defined metric
picker without internals, state kept in the URL across a reload, overlay and
difference of two runs, new rounds of a run in progress picked up, CSV download.
Set ``CASCADESIM_SCREENSHOTS=DIR`` to keep the screenshots. Skipped, with the
reason, when playwright or /usr/bin/chromium is missing.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dashboards.figures import agent_colors
from dashboards.report import write_report
from simulator.metrics.definitions import METRICS
from tests.dashboard_fixtures import make_run_dir

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
AGENTS = ("oracle", "random", "popular")
FIGURES = ("fig-recall", "fig-bias", "fig-offline", "fig-concentration", "fig-lorenz", "fig-deciles", "fig-drift", "fig-auc", "fig-scores")
PROVENANCE = {"command": ["cascadesim", "run", "--seeds", "2"], "git_commit": "9f1c2e7", "started": "2026-11-30T18:00:00Z",
              "finished": "2026-11-30T18:04:27Z", "wall_seconds": 267.0}

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    sync_playwright is None or not CHROMIUM.exists(),
    reason="browser tests need the playwright Python package and Debian's chromium at /usr/bin/chromium "
           "(pip install playwright; apt-get install chromium); .ci/run installs both",
)

TRACES_JS = """id => document.getElementById(id).data.filter(t => t.meta && t.meta.role === 'mean')
                   .map(t => [t.meta.agent, t.meta.metric || t.meta.role, (t.line && t.line.color) || null])"""
BANDS_JS = """id => document.getElementById(id).data.filter(t => t.meta && t.meta.role === 'band')
                  .map(t => [t.meta.metric, Math.min(...t.y), Math.max(...t.y)])"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def open_page(browser: Browser, errors: list[str], height: int = 900) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": height}, accept_downloads=True)
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
    return page


def shot(page: Page, name: str, **kwargs: Any) -> bytes:
    """A screenshot, also kept in $CASCADESIM_SCREENSHOTS when set (to look at)."""
    png = page.screenshot(**kwargs)
    folder = os.environ.get("CASCADESIM_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.png").write_bytes(png)
    return png


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


def download_csv(page: Page, selector: str) -> pd.DataFrame:
    with page.expect_download() as info:
        page.locator(selector).click()
    return pd.read_csv(info.value.path())


def parquet_means(run: Path, metric: str) -> pd.Series:
    """Mean over seeds per (agent, round as displayed, from 1) straight from metrics.parquet."""
    raw = pd.read_parquet(run / "metrics.parquet")
    sel = raw[raw["metric"] == metric]
    return sel.groupby(["agent", sel["round"] + 1])["value"].mean()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run_dir(tmp_path_factory.mktemp("browser-run"), AGENTS, seeds=3, rounds=100, extra=PROVENANCE)
    return write_report([run], run / "report.html")


def test_report_renders_without_errors_or_cloud_button(browser: Browser, report_file: Path) -> None:
    errors: list[str] = []
    page = open_page(browser, errors)
    page.goto(report_file.as_uri())
    page.wait_for_function("document.body.dataset.rendered === 'true'", timeout=30_000)
    plots = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => g.id)")
    assert sorted(plots) == sorted(FIGURES)
    colors = agent_colors(AGENTS)
    for fid in ("fig-recall", "fig-bias", "fig-concentration", "fig-drift", "fig-auc", "fig-lorenz"):
        lines: list[list[Any]] = page.evaluate(TRACES_JS, fid)
        for metric in {m for _, m, _ in lines}:  # one line per agent for every metric (and round) drawn
            assert sorted({a for a, m, _ in lines if m == metric}) == sorted(AGENTS), (fid, metric)
        assert all(c == colors[a] for a, _, c in lines)
    assert page.evaluate("document.getElementById('fig-lorenz')._fullLayout.xaxis.type") == "log"
    axes = page.evaluate("Object.keys(document.getElementById('fig-deciles')._fullLayout).filter(k => k.startsWith('coloraxis'))")
    assert len(axes) == len(AGENTS)  # a colour scale per agent
    assert page.locator("#summary-table tbody tr").count() == len(AGENTS)
    page.locator("#fig-recall").hover()
    titles = page.evaluate("Array.from(document.querySelectorAll('.modebar-btn')).map(b => b.getAttribute('data-title'))")
    assert titles and not [t for t in titles if "Cloud" in t or "Chart Studio" in t or "Plotly" in t], titles
    assert page.locator(".modebar-btn--logo").count() == 0
    not_blank(page.locator("#fig-recall").screenshot())
    not_blank(shot(page, "report-top"))
    page.close()
    assert not errors, errors


def test_report_contents_csv_provenance_and_clipped_bands(browser: Browser, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "two", AGENTS, seeds=2, rounds=6, extra=PROVENANCE)
    raw = pd.read_parquet(run / "metrics.parquet")
    spread = (raw["metric"] == "homogenisation") & (raw["agent"] == "random")
    raw.loc[spread, "value"] = raw.loc[spread, "seed"].map({0: 0.02, 1: 0.3})  # t(1) = 12.7: the raw band would be [-1.6, 1.9]
    raw.to_parquet(run / "metrics.parquet")
    report = write_report([run], run / "report.html")
    errors: list[str] = []
    page = open_page(browser, errors)
    page.goto(report.as_uri())
    page.wait_for_function("document.body.dataset.rendered === 'true'", timeout=30_000)
    facts = {k: page.inner_text(f'tr[data-fact="{k}"] td') for k in ("started", "wall time", "command", "git commit")}
    assert facts == {"started": "2026-11-30 18:00:00 UTC", "wall time": "4 min 27 s", "command": "cascadesim run --seeds 2",
                     "git commit": "9f1c2e7"}
    bands = [b for b in page.evaluate(BANDS_JS, "fig-drift") if b[0] == "homogenisation"]
    assert bands and all(0.0 <= lo and hi <= 1.0 for _, lo, hi in bands)
    assert max(hi for _, _, hi in bands) == 1.0 and min(lo for _, lo, _ in bands) == 0.0  # clipped, not dropped
    page.locator("#toc a", has_text="Exposure by popularity decile").click()
    page.wait_for_function("Math.abs(document.getElementById('fig-deciles-section').getBoundingClientRect().top) < 5", timeout=5_000)
    csv = download_csv(page, "#fig-recall-section a.csv")
    want = parquet_means(run, "true_recall@10")
    got = csv[csv["metric"] == "true_recall@10"].set_index(["agent", "round"])["mean"]
    assert len(got) == len(AGENTS) * 6 and (got - want.reindex(got.index)).abs().max() < 1e-12
    summary = download_csv(page, "#summary-section a.csv")
    assert list(summary["agent"]) == list(AGENTS) and (summary["round"] == 6).all()
    page.locator("#toc").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    not_blank(shot(page, "report-contents"))
    page.close()
    assert not errors, errors


def test_report_one_seed_and_unfinished_agents(browser: Browser, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "one", AGENTS, seeds=1, rounds=8, done={"popular": 0, "oracle": 5})
    report = write_report([run], run / "report.html")
    errors: list[str] = []
    page = open_page(browser, errors)
    page.goto(report.as_uri())
    page.wait_for_function("document.body.dataset.rendered === 'true'", timeout=30_000)
    pending = page.inner_text("#pending")
    assert "popular (no finished round yet)" in pending and "oracle (0 of 1 seeds finished, seed 0 at round 5 of 8)" in pending
    assert "1 seed: no intervals" in page.inner_text("#fig-recall-section .caption")
    assert page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(g => g.data)"
                         ".filter(t => t.meta && t.meta.role === 'band').length") == 0
    heatmaps = page.evaluate("document.getElementById('fig-deciles').data.map(t => t.meta.agent)")
    assert sorted(heatmaps) == ["oracle", "random"]  # no empty panel for popular
    axes = "Object.keys(document.getElementById('fig-deciles')._fullLayout).filter(k => /^xaxis[0-9]*$/.test(k)).length"
    assert page.evaluate(axes) == 2
    page.locator("#fig-recall-section").scroll_into_view_if_needed()
    not_blank(shot(page, "report-unfinished-one-seed"))
    page.close()
    assert not errors, errors


@contextmanager
def dash_server(runs: list[Path]) -> Iterator[str]:
    from werkzeug.serving import make_server

    from dashboards.app import make_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, make_app(runs).server, threaded=True)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def dash_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("dash-runs")
    runs = [make_run_dir(root / "a", AGENTS, seeds=2, rounds=20, ks=(10, 20, 50, 100, 200)),
            make_run_dir(root / "b", AGENTS, seeds=2, rounds=10, ks=(10, 20, 50, 100, 200), scenario="other")]
    with dash_server(runs) as url:
        yield url


GRAPH = "document.querySelector('#figure .js-plotly-plot')"
AGENTS_SHOWN = f"""() => {{ const g = {GRAPH};
  return g && g.data ? Array.from(new Set(g.data.filter(t => t.meta && t.meta.role === 'mean').map(t => t.meta.agent))).sort() : null; }}"""
SHOWN_IS = f"want => JSON.stringify(({AGENTS_SHOWN})()) === JSON.stringify(want)"
METRIC_IS = (f"m => {{ const g = {GRAPH}; return !!(g && g.data && g.data.length "
             "&& g.data.every(t => !t.meta || !t.meta.metric || t.meta.metric === m)); }")
LAST_ROUND_IS = f"n => {{ const g = {GRAPH}; return !!(g && g.data && Math.max(...g.data.filter(t => t.meta).flatMap(t => t.x)) === n); }}"
RUNS_SHOWN = f"() => Array.from(new Set({GRAPH}.data.filter(t => t.meta && t.meta.role === 'mean').map(t => t.meta.run))).sort()"


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
    assert page.evaluate(RUNS_SHOWN) == ["other", "synthetic"]  # the two runs side by side
    page.locator("#agents .dash-dropdown-clear").click()  # no agent: nothing to draw
    page.wait_for_function(SHOWN_IS, arg=[], timeout=15_000)
    assert "Nothing to draw" in page.inner_text("#note")
    choose_agent(page, "popular")  # choose one agent in the dropdown: only its lines
    page.wait_for_function(SHOWN_IS, arg=["popular"], timeout=15_000)
    choose_agent(page, "oracle")
    page.wait_for_function(SHOWN_IS, arg=["oracle", "popular"], timeout=15_000)
    choose_agent(page, "popular")  # choosing a selected agent again drops it
    page.wait_for_function(SHOWN_IS, arg=["oracle"], timeout=15_000)
    assert "agents=oracle" in page.url and "agents=popular" not in page.url
    not_blank(page.locator("#figure").screenshot())
    page.close()
    assert not errors, errors


def test_dash_app_metric_picker_url_overlay_difference(browser: Browser, dash_url: str) -> None:
    errors: list[str] = []
    page = open_page(browser, errors, height=1000)
    page.goto(dash_url)
    page.wait_for_function(SHOWN_IS, arg=sorted(AGENTS), timeout=30_000)
    assert "True vs offline (hold-out) recall@50" in page.evaluate(f"{GRAPH}.layout.title.text")  # the default K is below K_r = 100
    page.locator("#metric").click()
    options = page.locator(".dash-dropdown-option").all_inner_texts()
    names = [o.split("\n")[0] for o in options]
    assert "Truth (against the ground truth, never visible to agents)" in names and "Offline (logged) evaluation" in names
    assert not [n for n in names if n.startswith(("exposure_lorenz", "score_hist", "exposure_share_decile"))]
    assert [n for n in names if n.startswith("offline_holdout_recall@")] == [f"offline_holdout_recall@{k}" for k in (10, 20, 50, 100, 200)]
    assert any(METRICS["coverage"] in o for o in options)
    shot(page, "app-metric-picker")
    page.locator(".dash-dropdown-option", has_text="coverage").first.click()
    page.wait_for_function(METRIC_IS, arg="coverage", timeout=15_000)  # picking a metric shows it
    assert METRICS["coverage"] in page.inner_text("#metric-definition")
    page.locator("#compare input[value=overlay]").check()
    page.wait_for_function(f"() => {GRAPH}.data.filter(t => t.meta && t.meta.role === 'mean').every(t => t.xaxis === 'x')", timeout=15_000)
    assert "view=metric" in page.url and "metric=coverage" in page.url and "compare=overlay" in page.url
    page.reload()  # the URL keeps the state
    page.wait_for_function(METRIC_IS, arg="coverage", timeout=30_000)
    assert page.locator("#compare input[value=overlay]").is_checked() and page.evaluate(RUNS_SHOWN) == ["other", "synthetic"]
    not_blank(shot(page, "app-overlay"))
    page.goto(dash_url + "?view=bias&k=10&agents=random&compare=diff")
    diff_drawn = f"() => {{ const g = {GRAPH}; return g && g.data && g.data.some(t => t.meta && t.meta.run === 'synthetic − other'); }}"
    page.wait_for_function(diff_drawn, timeout=30_000)
    assert page.evaluate(AGENTS_SHOWN) == ["random"] and "Welch" in page.inner_text("#caption")
    page.close()
    assert not errors, errors


def test_dash_app_picks_up_new_rounds_and_downloads_csv(browser: Browser, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "live", AGENTS, seeds=2, rounds=8, done={a: 4 for a in AGENTS})
    full = pd.read_parquet(make_run_dir(tmp_path / "full", AGENTS, seeds=2, rounds=8) / "metrics.parquet")
    errors: list[str] = []
    with dash_server([run]) as url:
        page = open_page(browser, errors)
        page.goto(url + "?view=metric&metric=exposure_gini")
        page.wait_for_function(f"() => {{ const g = {GRAPH}; return g && g.data && g.data.length > 0; }}", timeout=30_000)
        page.wait_for_function(LAST_ROUND_IS, arg=4, timeout=30_000)
        assert "Not finished" in page.inner_text("#progress")
        full.to_parquet(run / "metrics.parquet")  # the runner writes more rounds
        page.wait_for_function(LAST_ROUND_IS, arg=8, timeout=30_000)
        assert page.inner_text("#progress") == "" and "rounds=1-8" in page.url
        page.reload()  # the URL's window is checked against the runs as they are now, not as they were at start
        page.wait_for_function(LAST_ROUND_IS, arg=8, timeout=30_000)
        csv = download_csv(page, "#csv-button")
        want = parquet_means(run, "exposure_gini")
        got = csv.set_index(["agent", "round"])["mean"]
        assert len(got) == len(AGENTS) * 8 and (got - want.reindex(got.index)).abs().max() < 1e-12
        page.close()
    assert not errors, errors
