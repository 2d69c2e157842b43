"""HTML pieces of the report page: style, the render script, the run blocks, the table of contents, CSV links."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import pandas as pd

from dashboards.data import Run
from dashboards.export import csv_data_uri
from dashboards.runinfo import agent_progress, provenance

STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:0 auto;max-width:1400px;padding:0 24px 48px;color:#222}
h1{font-size:26px;margin:24px 0 4px} h2{font-size:20px;margin:28px 0 6px} .blurb{color:#555;margin:0 0 8px;max-width:1000px}
.caption{color:#333;margin:0 0 8px;max-width:1000px;font-size:14px}
.note{background:#fff6e0;border-left:4px solid #e6a700;padding:8px 12px} table.facts th{text-align:left;padding-right:16px;font-weight:600}
table.facts td,table.facts th{padding:2px 16px 2px 0;vertical-align:top} table.facts code{font-size:13px;word-break:break-all}
table.summary{border-collapse:collapse;font-size:14px}
table.summary th,table.summary td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
pre{background:#f6f6f6;padding:12px;overflow:auto;max-height:480px;font-size:12px} .plot{width:100%}
nav.toc{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px 20px;margin:12px 0;display:inline-block}
nav.toc ol{margin:4px 0;padding-left:20px;columns:2;column-gap:40px} nav.toc a{color:#0b5cad;text-decoration:none}
.head{display:flex;align-items:baseline;gap:16px;flex-wrap:wrap} a.csv{font-size:13px;color:#0b5cad}
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


def esc(text: object) -> str:
    return html.escape(str(text))


def run_block(run: Run) -> str:
    """One run: description, provenance (date, wall time, command, commit), progress, and the folded manifest."""
    m = run.manifest
    desc = esc(run.description) if run.description else "<em>(the scenario has no description)</em>"
    progress = agent_progress(run)
    agents = ", ".join(f"{a} ({note})" if note else a for a, note in progress.items()) or ", ".join(run.agents)
    facts = {
        "run directory": str(run.path),
        **provenance(run),
        "agents": agents,
        "seeds": ", ".join(map(str, m.get("seeds", []))),
        "rounds": m.get("rounds", ""),
        "device": m.get("device", ""),
    }
    rows = "".join(
        f'<tr data-fact="{esc(k)}"><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>'
        if k in ("command", "git commit")
        else f'<tr data-fact="{esc(k)}"><th>{esc(k)}</th><td>{esc(v)}</td></tr>'
        for k, v in facts.items()
    )
    manifest = esc(json.dumps(m, indent=2, sort_keys=True, default=str))
    return (
        f'<section class="run"><h2>Run: {esc(run.label)}</h2><p class="desc">{desc}</p><table class="facts">{rows}</table>'
        f"<details><summary>manifest.json</summary><pre>{manifest}</pre></details></section>"
    )


def toc(entries: Sequence[tuple[str, str]]) -> str:
    """The table of contents: ``(anchor id, heading)`` in page order."""
    items = "".join(f'<li><a href="#{esc(a)}">{esc(h)}</a></li>' for a, h in entries)
    return f'<nav class="toc" id="toc"><b>Contents</b><ol>{items}</ol></nav>'


def csv_link(frame: pd.DataFrame | None, name: str) -> str:
    """A download link holding the table as a data URI ('' without data)."""
    if frame is None or frame.empty:
        return ""
    return f'<a class="csv" download="{esc(name)}.csv" href="{esc(csv_data_uri(frame))}">Download the data (CSV)</a>'


def section_head(anchor: str, heading: str, link: str) -> str:
    return f'<div class="head"><h2 id="{esc(anchor)}-title">{esc(heading)}</h2>{link}</div>'


def script_json(data: str) -> str:
    """JSON safe inside a <script> element."""
    return data.replace("</", "<\\/").replace("<!--", "<\\!--")


def join_specs(specs: dict[str, str]) -> str:
    """One JSON object ``{element id: figure}`` from figures already serialised by plotly (NaN written as null)."""
    return "{" + ",".join(f"{json.dumps(fid)}:{spec}" for fid, spec in specs.items()) + "}"
