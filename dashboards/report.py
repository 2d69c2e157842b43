"""One self-contained HTML report over one or several run directories.

``write_report(run_dirs, out)`` writes a single file that works offline:
plotly.js is embedded once in the page head, every figure is a JSON spec in
the page drawn by ``Plotly.newPlot``, and each run's scenario description and
manifest are shown. When every plot has been drawn the page sets
``document.body.dataset.rendered = "true"`` and ``window.cascadesimRenderedAt``
(milliseconds since navigation start); the browser tests and the render
benchmark wait for it. Figures whose metrics a run lacks are replaced by a
one-line note. ``export_images`` writes the same figures as PNG or SVG files
with kaleido, which needs a Chrome or Chromium on the machine.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from dashboards.data import Dataset, Run, default_k, last_round_summary, read_runs, recall_ks
from dashboards.distributions import decile_figure, interval_text, lorenz_figure, score_figure, summary_metrics, summary_table
from dashboards.figures import MissingData, agent_colors, bias_figure, concentration_figure, drift_figure, metric_label, recall_figure
from simulator.config import ConfigError

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg", "scale": 2}}
VENDOR = Path(__file__).with_name("vendor")
CARTESIAN_TYPES = frozenset({"scatter", "bar", "heatmap", "histogram", "box", "violin", "contour", "pie", "image"})


@dataclass(frozen=True)
class Section:
    """One figure of the report: its element id, heading, what it shows, and the figure (or why it is missing)."""

    id: str
    heading: str
    blurb: str
    figure: go.Figure | None
    note: str = ""


SECTIONS: list[tuple[str, str, str, Callable[[Dataset, int | None], go.Figure]]] = [
    ("fig-recall", "True vs logged recall", "Solid: true recall@K against the truth over the whole live catalogue; dashed: the logged "
     "(offline) recall a practitioner would measure on the round's held-out clicks. Mean over seeds with a 95% t-interval band.",
     lambda ds, k: recall_figure(ds, _need_k(k))),
    ("fig-bias", "Evaluation bias", "Logged minus true recall@K: how much the offline metric overstates (above 0) or understates "
     "the truth.",
     lambda ds, k: bias_figure(ds, _need_k(k))),
    ("fig-concentration", "Exposure concentration", "Gini coefficient of the round's exposure counts over live items, and the share "
     "of exposures taken by the top 1% of items.", lambda ds, k: concentration_figure(ds)),
    ("fig-lorenz", "Lorenz curves of exposure", "Cumulative share of exposures of the least-exposed share of live items at the first, "
     "middle and last rounds; the further below the diagonal, the more concentrated.", lambda ds, k: lorenz_figure(ds)),
    ("fig-deciles", "Exposure by popularity decile", "Share of each round's exposures going to each decile of live items by observed "
     "clicks at the round's start (10 = most popular). Mean over seeds.", lambda ds, k: decile_figure(ds)),
    ("fig-drift", "Homogenisation and preference drift", "Mean pairwise Jaccard of users' exposure sets, and the mean drift "
     "(1 − cosine) of users' true preferences from their start.", lambda ds, k: drift_figure(ds)),
    ("fig-scores", "Scores on unexposed items (DAMCAR Fig. 5)", "Distribution of the agent's retrieval scores on never-exposed true "
     "positives (in the agent's colour) vs never-exposed negatives (grey, hatched) at the last round of the first seed; "
     "vertical lines: the means (solid: positives, dotted: negatives).",
     lambda ds, k: score_figure(ds)),
]
SUMMARY_BLURB = "Per run and agent at its last round: mean over seeds with the 95% t-interval in brackets."


def _need_k(k: int | None) -> int:
    if k is None:
        raise MissingData("no true_recall@K and logged_recall@K pair in these runs")
    return k


def check_k(ds: Dataset, k: int | None) -> int | None:
    """The recall cut-off to draw: ``k`` if the runs have it (else a one-line ConfigError), or the default."""
    if k is None:
        return default_k(ds.names)
    ks = recall_ks(ds.names)
    if k not in ks:
        raise ConfigError(f"k: {k} is not a recall cut-off of these runs; available: {', '.join(map(str, ks)) or 'none'}")
    return k


def build_sections(ds: Dataset, k: int | None = None) -> list[Section]:
    """Every report figure (a note instead where the runs lack its metrics)."""
    k = check_k(ds, k)
    out = []
    for fid, heading, blurb, build in SECTIONS:
        try:
            out.append(Section(fid, heading, blurb, build(ds, k)))
        except MissingData as err:
            out.append(Section(fid, heading, blurb, None, str(err)))
    return out


def plotly_bundle(figures: Sequence[go.Figure]) -> tuple[str, str]:
    """``(name, javascript)``: the vendored cartesian plotly.js when it fits the figures and the installed plotly, else the full one."""
    path = VENDOR / f"plotly-cartesian-{get_plotlyjs_version()}.min.js"
    if path.is_file() and all(t.type in CARTESIAN_TYPES for f in figures for t in f.data):
        return "cartesian", path.read_text(encoding="utf-8")
    return "full", get_plotlyjs()


def summary_html(ds: Dataset, k: int | None) -> str:
    """The summary table (the Dash app draws the same numbers with :func:`summary_table`) as plain HTML."""
    names = [n for n in summary_metrics(k) if n in ds.names]
    stats = last_round_summary(ds.metrics, names)
    if stats.empty:
        return '<p class="note">Not shown: none of the headline metrics is in these runs</p>'
    colors = agent_colors(ds.palette)
    cells = {key: sub.set_index("metric") for key, sub in stats.groupby(["run", "agent"], sort=False)}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", "agent", "round", "seeds", *[metric_label(n) for n in names]])
    rows = []
    for run in ds.runs:
        for agent in ds.agents:
            sub = cells.get((run, agent))
            if sub is None:
                continue
            vals = [interval_text(*(float(sub.at[n, c]) for c in ("mean", "lo", "hi"))) if n in sub.index else "–" for n in names]
            rows.append(f'<tr data-run="{html.escape(run)}" data-agent="{html.escape(agent)}"><td>{html.escape(run)}</td>'
                        f'<td style="color:{colors[agent]};font-weight:600">{html.escape(agent)}</td><td>{int(sub["round"].max())}</td>'
                        f'<td>{int(sub["n"].max())}</td>' + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>")
    return f'<table class="summary" id="summary-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _join_specs(specs: dict[str, str]) -> str:
    """One JSON object ``{element id: figure}`` from figures already serialised by plotly (NaN written as null)."""
    return "{" + ",".join(f"{json.dumps(fid)}:{spec}" for fid, spec in specs.items()) + "}"


def _script_json(data: str) -> str:
    """JSON safe inside a <script> element."""
    return data.replace("</", "<\\/").replace("<!--", "<\\!--")


def _run_block(run: Run) -> str:
    m = run.manifest
    desc = html.escape(run.description) if run.description else "<em>(the scenario has no description)</em>"
    facts = {"run directory": str(run.path), "agents": ", ".join(run.agents), "seeds": ", ".join(map(str, m.get("seeds", []))),
             "rounds": m.get("rounds", ""), "device": m.get("device", "")}
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    manifest = html.escape(json.dumps(m, indent=2, sort_keys=True, default=str))
    return (f'<section class="run"><h2>Run: {html.escape(run.label)}</h2><p class="desc">{desc}</p><table class="facts">{rows}</table>'
            f"<details><summary>manifest.json</summary><pre>{manifest}</pre></details></section>")


STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px 48px;color:#222}
h1{font-size:26px;margin:24px 0 4px} h2{font-size:20px;margin:28px 0 6px} .blurb{color:#555;margin:0 0 8px;max-width:1000px}
.note{background:#fff6e0;border-left:4px solid #e6a700;padding:8px 12px} table.facts th{text-align:left;padding-right:16px;font-weight:600}
table.summary{border-collapse:collapse;font-size:14px}
table.summary th,table.summary td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
pre{background:#f6f6f6;padding:12px;overflow:auto;max-height:480px;font-size:12px} .plot{width:100%}
"""

