"""What a page says about a run besides its figures: provenance (date, wall time, command, commit) and progress.

Provenance is read from ``manifest.json`` when the runner recorded it
(``started``, ``finished``, ``wall_seconds``, ``command``, ``git_commit``);
anything absent is shown as "not recorded", never guessed. Progress compares
the metrics on disk with the agents, seeds and rounds the manifest promises,
so a report or app drawn while a run is going says which agents are not done
instead of drawing empty panels for them.
"""

from __future__ import annotations

import datetime as dt
import shlex
from typing import Any

import pandas as pd

from dashboards.data import Run

NOT_RECORDED = "not recorded"


def _when(value: Any) -> str:
    """An ISO time or a Unix timestamp as ``YYYY-MM-DD HH:MM:SS UTC`` (anything else as given)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, str) and value.strip():
        try:
            stamp = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return value.strip()
        if stamp.tzinfo is None:
            return stamp.strftime("%Y-%m-%d %H:%M:%S")
        return stamp.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return NOT_RECORDED


def duration_text(seconds: Any) -> str:
    """``4 min 27 s`` style wall time, or "not recorded"."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds != seconds or seconds < 0:
        return NOT_RECORDED
    s = int(round(float(seconds)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h} h {m} min {sec} s"
    return f"{m} min {sec} s" if m else f"{float(seconds):.1f} s"


def _command(value: Any) -> str:
    if isinstance(value, (list, tuple)) and value:
        return shlex.join(str(v) for v in value)
    return value.strip() if isinstance(value, str) and value.strip() else NOT_RECORDED


def provenance(run: Run) -> dict[str, str]:
    """Run date, finish, wall time, command and git commit (each "not recorded" when the manifest lacks it)."""
    m = run.manifest
    commit = m.get("git_commit")
    return {
        "started": _when(m.get("started")),
        "finished": _when(m.get("finished")),
        "wall time": duration_text(m.get("wall_seconds")),
        "command": _command(m.get("command")),
        "git commit": str(commit).strip() if isinstance(commit, str) and commit.strip() else NOT_RECORDED,
    }


def _seed_list(run: Run) -> list[int]:
    seeds = run.manifest.get("seeds", [])
    return [int(s) for s in seeds] if isinstance(seeds, list) else []


def agent_progress(run: Run) -> dict[str, str]:
    """Per agent the manifest lists, a short note when it has not finished every seed and round ('' when done)."""
    rounds = run.manifest.get("rounds")
    seeds = _seed_list(run)
    last = run.metrics.groupby(["agent", "seed"])["round"].max()
    out = {}
    for agent in [*run.listed_agents, *(a for a in run.agents if a not in run.listed_agents)]:
        done = last[agent] if agent in last.index.get_level_values(0) else pd.Series(dtype="int64")
        if done.empty:
            out[agent] = "no finished round yet"
            continue
        if not isinstance(rounds, int) or not seeds:
            out[agent] = ""
            continue
        finished = [s for s in seeds if int(done.get(s, 0)) >= rounds]
        if len(finished) == len(seeds):
            out[agent] = ""
            continue
        partial = [f"seed {s} at round {int(done[s])} of {rounds}" for s in seeds if s in done.index and int(done[s]) < rounds]
        out[agent] = ", ".join([f"{len(finished)} of {len(seeds)} seeds finished", *partial])
    return out


def pending_text(runs: list[Run]) -> str:
    """One sentence naming the unfinished agents of these runs ('' when every agent is done)."""
    parts = []
    for run in runs:
        for agent, note in agent_progress(run).items():
            if note:
                parts.append(f"{agent} ({note})" if len(runs) == 1 else f"{run.label} · {agent} ({note})")
    if not parts:
        return ""
    return "Not finished: " + "; ".join(parts) + ". Figures show what is on disk; agents without data are left out."


def seeds_caption(counts: list[int], bands: bool = True) -> str:
    """How many seeds the lines average and whether there are intervals; plain about a single seed.

    ``counts``: the number of seeds behind each (run, agent) drawn; ``bands``: the figure shades its intervals
    (else hover shows them).
    """
    if not counts or max(counts) <= 1:
        return "1 seed: no intervals. Lines are that seed's values; run 3 or more seeds for 95% bands."
    low, high = min(counts), max(counts)
    seeds = f"{high} seeds" if low == high else f"{low} to {high} seeds"
    shown = "bands: 95% t-intervals" if bands else "hover shows the 95% t-intervals"
    text = f"Lines: mean over {seeds}; {shown} across seeds, clipped to the metric's possible range."
    if low == 1:
        text += " Agents with a single seed have no band (1 seed: no intervals)."
    elif low == 2:
        text += " With 2 seeds t = 12.7, so bands are wide."
    return text


def seed_counts(metrics: pd.DataFrame) -> list[int]:
    """Seeds with metrics per (run, agent)."""
    return [int(n) for n in metrics.groupby(["run", "agent"])["seed"].nunique()] if not metrics.empty else []


def k_note(k: int | None, k_retrieve: int | None, chosen: bool) -> str:
    """Why this K (the default) or a warning that the serving model's replayed recall is degenerate at it (K >= K_r)."""
    if k is None:
        return ""
    if k_retrieve is None:
        return f"K = {k}. The manifest does not record the cascade's retrieval size K_r."
    if k >= k_retrieve:
        return (
            f"Caution: K = {k} ≥ K_r = {k_retrieve} (the cascade retrieves {k_retrieve} candidates), so the on-policy replay "
            f"recall@{k} is close to 1 by construction for every agent; a K below K_r shows the contrast."
        )
    if chosen:
        return f"K = {k} (K_r = {k_retrieve})."
    return (
        f"K = {k}: the largest recall cut-off below the cascade's retrieval size K_r = {k_retrieve}, "
        "where a replay of the serving model's own clicks is not ~1 by construction."
    )
