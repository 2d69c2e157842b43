"""The audit trail of a round's truth and offline metrics (``--save-truth``).

What every truth and offline metric was computed from, so that anyone can recompute them from the run
directory alone: the panel (users, evaluation intents, the agent's top-K_max, the true top-K_max with
relevances, the total relevance, the ranker's order), the offline protocols' requests with the candidate's
lists and their truth, and the off-policy estimators' inputs. One row per panel user or request; 2-D
tensors become list columns.
"""

from __future__ import annotations

import pandas as pd
import torch


class Audit:
    """Tables of one round, filled block by block while the metrics are computed."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[dict[str, torch.Tensor]]] = {}

    def add(self, table: str, **columns: torch.Tensor) -> None:
        """Append rows (equally long tensors) to ``table``."""
        self.chunks.setdefault(table, []).append({k: v.detach().cpu() for k, v in columns.items()})

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every table as a DataFrame (2-D columns as list columns)."""
        out = {}
        for table, chunks in self.chunks.items():
            cols = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
            out[table] = pd.DataFrame({k: list(v.numpy()) if v.dim() > 1 else v.numpy() for k, v in cols.items()})
        return out