RENDER_JS = """
(function () {
  var specs = JSON.parse(document.getElementById("cascadesim-figures").textContent);
  var config = JSON.parse(document.getElementById("cascadesim-config").textContent);
  var jobs = Object.keys(specs).map(function (id) {
    return Plotly.newPlot(id, specs[id].data, specs[id].layout, config);
  });
  Promise.all(jobs).then(function () {
    window.cascadesimRenderedAt = performance.now();
    document.body.dataset.rendered = "true";
  });
})();
"""


def render_html(runs: Sequence[Run], k: int | None = None) -> str:
    """The report page as one string (plotly.js inline, no external resource)."""
    ds = Dataset.from_runs(runs)
    k = check_k(ds, k)
    sections = build_sections(ds, k)
    title = "cascadesim report: " + ", ".join(ds.runs)
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="blurb">{len(ds.agents)} agent(s), seeds {", ".join(map(str, ds.seeds))}, '
            f"rounds {min(ds.rounds)}–{max(ds.rounds)}. Colours are the same agent in every figure. Hover shows exact values; "
            "the camera icon of each plot downloads it as SVG.</p>"]
    body += [_run_block(r) for r in runs]
    specs = {}
    for s in sections:
        body.append(f'<section id="{s.id}-section"><h2>{html.escape(s.heading)}</h2><p class="blurb">{html.escape(s.blurb)}</p>')
        if s.figure is None:
            body.append(f'<p class="note">Not shown: {html.escape(s.note)}</p></section>')
            continue
        body.append(f'<div id="{s.id}" class="plot"></div></section>')
        specs[s.id] = s.figure.to_json()
    body.append(f'<section id="summary-section"><h2>Summary at the last round</h2><p class="blurb">{SUMMARY_BLURB}</p>'
                f"{summary_html(ds, k)}</section>")
    bundle, js = plotly_bundle([s.figure for s in sections if s.figure is not None])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{STYLE}</style>'
        f'<script type="text/javascript" data-plotly-bundle="{bundle}">{js}</script></head><body>'
        + "\n".join(body)
        + f'<script type="application/json" id="cascadesim-figures">{_script_json(_join_specs(specs))}</script>'
        + f'<script type="application/json" id="cascadesim-config">{json.dumps(PLOT_CONFIG)}</script>'
        + f"<script>{RENDER_JS}</script></body></html>\n"
    )


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` to a temporary file beside ``path`` and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_out(run_dirs: Sequence[str | Path]) -> Path:
    """``RUN_DIR/report.html`` for one run, ``./report.html`` for several."""
    return Path(run_dirs[0]) / "report.html" if len(run_dirs) == 1 else Path("report.html")


def write_report(run_dirs: Sequence[str | Path], out: str | Path | None = None, k: int | None = None) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (atomically); returns its path. Bad run dirs raise RunDirError."""
    runs = read_runs(list(run_dirs))
    path = Path(out) if out is not None else default_out(run_dirs)
    atomic_write_text(render_html(runs, k), path)
    return path


def export_images(run_dirs: Sequence[str | Path], folder: str | Path, fmt: str = "svg", k: int | None = None) -> list[Path]:
    """Every report figure as ``folder/<figure>.<fmt>`` (png or svg) via kaleido; raises RuntimeError with a one-line reason."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"image format must be png or svg, got {fmt!r}")
    try:
        import kaleido  # noqa: F401 - only checks that the renderer is installed
    except ImportError:
        raise RuntimeError("static export needs kaleido (pip install kaleido) and a Chrome/Chromium "
                           "(e.g. apt-get install chromium)") from None
    runs = read_runs(list(run_dirs))
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = Dataset.from_runs(runs)
    figures = [(s.id.removeprefix("fig-"), s.figure) for s in build_sections(ds, k) if s.figure is not None]
    try:
        figures.append(("summary", summary_table(ds, check_k(ds, k))))
    except MissingData:
        pass
    written = [out_dir / f"{name}.{fmt}" for name, _ in figures]
    try:
        import plotly.io as pio

        pio.write_images([f for _, f in figures], written, format=fmt, width=1200, scale=2 if fmt == "png" else 1)
    except Exception as err:  # noqa: BLE001 - kaleido reports a missing browser in many ways
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RuntimeError(f"static export failed ({type(err).__name__}: {reason}); kaleido needs a Chrome/Chromium, "
                           "e.g. apt-get install chromium") from None
    return written
