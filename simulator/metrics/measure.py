"""Per-round measurement of one closed loop: truth vs log, popularity, SSB.

Truth metrics run on a fixed panel of evaluation users, in blocks of
``metrics.block_size`` users against the whole live catalogue (never a users x
items matrix). The on-policy replay scores the serving model on the clicks its own
recall produced (~1 by construction for K >= K_r: kept only as the cautionary
baseline; the real offline protocols are in :mod:`simulator.metrics.offline`).
Exposure metrics read the round's log.
Definitions: :data:`simulator.metrics.definitions.METRICS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from simulator.config import Scenario
from simulator.metrics import formulas as F
from simulator.metrics.audit import Audit
from simulator.rng import torch_stream
from simulator.types import ENTRY_BROWSE, RequestBatch
from simulator.world.relevance import true_relevance, true_topk, true_topk_and_total
from simulator.world.state import WorldState


@dataclass
class MetricState:
    """What measurement carries across rounds (checkpointed with the loop)."""

    panel: torch.Tensor  # [P] evaluation user ids (fixed)
    is_panel: torch.Tensor  # [N] bool
    ever_keys: torch.Tensor  # sorted unique user * M + item of panel users' exposures so far
    start_clicks: torch.Tensor  # [M] observed clicks at the round's start (popularity)

    @classmethod
    def create(cls, world: WorldState, sc: Scenario, seed: int) -> MetricState:
        gen = torch_stream(seed, "panel")  # drawn on the CPU: the same panel on every device
        alive = world.user_alive.nonzero().squeeze(1)
        panel = alive[torch.randperm(len(alive), generator=gen).to(world.device)[: sc.metrics.panel_size]].sort().values
        is_panel = torch.zeros_like(world.user_alive)
        is_panel[panel] = True
        return cls(panel, is_panel, torch.empty(0, dtype=torch.int64, device=world.device), world.item_clicks.clone())

    def begin_round(self, world: WorldState) -> None:
        self.start_clicks = world.item_clicks.clone()


@dataclass(frozen=True)
class MetricInput:
    """The narrow view measurement needs: truth, the round's log and the serving models."""

    sc: Scenario
    seed: int
    round: int
    world: WorldState
    retriever: Any  # serving RetrievalAgent
    ranker: Any  # serving ranker
    set_intents: Any  # callable(request_ids, intents): tells privileged policies the eval intents
    requests: dict[str, torch.Tensor]
    impressions: dict[str, torch.Tensor]
    recalled_counts: torch.Tensor  # [M] times each item was recalled in the round (the candidates table, counted)
    truth_requests: dict[str, torch.Tensor]
    truth_impressions: dict[str, torch.Tensor]
    state: MetricState
    audit: Audit | None = None  # filled with what the truth metrics were computed from (--save-truth)


def measure_round(inp: MetricInput) -> dict[str, float]:
    """All metrics of one round, by name."""
    out = exposure_metrics(inp)
    out.update(truth_metrics(inp))
    out.update(onpolicy_replay_metrics(inp))
    out["preference_drift"] = preference_drift(inp.world)
    _update_ever_exposed(inp)
    return out


def measure_external(inp: MetricInput) -> dict[str, float]:
    """The metrics of a round whose recall came from outside (no model to query): exposure, popularity, drift."""
    return {**exposure_metrics(inp), "preference_drift": preference_drift(inp.world)}


def preference_drift(w: WorldState) -> float:
    """Mean cosine distance of the living users' preferences from where they started."""
    alive = w.user_alive
    return float((1 - torch.cosine_similarity(w.user_latent[alive], w.user_latent0[alive], dim=1)).mean())


