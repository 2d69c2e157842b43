"""The data a figure shows, as a table and as CSV (the report's "CSV" links and the app's download button).

Every data trace carries in its ``meta`` what it is (``run``, ``agent``,
``metric``, ``round``, ``seed``...) and the names of its coordinates
(``x``, ``y``, ``z``, ``custom``). :func:`figure_frame` turns those traces
back into one long table, so the CSV holds exactly the numbers drawn (means,
interval bounds, seed counts) under the names the page uses; rounds are
numbered from 1 as on the page. Reference lines and bands are left out (a
band's bounds are the ``lo``/``hi`` columns of its line).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pandas as pd
import plotly.graph_objects as go

SKIP_ROLES = frozenset({"band", "reference"})
ID_KEYS = ("run", "agent", "metric", "seed", "round", "role")


def _ids(meta: dict[str, Any]) -> dict[str, Any]:
    """The scalar identity columns of a trace (run, agent, ...) in a fixed order."""
    return {k: meta[k] for k in ID_KEYS if k in meta and meta[k] is not None and not isinstance(meta[k], (list, dict))}


def _custom_columns(custom: Any, names: Any, length: int) -> dict[str, list[Any]]:
    if custom is None or not names:
        return {}
    names = [names] if isinstance(names, str) else list(names)
    rows = [list(c) if isinstance(c, (list, tuple)) else [c] for c in custom]
    return {name: [r[i] if i < len(r) else None for r in rows][:length] for i, name in enumerate(names)}


def _xy_frame(trace: Any, meta: dict[str, Any]) -> pd.DataFrame:
    x, y = list(trace.x or []), list(trace.y or [])
    cols: dict[str, list[Any]] = {meta.get("x", "x"): x, meta.get("y", "y"): y}
    cols.update(_custom_columns(trace.customdata, meta.get("custom"), len(x)))
    return pd.DataFrame(cols).assign(**_ids(meta))


def _grid_frame(trace: Any, meta: dict[str, Any]) -> pd.DataFrame:
    xs, ys, z = list(trace.x), list(trace.y), [list(r) for r in trace.z]
    custom = [list(r) for r in trace.customdata] if trace.customdata is not None else None
    rows = {meta.get("x", "x"): [], meta.get("y", "y"): [], meta.get("z", "z"): []}  # type: dict[str, list[Any]]
    extra: list[Any] = []
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            rows[meta.get("x", "x")].append(xv)
            rows[meta.get("y", "y")].append(yv)
            rows[meta.get("z", "z")].append(z[i][j])
            extra.append(custom[i][j] if custom is not None else None)
    frame = pd.DataFrame(rows)
    if custom is not None and meta.get("custom"):
        frame[str(meta["custom"])] = extra
    return frame.assign(**_ids(meta))


def _table_frame(trace: Any) -> pd.DataFrame:
    header = [str(h).replace("<b>", "").replace("</b>", "") for h in trace.header.values]
    cells = [[str(v).replace("<br>", " ") for v in col] for col in trace.cells.values]
    return pd.DataFrame(dict(zip(header, cells, strict=False)))


def figure_frame(fig: go.Figure | dict[str, Any]) -> pd.DataFrame:
    """One long table of every data trace of ``fig`` (a Figure or its JSON dict, as the app receives it)."""
    fig = fig if isinstance(fig, go.Figure) else go.Figure(fig)
    frames = []
    for trace in fig.data:
        meta = trace.meta if isinstance(trace.meta, dict) else {}
        if trace.type == "table":
            frames.append(_table_frame(trace))
        elif meta and meta.get("role") not in SKIP_ROLES:
            frames.append(_grid_frame(trace, meta) if trace.type == "heatmap" else _xy_frame(trace, meta))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    ids = [k for k in ID_KEYS if k in out.columns]
    return out[ids + [c for c in out.columns if c not in ids]]


def to_csv(frame: pd.DataFrame) -> str:
    """CSV text with full float precision (values round-trip exactly)."""
    return frame.to_csv(index=False, lineterminator="\n")


def csv_data_uri(frame: pd.DataFrame) -> str:
    """A ``data:text/csv`` URI of the table (percent-encoded, works from a file on disk)."""
    return "data:text/csv;charset=utf-8," + urllib.parse.quote(to_csv(frame), safe=",.-_:;=+@")
