"""Append-only stores: the observable log and, apart from it, the truth.

``LogStore`` holds what the platform could observe, per round, as columnar
chunks of tensors; ``TruthStore`` holds truth about the same events (true
intent, relevance, attention, click motive) and is read by metrics only.
Both keep a bounded number of recent rounds in memory; older rounds are
exported first (when logs are saved) and then dropped.
"""

from __future__ import annotations

import pandas as pd
import torch

from simulator.log import schema
from simulator.types import Catalogue, UserTable

Chunk = dict[str, torch.Tensor]


class _RoundTables:
    """Tables of chunks keyed by round: ``tables[name][round] -> list[Chunk]``."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[int, list[Chunk]]] = {}

    def append(self, table: str, round_idx: int, chunk: Chunk) -> None:
        """Add ``chunk`` (the schema's columns, equally long) to ``table`` in round ``round_idx``."""
        schema.check_chunk(table, chunk)
        self.tables.setdefault(table, {}).setdefault(round_idx, []).append(chunk)

    def rounds(self) -> list[int]:
        return sorted({r for t in self.tables.values() for r in t})

    def concat(self, table: str, first: int, last: int) -> Chunk:
        """All rows of ``table`` for rounds ``first..last`` (inclusive), concatenated."""
        rounds = self.tables.get(table, {})
        chunks = [c for r in range(first, last + 1) for c in rounds.get(r, [])]
        if not chunks:
            return {}
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}

    def bincount(self, table: str, column: str, round_idx: int, minlength: int) -> torch.Tensor:
        """``[minlength] int64`` counts of the ids in ``column`` of round ``round_idx``, chunk by chunk (no concatenated copy)."""
        counts = torch.zeros(minlength, dtype=torch.int64)
        for chunk in self.tables.get(table, {}).get(round_idx, []):
            ids = chunk[column].long()
            counts = counts.to(ids.device) + torch.bincount(ids, minlength=minlength)
        return counts

    def prune(self, keep_from: int) -> None:
        """Drop rounds older than ``keep_from``."""
        for t in self.tables.values():
            for r in [r for r in t if r < keep_from]:
                del t[r]

    def frame(self, table: str, round_idx: int) -> pd.DataFrame:
        """One round of ``table`` as a DataFrame (2-D columns become list columns)."""
        data = self.concat(table, round_idx, round_idx)
        cols = {}
        for k in schema.ordered(table, data):
            v = data[k].cpu()
            cols[k] = list(v.numpy()) if v.dim() > 1 else v.numpy()
        return pd.DataFrame(cols)


class LogStore(_RoundTables):
    """The observable record: requests, impressions, candidates, sessions, feature tables."""

    def __init__(self) -> None:
        super().__init__()
        self.catalogue: dict[int, Catalogue] = {}  # observable item table as served in each round
        self.users: dict[int, UserTable] = {}  # observable user table at each round's end

    def publish(self, round_idx: int, catalogue: Catalogue, users: UserTable) -> None:
        """Version the observable feature tables for ``round_idx``."""
        self.catalogue[round_idx] = catalogue
        self.users[round_idx] = users

    def prune(self, keep_from: int) -> None:
        super().prune(keep_from)
        for d in (self.catalogue, self.users):
            for r in [r for r in d if r < keep_from]:
                del d[r]

    def users_frame(self, round_idx: int) -> pd.DataFrame:
        """The versioned user feature table of one round (profile and history as list columns)."""
        users = self.users[round_idx]
        frame = pd.DataFrame(
            {
                "round": round_idx,
                "user_id": torch.arange(users.alive.shape[0]).numpy(),
                "alive": users.alive.cpu().numpy(),
                "profile": list(users.profile.cpu().numpy()),
                "history": list(users.history.cpu().numpy()),
            }
        )
        return frame[list(schema.USERS)]

    def items_frame(self, round_idx: int) -> pd.DataFrame:
        """The versioned item feature table of one round (scalar columns)."""
        cat = self.catalogue[round_idx]
        ids = torch.arange(cat.capacity)
        return pd.DataFrame(
            {
                "round": round_idx,
                "item_id": ids.numpy(),
                "live": cat.live.cpu().numpy(),
                "category": cat.category.cpu().numpy(),
                "creator": cat.creator.cpu().numpy(),
                "domain": cat.domain.cpu().numpy(),
                "promoted": cat.promoted.cpu().numpy(),
                "clicks": cat.clicks.cpu().numpy(),
                "exposures": cat.exposures.cpu().numpy(),
                "born_round": cat.born_round.cpu().numpy(),
            }
        )[list(schema.ITEMS)]


class TruthStore(_RoundTables):
    """Truth about logged events. Only :mod:`simulator.metrics` reads it."""