# ----- exposure and popularity --------------------------------------------
def exposure_metrics(inp: MetricInput) -> dict[str, float]:
    w, imp, sc = inp.world, inp.impressions, inp.sc
    m = w.item_live.shape[0]
    counts = torch.bincount(imp["item_id"], minlength=m).float()
    live = w.item_live
    pop = inp.state.start_clicks
    recalled = inp.recalled_counts.float()
    return {
        "exposure_gini": F.gini(counts[live]),
        "exposure_top1_share": F.top_share(counts[live], 0.01),
        "aggregate_diversity": float((counts > 0).sum()),
        "coverage": F.coverage(counts[live]),
        "long_tail_coverage": F.long_tail_coverage(counts[live], pop[live], sc.metrics.long_tail_share),
        "novelty": F.novelty(imp["item_id"], pop),
        "mean_exposed_popularity": F.popularity_mean(imp["item_id"], pop),
        "ssb_divergence": F.js_divergence(counts, recalled),
        "homogenisation": _homogenisation(inp),
        "logged_ctr": float(imp["clicked"].float().mean()),
        "logged_finish_rate": float(imp["finished"].float().mean()),
        "true_exposed_relevance": float(inp.truth_impressions["relevance"].mean()),
        "true_attention_rate": float(inp.truth_impressions["examined"].float().mean()),
        "live_items": float(live.sum()),
        "active_users": float(w.user_alive.sum()),
        **_distribution_metrics(counts[live], pop[live]),
    }


N_SCORE_BINS = 20


def _distribution_metrics(counts: torch.Tensor, popularity: torch.Tensor) -> dict[str, float]:
    """Lorenz curve points and exposure share by popularity decile (for plots of concentration)."""
    _, lorenz = F.lorenz_curve(counts, n_points=11)
    out = {f"exposure_lorenz@{p / 10:.1f}": float(lorenz[p]) for p in range(1, 10)}
    order = torch.argsort(popularity, stable=True)  # least popular first, ties by item id
    decile = torch.empty_like(order)
    decile[order] = torch.arange(len(order), device=order.device) * 10 // max(len(order), 1)
    shares = torch.zeros(10, dtype=torch.float64, device=counts.device).index_add_(0, decile, counts.double())
    shares = shares / shares.sum().clamp_min(1e-12)
    out.update({f"exposure_share_decile@{d + 1}": float(shares[d]) for d in range(10)})
    return out


def _homogenisation(inp: MetricInput) -> float:
    users = inp.impressions["user_id"]
    active = torch.unique(users)
    gen = torch_stream(inp.seed, "homogenisation", inp.round, device=users.device)
    chosen = active[torch.randperm(len(active), generator=gen, device=users.device)[: inp.sc.metrics.homogenisation_users]].sort().values
    pos = torch.searchsorted(chosen, users).clamp(max=len(chosen) - 1)
    keep = chosen[pos] == users
    return F.mean_pairwise_jaccard(pos[keep], inp.impressions["item_id"][keep], len(chosen), inp.world.item_live.shape[0])


def _update_ever_exposed(inp: MetricInput) -> None:
    st, imp = inp.state, inp.impressions
    mine = st.is_panel[imp["user_id"]]
    keys = imp["user_id"][mine] * inp.world.item_live.shape[0] + imp["item_id"][mine]
    st.ever_keys = torch.unique(torch.cat([st.ever_keys, keys]))


def _is_ever_exposed(st: MetricState, users: torch.Tensor, items: torch.Tensor, m: int) -> torch.Tensor:
    keys = users.unsqueeze(1) * m + items
    if st.ever_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(st.ever_keys, keys).clamp(max=len(st.ever_keys) - 1)
    return st.ever_keys[pos] == keys


# ----- truth on the evaluation panel ----------------------------------------
def panel_requests(w: WorldState, users: torch.Tensor, round_idx: int, hour: float) -> RequestBatch:
    """Synthetic evaluation requests (negative ids, never logged) for ``users``."""
    b, dev = len(users), users.device
    zeros = torch.zeros(b, dtype=torch.int64, device=dev)
    return RequestBatch(
        request_id=-1 - users,
        user_id=users,
        domain=zeros,
        entry=zeros + ENTRY_BROWSE,
        hour=torch.full((b,), hour % 168.0, device=dev),
        profile=w.user_profile[users],
        history=w.user_history[users].clone(),
        round=round_idx,
        time=torch.full((b,), hour, dtype=torch.float64, device=dev),
        history_time=None if w.user_history_time is None else w.user_history_time[users].clone(),
    )


