"""Offline evaluation protocols over the observable log only (never the truth).

A candidate retrieval model ranks the whole live catalogue for logged requests, the items each user already
consumed (the request's observable click history) excluded, and is scored on the clicks those requests got:
recall, precision, NDCG (binary gains) and hit rate at K, means over requests with at least one click.
"""

from __future__ import annotations

from typing import Protocol

import torch

from simulator.metrics import ranking as R
from simulator.types import RequestBatch


class Candidate(Protocol):
    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def ranked_lists(candidate: Candidate, batch: RequestBatch, k: int, n_live: int) -> torch.Tensor:
    """``[B, k]`` the candidate's top-k live items per request, skipping items in the request's history."""
    extra = batch.history.shape[1]
    ids, _ = candidate.retrieve(batch, min(k + extra, n_live))
    consumed = (ids.unsqueeze(2) == batch.history.unsqueeze(1)).any(2)
    order = torch.sort(consumed.to(torch.int8), dim=1, stable=True).indices  # unconsumed first, in rank order
    return ids.gather(1, order)[:, :k]


def clicked_items(request_id: torch.Tensor, imp: dict[str, torch.Tensor], slate: int) -> torch.Tensor:
    """``[B, S]`` clicked items of each request in ``request_id`` (sorted), -1 where a slot got no click."""
    sel = imp["clicked"] & torch.isin(imp["request_id"], request_id)
    rows = torch.searchsorted(request_id, imp["request_id"][sel])
    items = torch.full((len(request_id), slate), -1, dtype=torch.int64, device=request_id.device)
    items[rows, imp["position"][sel]] = imp["item_id"][sel]
    return items


def ranking_metrics(lists: torch.Tensor, clicked: torch.Tensor, ks: tuple[int, ...], prefix: str) -> dict[str, float]:
    """``<prefix>_{recall,precision,ndcg,hitrate}@K`` of ``lists [B, Kmax]`` against ``clicked [B, S]`` (-1 padded)."""
    mask = clicked >= 0
    n_rel = mask.sum(1).double()
    out: dict[str, float] = {}
    for k in ks:
        hits = (lists[:, :k].unsqueeze(2) == clicked.unsqueeze(1)).any(2) & (lists[:, :k] >= 0)  # [B, k] in rank order
        ideal = (torch.arange(k, device=lists.device).unsqueeze(0) < n_rel.unsqueeze(1)).double()
        n_hit = hits.sum(1).double()
        out[f"{prefix}_recall@{k}"] = float((n_hit / n_rel).mean())
        out[f"{prefix}_precision@{k}"] = float((n_hit / k).mean())
        out[f"{prefix}_ndcg@{k}"] = float(R.ndcg(hits.double(), ideal).mean())
        out[f"{prefix}_hitrate@{k}"] = float((n_hit > 0).double().mean())
    return out
