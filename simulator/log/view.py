"""The training view: what ``fit`` receives. It is the information barrier.

A :class:`TrainingView` is built from the observable :class:`LogStore` and the
model registry only; this module never imports :mod:`simulator.world` or the
truth store, so nothing in it can derive from the world's private state
(tested by an import contract and by a perturbation test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Protocol

import torch

from simulator.log.store import LogStore
from simulator.types import Catalogue, RequestBatch, UserTable


class FrozenScorer(Protocol):
    """A frozen ranker snapshot that agents may query (no gradients, no updates)."""

    version: int

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` click probability of ``item_ids [B, K]`` for ``requests``."""
        ...


@dataclass(frozen=True)
class Impressions:
    """Exposed items of the window, one row per exposure (all ``[E]``).

    ``row`` indexes :attr:`TrainingView.requests`.
    """

    row: torch.Tensor
    item_id: torch.Tensor
    position: torch.Tensor
    retrieval_rank: torch.Tensor
    retrieval_score: torch.Tensor
    ranking_score: torch.Tensor
    exposure_propensity: torch.Tensor
    clicked: torch.Tensor
    finished: torch.Tensor
    watch_time: torch.Tensor
    dwell: torch.Tensor
    portal_only: torch.Tensor
    # the optional world features' proxies (simulator.world.features); None in logs that predate them
    engagement: torch.Tensor | None = None  # post-click item engagement seconds as logged
    other_clicks: torch.Tensor | None = None  # clicks in the same session on other slots
    converted: torch.Tensor | None = None  # bool
    scroll_depth: torch.Tensor | None = None  # the request's logged scroll depth (NaN: not logged)

    def __len__(self) -> int:
        return int(self.row.shape[0])


@dataclass(frozen=True)
class Candidates:
    """The recalled sets of the window, one row per recalled item (all ``[C]``)."""

    row: torch.Tensor
    item_id: torch.Tensor
    retrieval_rank: torch.Tensor
    retrieval_score: torch.Tensor
    ranking_score: torch.Tensor
    exposed: torch.Tensor
    recall_prob: torch.Tensor
    expose_prob: torch.Tensor

    def __len__(self) -> int:
        return int(self.row.shape[0])


@dataclass(frozen=True)
class TrainingView:
    """A read-only window of the observable log, ready for torch.

    Attributes:
        round: the last round in the window (the one just completed).
        first_round: the first round in the window.
        requests: every request of the window as served (``[R]``), request_id ascending.
        request_round: ``[R] int64`` round of each request.
        explore: ``[R] bool`` served by uniform exploration.
        ranker_version: ``[R] int64`` ranker snapshot that ranked each request.
        impressions: exposures with labels; ``row`` points into ``requests``.
        candidates: recalled sets with scores and the exposed flag.
        catalogue: observable item features now (for the next round's index).
        users: observable user table now.
        ranker: the frozen ranker snapshot serving now (the teacher).
        rankers: every ranker snapshot that served a request in the window, by version.
        retrievers: the agent's own retriever snapshots (``state_dict``) that served in the window, by version.
        n_users, n_items: id capacities (embedding table sizes).
    """

    round: int
    first_round: int
    requests: RequestBatch
    request_round: torch.Tensor
    explore: torch.Tensor
    ranker_version: torch.Tensor
    impressions: Impressions
    catalogue: Catalogue
    users: UserTable
    ranker: FrozenScorer
    rankers: dict[int, FrozenScorer]
    retrievers: dict[int, dict]
    n_users: int
    n_items: int
    candidate_source: Candidates | Callable[[], Candidates] = field(repr=False, compare=False)

    @cached_property
    def candidates(self) -> Candidates:
        """The recalled sets (the largest table: assembled on first use only)."""
        src = self.candidate_source
        return src if isinstance(src, Candidates) else src()

    @property
    def device(self) -> torch.device:
        return self.catalogue.live.device


def _records(cls, data: dict[str, torch.Tensor], row: torch.Tensor):
    return cls(row=row, **{f.name: data[f.name] for f in fields(cls) if f.name != "row" and f.name in data})


def _for_agents(scorer: FrozenScorer) -> FrozenScorer:
    """A ranker as agents may hold it: its ``agent_handle()`` where it reads the truth (noisy oracle), else itself."""
    handle = getattr(scorer, "agent_handle", None)
    return handle() if handle is not None else scorer