def truth_metrics(inp: MetricInput) -> dict[str, float]:
    sc, w = inp.sc, inp.world
    panel = inp.state.panel[w.user_alive[inp.state.panel]]
    gen = torch_stream(inp.seed, "eval-intent", inp.round, device=w.device)
    intents = torch.multinomial(w.user_intents[panel], 1, generator=gen).squeeze(1)
    sums: dict[str, torch.Tensor] = {}
    pos_scores, neg_scores = [], []
    hour = (inp.round + 1) * sc.timeline.round_hours
    for start in range(0, len(panel), sc.metrics.block_size):
        sl = slice(start, start + sc.metrics.block_size)
        block, pos, neg = _truth_block(inp, panel[sl], intents[sl], hour, gen)
        pos_scores.append(pos)
        neg_scores.append(neg)
        for k, v in block.items():
            sums[k] = sums.get(k, 0) + v
    n = sums.pop("n")
    out = {k: float(v / n) for k, v in sums.items()}
    out.update(_score_gap(torch.cat(pos_scores), torch.cat(neg_scores)))
    return out


def _score_gap(pos: torch.Tensor, neg: torch.Tensor) -> dict[str, float]:
    """Mean agent score on unexposed true positives vs negatives, and both histograms (DAMCAR Fig. 5)."""
    nan = float("nan")
    out = {
        "score_unexposed_true_pos": float(pos.mean()) if len(pos) else nan,
        "score_unexposed_true_neg": float(neg.mean()) if len(neg) else nan,
    }
    out["score_gap_unexposed"] = out["score_unexposed_true_pos"] - out["score_unexposed_true_neg"]
    both = torch.cat([pos, neg]).float()
    if len(both) == 0:
        return out
    lo, hi = float(both.min()), float(both.max())
    out["score_hist_lo"], out["score_hist_hi"] = lo, hi
    for name, scores in (("pos", pos), ("neg", neg)):
        hist = torch.histc(scores.float(), bins=N_SCORE_BINS, min=lo, max=hi if hi > lo else lo + 1e-6)
        hist = hist / hist.sum().clamp_min(1)
        out.update({f"score_hist_{name}@{b}": float(hist[b]) for b in range(N_SCORE_BINS)})
    return out


