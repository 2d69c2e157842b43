"""One self-contained HTML report over one or several run directories.

``write_report(run_dirs, out)`` writes a single file that works offline:
plotly.js is embedded once in the page head, every figure is a JSON spec in
the page drawn by ``Plotly.newPlot``, and each run's scenario description and
manifest are shown. When every plot has been drawn the page sets
``document.body.dataset.rendered = "true"`` and ``window.cascadesimRenderedAt``
(milliseconds since navigation start); the browser tests and the render
benchmark wait for it. Figures whose metrics a run lacks are replaced by a
one-line note, agents that have not finished are named at the top, and each
run shows its date, wall time, command and git commit when the manifest
records them ("not recorded" otherwise). A table of contents leads the page
and every figure has a CSV link (a data URI: the numbers drawn, rounds from 1).
The plots have no plotly logo and no cloud / Chart Studio button. ``export_images`` writes the same figures as PNG or SVG files
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

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from dashboards.data import Dataset, Run, default_k, read_runs, recall_ks
from dashboards.distributions import decile_figure, lorenz_figure
from dashboards.export import figure_frame
from dashboards.figures import (
    MissingData,
    agent_colors,
    auc_figure,
    bias_figure,
    concentration_figure,
    drift_figure,
    metric_label,
    offline_figure,
    recall_figure,
)
from dashboards.leaderboard import leaderboard_figure
from dashboards.page import RENDER_JS, STYLE, csv_link, esc, join_specs, run_block, script_json, section_head, toc
from dashboards.runinfo import k_note, pending_text, seed_counts, seeds_caption
from dashboards.scores import score_figure
from dashboards.tables import summary_cells, summary_frame, summary_table
from simulator.config import ConfigError

# No "share / edit in the cloud" button, no plotly logo: the report is offline. Unknown keys are ignored by plotly.js.
PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "showSendToCloud": False,
    "showEditInChartStudio": False,
    "modeBarButtonsToRemove": ["sendDataToCloud", "editInChartStudio", "lasso2d", "select2d"],
    "toImageButtonOptions": {"format": "svg", "scale": 2},
}
VENDOR = Path(__file__).with_name("vendor")
CARTESIAN_TYPES = frozenset({"scatter", "bar", "heatmap", "histogram", "box", "violin", "contour", "pie", "image"})


@dataclass(frozen=True)
class Section:
    """One figure of the report: its element id, heading, what it shows, the figure (or why it is missing), its caption."""

    id: str
    heading: str
    blurb: str
    figure: go.Figure | None
    note: str = ""
    caption: str = ""


Builder = Callable[[Dataset, "int | None"], go.Figure]
SEEDS, POINTS = "seeds", "points"  # caption kinds: the seed caption (lines with bands, or intervals on hover), or a fixed text
SECTIONS: list[tuple[str, str, str, str, Builder]] = [
    (
        "fig-recall",
        "True vs offline recall",
        "Solid: true recall@K of the serving model against the truth over the whole live "
        "catalogue; dashed: the hold-out recall a practitioner measures on the round's withheld requests for the fresh candidate.",
        SEEDS,
        lambda ds, k: recall_figure(ds, _need_k(k)),
    ),
    (
        "fig-bias",
        "Offline hold-out bias",
        "Hold-out recall@K minus its truth on the same requests (the expected recall had every "
        "live item been examined): how much the offline metric overstates (above 0) or understates the truth.",
        SEEDS,
        lambda ds, k: bias_figure(ds, _need_k(k)),
    ),
    (
        "fig-offline",
        "Offline vs truth, every protocol",
        "Each offline protocol's estimate (dashed) next to its truth on the same "
        "requests (solid): hold-out and shared-log recall@K, and each off-policy estimator's clicks per request against the candidate "
        "policy's expected clicks.",
        SEEDS,
        lambda ds, k: offline_figure(ds, _need_k(k)),
    ),
    (
        "fig-leaderboard",
        "Does offline evaluation pick the right agent?",
        "Per protocol, Kendall's tau-b between the agents' "
        "ranking by the estimate and by its truth (1: same order, 0: unrelated, -1: reversed) and how often it picks the truth's best "
        "agent, over rounds and seeds (leaderboard.parquet; mean with a 95% t-interval across seeds of each seed's mean over rounds).",
        "",
        lambda ds, k: leaderboard_figure(ds),
    ),
    (
        "fig-concentration",
        "Exposure concentration",
        "Gini coefficient of the round's exposure counts over live items, and the share of exposures taken by the top 1% of items.",
        SEEDS,
        lambda ds, k: concentration_figure(ds),
    ),
    (
        "fig-lorenz",
        "Concentration curves (top shares)",
        "The Lorenz curve read from the top: the share of the round's exposures held "
        "by the most-exposed 1%, 10%, 20%, … of live items (log axis, where the mass is), at the first, middle and last rounds. The run "
        "stores the points 1% (exposure_top1_share) and 10%..90% (exposure_lorenz@p); the dotted line is equal exposure.",
        POINTS,
        lambda ds, k: lorenz_figure(ds),
    ),
    (
        "fig-deciles",
        "Exposure by popularity decile",
        "Share of each round's exposures going to each decile of live items by observed "
        "clicks at the round's start (10 = most popular). Mean over seeds; each agent has its own colour scale (0 to its largest share), "
        "so read colours within an agent and the numbers (hover) across agents.",
        "",
        lambda ds, k: decile_figure(ds),
    ),
    (
        "fig-drift",
        "Homogenisation and preference drift",
        "Mean pairwise Jaccard of users' exposure sets, and the mean drift (1 − cosine) of users' true preferences from their start.",
        SEEDS,
        lambda ds, k: drift_figure(ds),
    ),
    (
        "fig-auc",
        "Score separation across agents (AUC)",
        "Agents score on different scales, so raw score gaps do not compare. This is "
        "the chance that a never-exposed true positive outscores a never-exposed negative (0.5: no separation), computed by the report "
        "from the stored 20-bin score histograms with pairs in one bin counted as ties; the runs do not store the scores themselves.",
        SEEDS,
        lambda ds, k: auc_figure(ds),
    ),
    (
        "fig-scores",
        "Scores on unexposed items (DAMCAR Fig. 5)",
        "Distribution of the agent's retrieval scores on never-exposed true "
        "positives (in the agent's colour) vs never-exposed negatives (grey, hatched) at the last round; vertical lines: the means "
        "(solid: positives, dotted: negatives). Each agent's own score scale.",
        "One seed (the first): bins differ between seeds.",
        lambda ds, k: score_figure(ds),
    ),
]
SUMMARY = ("summary-section", "Summary at the last round")
SUMMARY_BLURB = (
    "Per run and agent at its last round, true against offline first: mean over seeds with the 95% t-interval "
    "(clipped to the metric's range) in brackets."
)


def _need_k(k: int | None) -> int:
    if k is None:
        raise MissingData("no true_recall@K and offline_holdout_recall@K pair in these runs")
    return k


def check_k(ds: Dataset, k: int | None) -> int | None:
    """The recall cut-off to draw: ``k`` if the runs have it (else a one-line ConfigError), or the default (below K_r)."""
    if k is None:
        return default_k(ds.names, ds.k_retrieve)
    ks = recall_ks(ds.names)
    if k not in ks:
        raise ConfigError(f"k: {k} is not a recall cut-off of these runs; available: {', '.join(map(str, ks)) or 'none'}")
    return k


def build_sections(ds: Dataset, k: int | None = None, chosen: bool | None = None) -> list[Section]:
    """Every report figure (a note instead where the runs lack its metrics), with its caption.

    The recall figures' captions also say why this K (or warn when K >= K_r); ``chosen``: K was given, not the default.
    """
    chosen = k is not None if chosen is None else chosen
    k = check_k(ds, k)
    counts = seed_counts(ds.metrics)
    kinds = {SEEDS: seeds_caption(counts), POINTS: seeds_caption(counts, bands=False)}
    out = []
    for fid, heading, blurb, caption, build in SECTIONS:
        text = kinds.get(caption, caption)
        if fid in ("fig-recall", "fig-bias", "fig-offline"):
            text = f"{k_note(k, ds.k_retrieve, chosen)} {text}".strip()
        try:
            out.append(Section(fid, heading, blurb, build(ds, k), caption=text))
        except MissingData as err:
            out.append(Section(fid, heading, blurb, None, str(err)))
    return out


def plotly_bundle(figures: Sequence[go.Figure]) -> tuple[str, str]:
    """``(name, javascript)``: the vendored cartesian plotly.js when it fits the figures and the installed plotly, else the full one."""
    path = VENDOR / f"plotly-cartesian-{get_plotlyjs_version()}.min.js"
    if path.is_file() and all(t.type in CARTESIAN_TYPES for f in figures for t in f.data):
        return "cartesian", path.read_text(encoding="utf-8")
    return "full", get_plotlyjs()


def summary_html(ds: Dataset, k: int | None) -> tuple[str, pd.DataFrame | None]:
    """The summary table (the app draws the same numbers with :func:`summary_table`) as HTML, and its data."""
    try:
        frame = summary_frame(ds, k)
    except MissingData:
        return '<p class="note">Not shown: none of the headline metrics is in these runs</p>', None
    names, cells = summary_cells(frame)
    colors = agent_colors(ds.palette)
    head = "".join(f"<th>{esc(h)}</th>" for h in ["run", "agent", "round", "seeds", *[metric_label(n) for n in names]])
    rows = []
    for (_, r), vals in zip(frame.iterrows(), cells, strict=False):
        rows.append(
            f'<tr data-run="{esc(r["run"])}" data-agent="{esc(r["agent"])}"><td>{esc(r["run"])}</td>'
            f'<td style="color:{colors[r["agent"]]};font-weight:600">{esc(r["agent"])}</td><td>{int(r["round"])}</td>'
            f"<td>{int(r['seeds'])}</td>" + "".join(f"<td>{esc(v)}</td>" for v in vals) + "</tr>"
        )
    return f'<table class="summary" id="summary-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>', frame


def _section_html(s: Section, specs: dict[str, str]) -> str:
    """One figure section (registers the figure's JSON in ``specs``)."""
    link = csv_link(figure_frame(s.figure), s.id.removeprefix("fig-")) if s.figure is not None else ""
    out = [f'<section id="{s.id}-section">', section_head(s.id, s.heading, link), f'<p class="blurb">{esc(s.blurb)}</p>']
    if s.figure is None:
        return "".join([*out, f'<p class="note">Not shown: {esc(s.note)}</p></section>'])
    specs[s.id] = s.figure.to_json()
    caption = f'<p class="caption">{esc(s.caption)}</p>' if s.caption else ""
    return "".join([*out, caption, f'<div id="{s.id}" class="plot"></div></section>'])


def _body(runs: Sequence[Run], ds: Dataset, k: int | None, chosen: bool) -> tuple[list[str], list[Section]]:
    sections = build_sections(ds, k, chosen)
    title = "cascadesim report: " + ", ".join(ds.runs)
    intro = (
        f"{len(ds.agents)} agent(s), seeds {', '.join(map(str, ds.seeds))}, rounds {min(ds.rounds)}–{max(ds.rounds)} (numbered "
        "from 1). Colours are the same agent in every figure. Hover shows exact values; the camera icon of each plot downloads "
        "it as SVG, the CSV link beside each heading its data."
    )
    body = [f"<h1>{esc(title)}</h1>", f'<p class="blurb">{esc(intro)}</p>']
    pending = pending_text(list(runs))
    if pending:
        body.append(f'<p class="note" id="pending">{esc(pending)}</p>')
    entries = [
        ("runs", "Runs: description, date, command, commit"),
        *[(f"{s.id}-section", s.heading) for s in sections[:1]],
        SUMMARY,
        *[(f"{s.id}-section", s.heading) for s in sections[1:]],
    ]
    body.append(toc(entries))
    body.append('<div id="runs">' + "".join(run_block(r) for r in runs) + "</div>")
    return body, sections


def render_html(runs: Sequence[Run], k: int | None = None) -> str:
    """The report page as one string (plotly.js inline, no external resource)."""
    ds = Dataset.from_runs(runs)
    chosen = k is not None
    k = check_k(ds, k)
    body, sections = _body(runs, ds, k, chosen)
    specs: dict[str, str] = {}
    table, frame = summary_html(ds, k)
    summary = (
        f'<section id="{SUMMARY[0]}">{section_head("summary", SUMMARY[1], csv_link(frame, "summary"))}'
        f'<p class="blurb">{esc(SUMMARY_BLURB)}</p>{table}</section>'
    )
    body += [_section_html(sections[0], specs), summary, *[_section_html(s, specs) for s in sections[1:]]]
    bundle, js = plotly_bundle([s.figure for s in sections if s.figure is not None])
    title = "cascadesim report: " + ", ".join(ds.runs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{STYLE}</style>'
        f'<script type="text/javascript" data-plotly-bundle="{bundle}">{js}</script></head><body>'
        + "\n".join(body)
        + f'<script type="application/json" id="cascadesim-figures">{script_json(join_specs(specs))}</script>'
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
        raise RuntimeError(
            "static export needs kaleido (pip install kaleido) and a Chrome/Chromium (e.g. apt-get install chromium)"
        ) from None
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
        raise RuntimeError(
            f"static export failed ({type(err).__name__}: {reason}); kaleido needs a Chrome/Chromium, e.g. apt-get install chromium"
        ) from None
    return written
