"""Merge a sweep's part files into one long-form table with the grid's fields as columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scenarios.sweep.cells import Cell, Outcome, atomic_write, part_path, read_part


def cell_frame(cell: Cell, fields: list[str], out: Path) -> pd.DataFrame:
    """One finished cell's metrics, labelled with its agent label, grid point and key."""
    frame, _ = read_part(part_path(out, cell.key))
    frame = frame[frame.metric != "popularity_index"].copy()  # relative to the agents compared: recomputed per grid point
    frame["agent"] = cell.label
    for pos, name in enumerate(fields):
        frame.insert(1 + pos, name, [cell.point[name]] * len(frame))
    frame["cell"] = cell.key
    return frame


def merge_results(cells: list[Cell], fields: list[str], out: str | Path) -> pd.DataFrame:
    """Every finished cell, with popularity_index recomputed across the agents of each (grid point, seed, round)."""
    from scenarios.experiment import add_popularity_index

    out = Path(out)
    frames = [cell_frame(c, fields, out) for c in cells if part_path(out, c.key).exists()]
    columns = ["scenario", *fields, "agent", "seed", "round", "metric", "value", "cell"]
    if not frames:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(frames, ignore_index=True)
    groups = [frame] if not fields else [g for _, g in frame.groupby([frame[f].astype(str) for f in fields], sort=False)]
    merged = []
    for group in groups:
        base = group[["scenario", "agent", "seed", "round", "metric", "value"]]
        with_index = add_popularity_index(base)
        keys = group.drop_duplicates(["agent", "seed"])[["agent", "seed", *fields, "cell"]]
        extra = with_index.iloc[len(base) :].merge(keys, on=["agent", "seed"], how="left")
        merged += [group, extra]
    return pd.concat(merged, ignore_index=True)[columns]


def merge_leaderboard(results: pd.DataFrame, fields: list[str], k: int) -> pd.DataFrame:
    """Leaderboard agreement of the offline protocols across the agents of each grid point (leaderboard.parquet)."""
    from simulator.metrics.leaderboard import LEADERBOARD_COLUMNS, leaderboard

    columns = [LEADERBOARD_COLUMNS[0], *fields, *LEADERBOARD_COLUMNS[1:]]
    if results.empty:
        return pd.DataFrame(columns=columns)
    groups = [((), results)] if not fields else list(results.groupby([results[f].astype(str) for f in fields], sort=False))
    frames = []
    for _, group in groups:
        board = leaderboard(group[["scenario", "agent", "seed", "round", "metric", "value"]], k)
        for name in fields:
            board[name] = group[name].iloc[0]
        frames.append(board)
    return pd.concat(frames, ignore_index=True)[columns]


def cells_table(cells: list[Cell], outcomes: dict[str, Outcome], fields: list[str]) -> pd.DataFrame:
    """One row per cell: key, label, seed, grid point, status, wall seconds and the headline metric."""
    rows = []
    for cell in cells:
        got = outcomes.get(cell.key)
        rows.append(
            {
                "cell": cell.key,
                "agent": cell.label,
                "seed": cell.seed,
                **{f: cell.point[f] for f in fields},
                "status": got.status if got else "not run",
                "wall_s": got.wall_s if got else float("nan"),
                "headline": got.headline if got else None,
                "error": got.error if got else "",
            }
        )
    return pd.DataFrame(rows)


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