def _truth_block(
    inp: MetricInput, users: torch.Tensor, intents: torch.Tensor, hour: float, gen: torch.Generator
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Sums of the truth metrics over one block of panel users, and the block's unexposed pos / neg scores."""
    sc, w = inp.sc, inp.world
    s, kr, ks = sc.cascade.slate_size, sc.cascade.k_retrieve, sc.eval_ks
    kmax = max(*ks, kr)
    batch = panel_requests(w, users, inp.round, hour)
    inp.set_intents(batch.request_id, intents)
    ret_ids, _ = inp.retriever.retrieve(batch, kmax)
    top_ids, top_rel, total_rel = true_topk_and_total(w, sc, users, intents, kmax, sc.metrics.block_size)
    rel = true_relevance(w, sc, users, ret_ids, intents)
    out: dict[str, torch.Tensor] = {
        "n": torch.tensor(float(len(users))),
        **_retrieval_sums(ret_ids, rel, top_ids, top_rel, total_rel, ks, s),
    }
    oracle_utility = top_rel[:, :s].mean(1)
    # the same after the platform ranker: rank the recalled K_r, expose the top S
    cand = ret_ids[:, :kr]
    order = inp.ranker.score(batch, cand).topk(max(sc.rank_ks), dim=1).indices
    ranked, ranked_rel = cand.gather(1, order), rel[:, :kr].gather(1, order)
    slate, slate_rel = ranked[:, :s], ranked_rel[:, :s]
    if inp.audit is not None:
        inp.audit.add("panel", user_id=users, intent=intents, agent_top=ret_ids, agent_top_relevance=rel, true_top=top_ids,
                      true_top_relevance=top_rel, total_relevance=total_rel, ranker_order=ranked)  # fmt: skip
    out["slate_utility"] = slate_rel.mean(1).sum()
    out["slate_regret"] = (oracle_utility - slate_rel.mean(1)).sum()
    out[f"ranked_true_recall@{s}"] = (_unique_hits(slate, top_ids[:, :s]) / s).sum()
    out.update(_ranked_metrics(ranked, ranked_rel, top_ids, top_rel, list(sc.rank_ks)))
    pos, neg = _gap_block(inp, batch, top_ids, gen)
    mix_top, _ = true_topk(w, sc, users, None, s, sc.metrics.block_size)
    out["true_top_ever_exposed"] = _is_ever_exposed(inp.state, users, mix_top, w.item_live.shape[0]).float().mean(1).sum()
    return out, pos, neg


def _retrieval_sums(ret_ids: torch.Tensor, rel: torch.Tensor, top_ids: torch.Tensor, top_rel: torch.Tensor, total_rel: torch.Tensor,
                    ks: tuple[int, ...], s: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """Sums over a block of the agent's top-K against the truth: recall, NDCG, the unbiased metrics, the top-S's utility."""
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        out[f"true_recall@{k}"] = (_unique_hits(ret_ids[:, :k], top_ids[:, :k]) / k).sum()
        out[f"true_ndcg@{k}"] = F.ndcg(rel[:, :k], top_rel[:, :k]).sum()
        recall, precision, hit = F.expected_retrieval_metrics(rel[:, :k], total_rel)
        out[f"unbiased_recall@{k}"], out[f"unbiased_precision@{k}"], out[f"unbiased_hitrate@{k}"] = recall.sum(), precision.sum(), hit.sum()
    out["retrieval_slate_utility"] = rel[:, :s].mean(1).sum()
    out["retrieval_slate_regret"] = (top_rel[:, :s].mean(1) - rel[:, :s].mean(1)).sum()
    return out


def _unique_hits(retrieved: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """``[B] float64`` how many of each row's ``relevant`` ids (distinct: a true top-K) are in ``retrieved``.

    :func:`F.hits_at_k` for rows without duplicates or padding, by sort + search instead of a ``[B, K, T]`` test.
    """
    ret_sorted = retrieved.sort(dim=1).values
    rel = relevant.contiguous()
    pos = torch.searchsorted(ret_sorted, rel).clamp(max=ret_sorted.shape[1] - 1)
    return (ret_sorted.gather(1, pos) == rel).sum(dim=1).to(torch.float64)


def _ranked_metrics(
    ranked: torch.Tensor, ranked_rel: torch.Tensor, top_ids: torch.Tensor, top_rel: torch.Tensor, ns: list[int]
) -> dict[str, torch.Tensor]:
    """Sums over a block of DAMCAR's after-the-ranker metrics, against the truth: the ranker orders the
    agent's recalled set; NDCG@N grades by true relevance, MAP@N and HR@N count hits on the true top-N."""
    out: dict[str, torch.Tensor] = {}
    for n in ns:
        top_sorted = top_ids[:, :n].sort(dim=1).values
        pos = torch.searchsorted(top_sorted, ranked[:, :n].contiguous()).clamp(max=n - 1)
        hits = top_sorted.gather(1, pos) == ranked[:, :n]  # [B, N] in the ranker's order
        out[f"ranked_true_ndcg@{n}"] = F.ndcg(ranked_rel[:, :n], top_rel[:, :n]).sum()
        out[f"ranked_true_map@{n}"] = F.average_precision(hits, torch.full((len(ranked),), n, device=ranked.device)).sum()
        out[f"ranked_true_hr@{n}"] = hits.any(1).to(torch.float64).sum()
    return out


def _gap_block(inp: MetricInput, batch: RequestBatch, top_ids: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Agent scores of unexposed true positives (true top-K_r) vs unexposed true negatives (outside the true top-Kmax)."""
    w, sc = inp.world, inp.sc
    m = w.item_live.shape[0]
    users = batch.user_id
    pos = top_ids[:, : sc.cascade.k_retrieve]
    live = w.item_live.nonzero().squeeze(1)
    neg = live[torch.randint(len(live), (len(users), sc.metrics.gap_negatives), generator=gen, device=w.device)]
    top_sorted = top_ids.sort(dim=1).values
    in_top = torch.gather(top_sorted, 1, torch.searchsorted(top_sorted, neg).clamp(max=top_ids.shape[1] - 1)) == neg
    pos_ok = ~_is_ever_exposed(inp.state, users, pos, m)
    neg_ok = ~in_top & ~_is_ever_exposed(inp.state, users, neg, m)
    return inp.retriever.score(batch, pos)[pos_ok], inp.retriever.score(batch, neg)[neg_ok]


# ----- on-policy replay: the serving model on the clicks its own recall produced -----------
def onpolicy_replay_metrics(inp: MetricInput) -> dict[str, float]:
    sc, imp, req = inp.sc, inp.impressions, inp.requests
    clicked_req = torch.unique(imp["request_id"][imp["clicked"]])
    gen = torch_stream(inp.seed, "logged-eval", inp.round, device=clicked_req.device)
    chosen = clicked_req[torch.randperm(len(clicked_req), generator=gen, device=clicked_req.device)[: sc.metrics.panel_size]].sort().values
    out: dict[str, float] = {}
    if len(chosen) == 0:
        return {f"onpolicy_replay_{m}@{k}": float("nan") for k in sc.eval_ks for m in ("recall", "precision", "f1", "hitrate")}
    rows = torch.searchsorted(req["request_id"], chosen)
    batch = RequestBatch(
        request_id=chosen,
        user_id=req["user_id"][rows],
        domain=req["domain"][rows],
        entry=req["entry"][rows],
        hour=(req["time"][rows] % 168.0).float(),
        profile=inp.world.user_profile[req["user_id"][rows]],
        history=req["history"][rows],
        round=inp.round,
        time=req["time"][rows],
        history_time=req["history_time"][rows] if "history_time" in req else None,
    )
    t_rows = torch.searchsorted(inp.truth_requests["request_id"], chosen)
    inp.set_intents(chosen, inp.truth_requests["intent"][t_rows])
    relevant, mask = _clicked_items(imp, chosen, sc.cascade.slate_size)
    n_rel = mask.sum(1).float()
    ret_ids = torch.cat(
        [
            inp.retriever.retrieve(batch.select(torch.arange(i, min(i + sc.metrics.block_size, len(chosen)))), max(sc.eval_ks))[0]
            for i in range(0, len(chosen), sc.metrics.block_size)
        ]
    )
    for k in sc.eval_ks:
        hits = F.hits_at_k(ret_ids[:, :k], relevant, mask)
        p, r, f1 = F.precision_recall_f1(hits, n_rel, k)
        prefix = "onpolicy_replay"
        out.update(
            {f"{prefix}_recall@{k}": r, f"{prefix}_precision@{k}": p, f"{prefix}_f1@{k}": f1, f"{prefix}_hitrate@{k}": F.hit_rate(hits)}
        )
    return out


def _clicked_items(imp: dict[str, torch.Tensor], chosen: torch.Tensor, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, S]`` clicked items of each chosen request (-1 padded) and their mask."""
    sel = imp["clicked"] & torch.isin(imp["request_id"], chosen)
    rows = torch.searchsorted(chosen, imp["request_id"][sel])
    items = torch.full((len(chosen), s), -1, dtype=torch.int64, device=chosen.device)
    items[rows, imp["position"][sel]] = imp["item_id"][sel]
    return items, items >= 0
