"""The log and truth rows of one served batch, column by column as :mod:`simulator.log.schema` names them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simulator.cascade.serving import Exposure, Recall
from simulator.log.store import Chunk, LogStore, TruthStore
from simulator.types import RequestBatch
from simulator.world.features import session_other_clicks
from simulator.world.user_model import Feedback

Tables = dict[str, Chunk]


@dataclass(frozen=True)
class Served:
    """One part of a batch after the cascade (exploit or explore): what the log and truth record of it."""

    batch: RequestBatch
    intents: torch.Tensor  # [B] true intents (truth)
    explore: bool
    retriever_version: int
    ranker_version: int
    recall: Recall
    rank_scores: torch.Tensor  # [B, K_r]
    exposure: Exposure
    slate: torch.Tensor  # [B, S] item ids in slot order
    feedback: Feedback
    examine_prob: torch.Tensor  # [B, S] true examination probability (truth)
    attended: torch.Tensor | None = None  # [B] bool the block was attended (truth; None: all were)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _per_slot(t: torch.Tensor, s: int) -> torch.Tensor:
    """``[B] -> [B * S]``: a per-request value repeated for each slot."""
    return _flat(t.unsqueeze(1).expand(len(t), s))


def request_rows(p: Served) -> Chunk:
    rid, b, dev = p.batch.request_id, len(p.batch), p.slate.device
    return {
        "request_id": rid,
        "round": torch.full_like(rid, p.batch.round),
        "time": p.batch.absolute_time(),
        "user_id": p.batch.user_id,
        "domain": p.batch.domain,
        "entry": p.batch.entry,
        "explore": torch.full((b,), p.explore, dtype=torch.bool, device=dev),
        "retriever_version": torch.full_like(rid, p.retriever_version),
        "ranker_version": torch.full_like(rid, p.ranker_version),
        "history": p.batch.history,
        "session_id": p.batch.sessions(),
        "scroll_depth": p.feedback.scroll_depth if p.feedback.scroll_depth is not None else torch.full((b,), float("nan"), device=dev),
        **({} if p.batch.history_time is None else {"history_time": p.batch.history_time}),
    }


def candidate_rows(p: Served) -> Chunk:
    """The recalled set, the largest table (B * K_r rows): compact integer types."""
    b, k = p.recall.item_ids.shape
    dev = p.slate.device
    exposed = torch.zeros(b, k, dtype=torch.bool, device=dev).scatter_(1, p.exposure.slot_index, True)
    return {
        "request_id": _per_slot(p.batch.request_id, k),
        "item_id": _flat(p.recall.item_ids).int(),
        "retrieval_rank": _flat(torch.arange(k, device=dev, dtype=torch.int16).expand(b, k)),
        "retrieval_score": _flat(p.recall.scores),
        "ranking_score": _flat(p.rank_scores),
        "exposed": _flat(exposed),
        "recall_prob": _flat(p.recall.recall_prob),
        "expose_prob": _flat(p.exposure.expose_prob),
    }


def impression_rows(p: Served) -> Chunk:
    b, s = p.slate.shape
    slots = p.exposure.slot_index

    def at_slots(t: torch.Tensor) -> torch.Tensor:
        return _flat(t.gather(1, slots))

    fb = p.feedback
    return {
        "request_id": _per_slot(p.batch.request_id, s),
        "user_id": _per_slot(p.batch.user_id, s),
        "item_id": _flat(p.slate),
        "position": _flat(torch.arange(s, device=p.slate.device).expand(b, s)),
        "retrieval_rank": _flat(slots),
        "retrieval_score": at_slots(p.recall.scores),
        "ranking_score": at_slots(p.rank_scores),
        "exposure_propensity": at_slots(p.exposure.propensity),
        "clicked": _flat(fb.clicked),
        "finished": _flat(fb.finished),
        "watch_time": _flat(fb.watch_time),
        "converted": _flat(fb.converted if fb.converted is not None else torch.zeros_like(fb.clicked)),
    }


def part_tables(p: Served) -> Tables:
    """Every table's rows for one served part."""
    imp = impression_rows(p)
    slot = {"request_id": imp["request_id"], "position": imp["position"]}
    fb = p.feedback
    return {
        "requests": request_rows(p),
        "candidates": candidate_rows(p),
        "impressions": imp,
        "sessions": {
            **slot,
            "dwell": _flat(fb.dwell),
            "portal_only": _flat(fb.portal_only),
            "engagement": _flat(fb.watch_time if fb.engagement is None else fb.engagement),
        },
        "truth_requests": {
            "request_id": p.batch.request_id,
            "intent": p.intents,
            "attended": torch.ones_like(p.intents, dtype=torch.bool) if p.attended is None else p.attended,
        },
        "truth_impressions": {
            **slot,
            "item_id": imp["item_id"],
            "user_id": imp["user_id"],
            "relevance": _flat(fb.relevance),
            "examined": _flat(fb.examined),
            "motive": _flat(fb.motive),
            "examine_prob": _flat(p.examine_prob),
        },
    }


def append_parts(log: LogStore, truth: TruthStore, r: int, parts: list[Tables]) -> None:
    """Append the parts of one batch as one chunk per table; requests in id order."""
    tables = {}
    for table in parts[0]:
        merged = {c: torch.cat([part[table][c] for part in parts]) for c in parts[0][table]}
        if table in ("requests", "truth_requests"):
            order = merged["request_id"].argsort()
            merged = {c: v[order] for c, v in merged.items()}
        tables[table] = merged
    req, imp = tables["requests"], tables["impressions"]  # sessions rows align with impressions rows
    tables["sessions"]["other_clicks"] = session_other_clicks(req["session_id"], req["request_id"], imp["request_id"], imp["clicked"])
    for table, merged in tables.items():
        (truth if table.startswith("truth_") else log).append(table, r, merged)
