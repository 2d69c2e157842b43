"""Offline evaluation of the freshly trained candidate, each estimate held against the truth.

Run at every round's end, after the retrain: the candidate is the model that will serve next (never the one
that served), and the truth is taken in the world it will serve in. Three protocols, each with its truth on
the same requests and the same denominators, so that ``bias = estimate - truth`` means something:

- ``holdout``: the round's held-out requests (a share of users, withheld from the training view);
- ``shared``: one common log served by the legacy system and a uniform slice, identical for every agent;
- ``ope``: off-policy estimates of the candidate policy's clicks and finishes per request from the agent's own
  log rows with propensities (:mod:`simulator.metrics.estimators`).

The truth of a ranked list ``L`` for a request of user ``u`` with intent ``c``, the consumed items ``H``
excluded on both sides: recall ``sum_L r / sum_{live - H} r`` (the expected share of the user's clicks if every
live item were examined), precision ``sum_L r / K``, hit rate ``1 - prod_L (1 - r)``, NDCG with graded gains
``r`` against the true top-K outside ``H``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from simulator.config import Scenario
from simulator.evaluation_config import active_estimators, ope_rows
from simulator.log.split import holdout_flags
from simulator.metrics import estimators as E
from simulator.metrics import ranking as R
from simulator.metrics.audit import Audit
from simulator.metrics.protocols import clicked_items, ranked_lists, ranking_metrics
from simulator.types import RequestBatch
from simulator.world.relevance import true_relevance, true_topk_and_total
from simulator.world.state import WorldState
from simulator.world.user_model import expected_response


@dataclass(frozen=True)
class SharedRound:
    """One round of the shared log: clicked requests (observable) and a truth snapshot of their users.

    ``world`` holds the logging world's user rows of these requests only (user ``i`` of the snapshot is request
    ``i``) and its item tensors as of that round.
    """

    batch: RequestBatch
    clicked: torch.Tensor  # [B, S] -1 padded
    intents: torch.Tensor  # [B]
    world: WorldState


@dataclass(frozen=True)
class OfflineInput:
    """What offline evaluation reads at a round's end."""

    sc: Scenario
    seed: int
    round: int
    world: WorldState
    candidate: Any  # the freshly trained retriever, indexed on the round-end catalogue
    ranker: Any  # the ranker snapshot that will serve with it
    set_intents: Any
    requests: dict[str, torch.Tensor]
    impressions: dict[str, torch.Tensor]
    truth_requests: dict[str, torch.Tensor]
    shared: SharedRound | None
    audit: Audit | None = None  # filled with what every estimate and truth was computed from (--save-truth)


def offline_metrics(inp: OfflineInput) -> dict[str, float]:
    """Every protocol's estimates, their truths and biases for the round."""
    out: dict[str, float] = {}
    if inp.sc.evaluation.holdout_share > 0:
        out.update(holdout(inp))
    if inp.shared is not None:
        out.update(shared(inp, inp.shared))
    if active_estimators(inp.sc):
        out.update(off_policy(inp))
    return out


def logged_batch(req: dict[str, torch.Tensor], rows: torch.Tensor, world: WorldState, round_idx: int) -> RequestBatch:
    """The observable request batch of logged rows ``rows`` (profile as the platform sees it now)."""
    return RequestBatch(
        request_id=req["request_id"][rows],
        user_id=req["user_id"][rows],
        domain=req["domain"][rows],
        entry=req["entry"][rows],
        hour=(req["time"][rows] % 168.0).float(),
        profile=world.user_profile[req["user_id"][rows]],
        history=req["history"][rows],
        round=round_idx,
        time=req["time"][rows],
        history_time=req["history_time"][rows] if "history_time" in req else None,
    )


def holdout(inp: OfflineInput) -> dict[str, float]:
    """The hold-out protocol: the candidate on the round's withheld requests that got a click."""
    req, imp = inp.requests, inp.impressions
    held = holdout_flags(inp.seed, req["user_id"], req["round"], inp.sc.evaluation.holdout_share)
    clicked_req = torch.unique(imp["request_id"][imp["clicked"]])
    rows = torch.nonzero(held & torch.isin(req["request_id"], clicked_req)).squeeze(1)
    if len(rows) == 0:
        return {}
    batch = logged_batch(req, rows, inp.world, inp.round)
    intents = inp.truth_requests["intent"][torch.searchsorted(inp.truth_requests["request_id"], batch.request_id)]
    clicked = clicked_items(batch.request_id, imp, inp.sc.cascade.slate_size)
    return _scored("holdout", inp, batch, clicked, inp.world, batch.user_id, intents)


