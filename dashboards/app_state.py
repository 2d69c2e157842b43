"""The app's state outside its callbacks: the URL query string, the metric picker, and runs re-read when they change.

The URL holds every control (``?view=metric&metric=coverage&runs=a&runs=b&agents=oracle&k=50&seed=0&rounds=1-12&compare=overlay``),
so a reload or a shared link shows the same figure; anything missing or invalid falls back to its default.
:class:`LiveRuns` re-reads a run directory whose ``metrics.parquet`` or ``manifest.json`` changed on disk, so the app
follows a run in progress (the runner rewrites ``metrics.parquet`` atomically as loops finish).
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dash import html

from dashboards.catalog import definition, grouped
from dashboards.data import Dataset, Run, pick_k, read_runs, recall_ks
from simulator.checkpoint import RunDirError

KEYS = ("view", "metric", "runs", "agents", "k", "seed", "rounds", "compare")
LISTS = frozenset({"runs", "agents"})
DEFAULT_METRIC = "exposure_gini"
SHORT = 110  # characters of a definition shown inside the picker (the whole one is shown under it)


@dataclass(frozen=True)
class Choices:
    """What each control may hold for one dataset, and its default."""

    views: tuple[str, ...]
    runs: tuple[str, ...]
    agents: tuple[str, ...]
    metrics: tuple[str, ...]
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    rounds: tuple[int, int]
    compares: tuple[str, ...]
    k_retrieve: int | None = None

    @classmethod
    def of(cls, ds: Dataset, views: Sequence[str], compares: Sequence[str]) -> Choices:
        return cls(
            tuple(views),
            ds.runs,
            ds.palette,
            tuple(sorted(ds.names)),
            tuple(recall_ks(ds.names)),
            tuple(ds.seeds),
            (min(ds.rounds), max(ds.rounds)),
            tuple(compares),
            ds.k_retrieve,
        )

    def defaults(self) -> dict[str, Any]:
        metric = DEFAULT_METRIC if DEFAULT_METRIC in self.metrics else (self.metrics[0] if self.metrics else None)
        return {
            "view": self.views[0],
            "metric": metric,
            "runs": list(self.runs),
            "agents": list(self.agents),
            "k": pick_k(self.ks, self.k_retrieve),
            "seed": self.seeds[0] if self.seeds else None,
            "rounds": list(self.rounds),
            "compare": self.compares[0],
        }


def encode(state: dict[str, Any]) -> str:
    """``?key=value&...`` of the controls (lists as repeated keys; an empty list as one empty value)."""
    pairs: list[tuple[str, str]] = []
    for key in KEYS:
        value = state.get(key)
        if value is None:
            continue
        if key in LISTS:
            pairs += [(key, str(v)) for v in value] or [(key, "")]
        elif key == "rounds":
            pairs.append((key, f"{int(value[0])}-{int(value[1])}"))
        else:
            pairs.append((key, str(value)))
    return "?" + urllib.parse.urlencode(pairs, quote_via=lambda text, *_: urllib.parse.quote(text, safe="@"))


def _rounds(text: str, bounds: tuple[int, int]) -> list[int] | None:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi if sep else lo)
    except ValueError:
        return None
    a, b = max(bounds[0], min(a, b)), min(bounds[1], max(a, b))
    return [a, b] if a <= b else None


def decode(search: str | None, choices: Choices) -> dict[str, Any]:
    """The controls a query string asks for, each checked against ``choices`` (invalid or missing -> the default)."""
    state = choices.defaults()
    query = urllib.parse.parse_qs((search or "").lstrip("?"), keep_blank_values=True)
    options: dict[str, Sequence[Any]] = {
        "view": choices.views,
        "metric": choices.metrics,
        "compare": choices.compares,
        "k": choices.ks,
        "seed": choices.seeds,
    }
    for key, values in query.items():
        if key in LISTS:
            allowed = choices.runs if key == "runs" else choices.agents
            chosen = [v for v in allowed if v in set(values)]
            state[key] = chosen if chosen or not any(values) else state[key]  # "agents=" is none; unknown names: the default
        elif key == "rounds":
            state[key] = _rounds(values[-1], choices.rounds) or state[key]
        elif key in options:
            value: Any = values[-1]
            if key in ("k", "seed"):
                value = int(value) if value.lstrip("-").isdigit() else None
            state[key] = value if value in options[key] else state[key]
    return state


def metric_options(names: Sequence[str]) -> list[dict[str, Any]]:
    """The metric picker: a disabled heading per group, then its metrics (name and short definition), internals left out."""
    out: list[dict[str, Any]] = []
    for key, heading, metrics in grouped(names):
        out.append({"label": html.B(heading, className="metric-group"), "value": f"group:{key}", "disabled": True, "search": ""})
        for name in metrics:
            text = definition(name)
            short = text if len(text) <= SHORT else text[: SHORT - 1].rstrip() + "…"
            out.append(
                {
                    "label": html.Div(
                        [
                            html.Span(name, className="metric-name"),
                            html.Br(),
                            html.Small(short, className="metric-def", style={"color": "#666"}),
                        ]
                    ),
                    "value": name,
                    "search": f"{name} {text}",
                }
            )
    return out


class LiveRuns:
    """Run directories read once, then again whenever their files change on disk (thread-safe)."""

    def __init__(self, run_dirs: Sequence[str | Path]) -> None:
        self.run_dirs = [Path(d) for d in run_dirs]
        self._lock = threading.Lock()
        self.runs: list[Run] = read_runs(self.run_dirs)
        self.ds = Dataset.from_runs(self.runs)
        self.version = self._stamp()

    def _stamp(self) -> str:
        stamps = []
        for d in self.run_dirs:
            for name in ("metrics.parquet", "manifest.json"):
                path = d / name
                stamps.append(str(path.stat().st_mtime_ns) if path.exists() else "-")
        return ":".join(stamps)

    def refresh(self) -> bool:
        """Re-read the runs if a file changed since the last read; True when the data changed."""
        with self._lock:
            stamp = self._stamp()
            if stamp == self.version:
                return False
            try:
                runs = read_runs(self.run_dirs)
            except RunDirError:  # a run directory caught mid-change: keep what we have, try again next time
                return False
            self.runs, self.ds, self.version = runs, Dataset.from_runs(runs), stamp
            return True