Withhold = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (user_id [R], round [R]) -> [R] bool: keep out of training


def build_view(
    log: LogStore,
    first_round: int,
    last_round: int,
    ranker: FrozenScorer,
    rankers: dict[int, FrozenScorer],
    retrievers: dict[int, dict] | None = None,
    withhold: Withhold | None = None,
) -> TrainingView:
    """Assemble the training view of rounds ``first_round..last_round`` from the log.

    ``withhold`` names requests kept out of the view (the offline hold-out): their rows, impressions,
    sessions and candidates never reach it.
    """
    ranker, rankers = _for_agents(ranker), {v: _for_agents(m) for v, m in rankers.items()}
    req = log.concat("requests", first_round, last_round)
    imp = log.concat("impressions", first_round, last_round)
    ses = log.concat("sessions", first_round, last_round)
    users = log.users[last_round]
    rows = _Rows(req["request_id"], None if withhold is None else ~withhold(req["user_id"], req["round"]))
    imp = {**imp, "dwell": ses["dwell"], "portal_only": ses["portal_only"], **_proxies(req, imp, ses)}
    req, imp = rows.requests(req), rows.select(imp)
    catalogue = log.catalogue[last_round]
    return TrainingView(
        round=last_round,
        first_round=first_round,
        requests=_request_batch(req, users, last_round),
        request_round=req["round"],
        explore=req["explore"],
        ranker_version=req["ranker_version"],
        impressions=_records(Impressions, imp, rows.row(imp["request_id"])),
        catalogue=catalogue,
        users=users,
        ranker=ranker,
        rankers=rankers,
        retrievers=dict(retrievers or {}),
        n_users=int(users.alive.shape[0]),
        n_items=catalogue.capacity,
        candidate_source=_candidate_loader(log, rows, first_round, last_round),
    )


def _proxies(req: dict[str, torch.Tensor], imp: dict[str, torch.Tensor], ses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per impression, the optional world features' proxies the log holds (none in logs that predate them)."""
    out: dict[str, torch.Tensor] = {k: ses[k] for k in ("engagement", "other_clicks") if k in ses}
    if "scroll_depth" in req:  # per request -> per impression (request ids are contiguous in a window)
        out["scroll_depth"] = req["scroll_depth"][imp["request_id"] - req["request_id"][0]]
    return out


def _request_batch(req: dict[str, torch.Tensor], users: UserTable, last_round: int) -> RequestBatch:
    """The window's requests as served (the profile as the user table has it now)."""
    return RequestBatch(
        request_id=req["request_id"],
        user_id=req["user_id"],
        domain=req["domain"],
        entry=req["entry"],
        hour=req["time"] % 168.0,
        profile=users.profile[req["user_id"]],
        history=req["history"],
        round=last_round,
        history_time=req.get("history_time"),
        session_id=req.get("session_id"),
    )


def _candidate_loader(log: LogStore, rows: _Rows, first_round: int, last_round: int) -> Callable[[], Candidates]:
    """Assembles the recalled sets of the window on first use (the largest table)."""
    chunks = {r: list(log.tables.get("candidates", {}).get(r, [])) for r in range(first_round, last_round + 1)}

    def load_candidates() -> Candidates:
        cols = {k: torch.cat([c[k] for r in sorted(chunks) for c in chunks[r]]) for k in next(c for cs in chunks.values() for c in cs)}
        cols = rows.select(cols)
        cols.update(item_id=cols["item_id"].long(), retrieval_rank=cols["retrieval_rank"].long())  # stored compact
        return _records(Candidates, cols, rows.row(cols["request_id"]))

    return load_candidates


class _Rows:
    """Request ids of the window -> rows of the view (request ids are contiguous in a window, so a row is an offset)."""

    def __init__(self, request_id: torch.Tensor, keep: torch.Tensor | None) -> None:
        self.first_id, self.keep = request_id[0], keep
        self.new_row = None if keep is None else keep.long().cumsum(0) - 1

    def requests(self, req: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return req if self.keep is None else {k: v[self.keep] for k, v in req.items()}

    def select(self, table: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The rows of a per-request table whose request is kept."""
        if self.keep is None:
            return table
        mask = self.keep[table["request_id"] - self.first_id]
        return {k: v[mask] for k, v in table.items()}

    def row(self, request_id: torch.Tensor) -> torch.Tensor:
        offset = request_id - self.first_id
        return offset if self.new_row is None else self.new_row[offset]