def shared(inp: OfflineInput, sr: SharedRound) -> dict[str, float]:
    """The shared-log protocol: the candidate on the common log's clicked requests."""
    if len(sr.batch) == 0:  # no click in the shared log this round: nothing to score on
        return {}
    users = torch.arange(len(sr.batch), device=sr.intents.device)
    return _scored("shared", inp, sr.batch, sr.clicked, sr.world, users, sr.intents)


def _scored(name: str, inp: OfflineInput, batch: RequestBatch, clicked: torch.Tensor, world: WorldState, users: torch.Tensor,
            intents: torch.Tensor) -> dict[str, float]:  # fmt: skip
    """``offline_<name>_*``, ``true_<name>_*`` and ``bias_<name>_*`` at every K, plus the number of requests."""
    ks, n_live = inp.sc.eval_ks, int(inp.world.item_live.sum())
    inp.set_intents(batch.request_id, intents)  # privileged candidates (the oracle) rank for the true intent
    lists = ranked_lists(inp.candidate, batch, max(ks), n_live)
    est = ranking_metrics(lists, clicked, ks, f"offline_{name}")
    truth = truth_of_lists(world, inp.sc, users, intents, lists, batch.history, ks, f"true_{name}")
    if inp.audit is not None:
        inp.audit.add(name, request_id=batch.request_id, user_id=batch.user_id, intent=intents, history=batch.history, clicked=clicked,
                      candidate_top=lists, candidate_top_relevance=true_relevance(world, inp.sc, users, lists, intents))  # fmt: skip
    out = {**est, **truth, f"offline_{name}_requests": float(len(batch))}
    for key, value in est.items():
        metric = key.removeprefix(f"offline_{name}_")
        out[f"bias_{name}_{metric}"] = value - truth[f"true_{name}_{metric}"]
    return out


def truth_of_lists(world: WorldState, sc: Scenario, users: torch.Tensor, intents: torch.Tensor, lists: torch.Tensor,
                   history: torch.Tensor, ks: tuple[int, ...], prefix: str) -> dict[str, float]:  # fmt: skip
    """The expected value of each offline metric if the user examined every live item (consumed items excluded)."""
    kmax, n_hist = max(ks), history.shape[1]
    top_ids, top_rel, total = true_topk_and_total(world, sc, users, intents, kmax + n_hist, sc.metrics.block_size)
    ideal = torch.where((top_ids.unsqueeze(2) == history.unsqueeze(1)).any(2), 0.0, top_rel.double())
    total = total - _consumed_relevance(world, sc, users, intents, history)
    rel = true_relevance(world, sc, users, lists, intents).double()
    out: dict[str, float] = {}
    for k in ks:
        gained = rel[:, :k].sum(1)
        out[f"{prefix}_recall@{k}"] = float((gained / total.clamp_min(1e-12)).mean())
        out[f"{prefix}_precision@{k}"] = float((gained / k).mean())
        out[f"{prefix}_ndcg@{k}"] = float(R.ndcg(rel[:, :k], ideal).mean())
        out[f"{prefix}_hitrate@{k}"] = float((1 - (1 - rel[:, :k]).prod(1)).mean())
    return out


