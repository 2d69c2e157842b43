"""Time for a browser to draw a report of 3 agents x 3 seeds x 100 rounds (budget: 3 s; file: < 10 MB).

    python benchmarks/report_render.py [--agents 3] [--seeds 3] [--rounds 100] [--repeats 5]

Writes a synthetic run directory (tests/dashboard_fixtures.py) and its report
into a temporary folder, then, for each repetition, starts a fresh headless
Debian chromium (/usr/bin/chromium, driven by playwright: no code cache, a
cold first open), opens the report from disk and times navigation -> every
plot drawn (the page sets ``body[data-rendered]`` when all ``Plotly.newPlot``
promises resolve). Prints the page's own clock (``performance.now()`` at that
moment) and the wall time seen by the driver, median and worst, and exits
with status 1 when the median page time is over the budget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dashboard_fixtures import make_run_dir  # noqa: E402

from dashboards.report import write_report  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
NAMES = ("oracle", "random", "popular", "bc", "damcar", "uma2", "clrec", "ips", "mnar", "dr")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        run = make_run_dir(Path(tmp) / "run", NAMES[: args.agents], seeds=args.seeds, rounds=args.rounds)
        t0 = time.perf_counter()
        report = write_report([run], Path(tmp) / "report.html")
        build = time.perf_counter() - t0
        size_mb = report.stat().st_size / 2**20
        page_s, wall_s = [], []
        with sync_playwright() as pw:
            for _ in range(args.repeats):
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                t0 = time.perf_counter()
                page.goto(report.as_uri(), wait_until="commit")
                page.wait_for_function("document.body && document.body.dataset.rendered === 'true'", timeout=60_000, polling=10)
                wall_s.append(time.perf_counter() - t0)
                page_s.append(page.evaluate("window.cascadesimRenderedAt") / 1000)
                plots = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
                browser.close()
    med = statistics.median(page_s)
    print(f"report of {args.agents} agents x {args.seeds} seeds x {args.rounds} rounds: {plots} plots, {size_mb:.2f} MiB, "
          f"written in {build:.2f} s")
    print(f"navigation -> all plots drawn (page clock), {args.repeats} cold opens: median {med:.2f} s, worst {max(page_s):.2f} s")
    print(f"same, wall time seen by the driver:                       median {statistics.median(wall_s):.2f} s, worst {max(wall_s):.2f} s")
    ok = med < args.budget and size_mb < 10
    print(f"budget {args.budget:.1f} s and 10 MiB: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