def _consumed_relevance(world: WorldState, sc: Scenario, users: torch.Tensor, intents: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """``[B] float64`` total true relevance of the distinct live items in each request's history."""
    srt = history.sort(dim=1).values
    first = torch.ones_like(srt, dtype=torch.bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    keep = first & (srt >= 0) & world.item_live[srt.clamp_min(0)]
    rel = true_relevance(world, sc, users, srt.clamp_min(0), intents).double()
    return (rel * keep).sum(1)


def off_policy(inp: OfflineInput) -> dict[str, float]:
    """``ope_<estimator>_<target>``, ``true_<target>`` and ``bias_ope_<estimator>_<target>`` for clicks and finishes."""
    logged = _ope_log(inp)
    if logged is None:
        return {}
    batch, slate, clicked, finished, propensity, intents = logged
    target = _candidate_slates(inp, batch, intents)
    relevance = true_relevance(inp.world, inp.sc, batch.user_id, target, intents)
    p_click, p_finish = expected_response(inp.world, inp.sc, batch.user_id, batch.entry, target, relevance)
    model_logged, model_target = inp.ranker.score(batch, slate), inp.ranker.score(batch, target)
    out: dict[str, float] = {"ope_requests": float(len(batch))}
    if inp.audit is not None:
        inp.audit.add(
            "ope",
            request_id=batch.request_id,
            user_id=batch.user_id,
            intent=intents,
            logged_slate=slate,
            clicked=clicked,
            finished=finished,
            propensity=propensity,
            target_slate=target,
            p_click=p_click,
            p_finish=p_finish,
            model_logged=model_logged,
            model_target=model_target,
        )
    finish_per_click = float(finished.sum() / clicked.sum().clamp_min(1))  # the reward model of finishes: clicks x finish rate
    for name, reward, truth, scale in (("clicks", clicked, p_click, 1.0), ("finished", finished, p_finish, finish_per_click)):
        out[f"true_{name}"] = float(truth.double().sum(1).mean())
        for est in active_estimators(inp.sc):
            value = _estimate(est, inp, reward, slate, target, propensity, scale * model_logged, scale * model_target)
            out[f"ope_{est}_{name}"], out[f"bias_ope_{est}_{name}"] = value, value - out[f"true_{name}"]
    return out


def _estimate(est: str, inp: OfflineInput, reward: torch.Tensor, slate: torch.Tensor, target: torch.Tensor, propensity: torch.Tensor,
              model_logged: torch.Tensor, model_target: torch.Tensor) -> float:  # fmt: skip
    floor, match = inp.sc.evaluation.propensity_floor, E.item_match(slate, target)
    if est == "ips":
        return E.ips(reward, match, propensity, floor)
    if est == "snips":
        return E.snips(reward, match, propensity, floor)
    if est == "dm":
        return E.direct_method(model_target)
    if est == "dr":
        return E.doubly_robust(reward, match, propensity, floor, model_logged, model_target)
    # ips_pos: uniform exploration shows each exposed item at each of the S slots alike, so P(item at slot) = p / S
    return E.ips(reward, E.slot_match(slate, target), propensity / slate.shape[1], floor)


def _ope_log(inp: OfflineInput) -> tuple[RequestBatch, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The logged requests the estimators read, with ``[n, S]`` slates, clicks, finishes, propensities (slot order)."""
    req, imp, s = inp.requests, inp.impressions, inp.sc.cascade.slate_size
    use = req["explore"] if ope_rows(inp.sc) == "explore" else ~req["explore"]
    rows = torch.nonzero(use).squeeze(1)
    if len(rows) == 0:
        return None
    batch = logged_batch(req, rows, inp.world, inp.round)
    sel = torch.isin(imp["request_id"], batch.request_id)
    at = (torch.searchsorted(batch.request_id, imp["request_id"][sel]), imp["position"][sel])

    def grid(col: str, dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros(len(batch), s, dtype=dtype, device=batch.user_id.device)
        out[at] = imp[col][sel].to(dtype)
        return out

    intents = inp.truth_requests["intent"][torch.searchsorted(inp.truth_requests["request_id"], batch.request_id)]
    slate = grid("item_id", torch.int64)
    return (
        batch,
        slate,
        grid("clicked", torch.float64),
        grid("finished", torch.float64),
        grid("exposure_propensity", torch.float64),
        intents,
    )


def _candidate_slates(inp: OfflineInput, batch: RequestBatch, intents: torch.Tensor) -> torch.Tensor:
    """``[n, S]`` the slates the candidate policy would expose: its top-K_r, ranked by the ranker, top S in order."""
    inp.set_intents(batch.request_id, intents)
    ids, _ = inp.candidate.retrieve(batch, inp.sc.cascade.k_retrieve)
    order = inp.ranker.score(batch, ids).topk(inp.sc.cascade.slate_size, dim=1).indices
    return ids.gather(1, order)
