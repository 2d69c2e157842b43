"""``cascadesim bench``: the serving loop next to a plain NumPy floor, in one process.

The workload is one batch of requests through the cascade with fixed
retrieval embeddings: exact top-K_r retrieval over the whole catalogue,
ranking of the K_r candidates, top-S exposure, the user model, logging of
requests / candidates / impressions / sessions / truth, and the world's
counters and histories. Ours runs :func:`~simulator.cascade.step.serve_batch` (torch) with
the noisy-oracle ranker, whose arithmetic the floor can repeat exactly:

* floor: ``scores = Q @ E.T`` per block + ``argpartition`` + sort, ranking by
  ``sigmoid(a <q, phi> + quality + b) + noise`` on the candidates,
  ``argpartition`` top-S, examination / click / finish draws, ``bincount``
  counters, a history append per request, and the same columns copied into
  log arrays.

The figure of merit is ``floor_seconds / ours_seconds`` (1.0 = as fast as the
floor; the target is >= 0.5). Timings are medians over repetitions.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from simulator.cascade.step import serve_batch
from simulator.config import Scenario, scenario_from_dict
from simulator.loop import ClosedLoop
from simulator.rng import numpy_stream, torch_stream
from simulator.round import start_round
from simulator.types import Catalogue, RequestBatch
from simulator.world.traffic import sample_requests


class FixedEmbeddingRetriever:
    """A retriever with fixed random embeddings (dot product, exact blocked top-k)."""

    name = "fixed"

    def __init__(self, n_users: int, n_items: int, dim: int, seed: int, device: torch.device) -> None:
        gen = torch_stream(seed, "bench-embeddings", device=device)
        self.users = torch.randn(n_users, dim, generator=gen, device=device)
        self.items = torch.randn(n_items, dim, generator=gen, device=device)
        self.live = torch.arange(n_items, device=device)
        self.block = 2048

    def fit(self, view: Any) -> dict[str, float]:
        return {}

    def index(self, catalogue: Catalogue) -> None:
        self.live = catalogue.live_ids()
        self.live_items = self.items[self.live]

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.users[requests.user_id]
        ids, vals = [], []
        for start in range(0, len(q), self.block):
            top = (q[start : start + self.block] @ self.live_items.T).topk(k, dim=1)
            ids.append(self.live[top.indices])
            vals.append(top.values)
        return torch.cat(ids), torch.cat(vals)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bkd->bk", self.users[requests.user_id], self.items[item_ids])

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def bench_scenario(users: int, items: int, requests: int) -> Scenario:
    return scenario_from_dict(
        {
            "name": "bench",
            "world": {"n_users": users, "n_items": items, "n_creators": min(items, 1000)},
            "cascade": {"ranker": "noisy-oracle", "k_retrieve": 100, "slate_size": 10},
            "metrics": {"panel_size": min(users, 100)},
            "dynamics": {"new_items_per_round": 0},
            "timeline": {"requests_per_round": requests, "rounds": 1},
        }
    )


def _ours(loop: ClosedLoop, batch: RequestBatch, intents: torch.Tensor) -> float:
    start = time.perf_counter()
    serve_batch(loop, batch, intents)
    if loop.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class NumpyFloor:
    """The same batch arithmetic in plain NumPy (the reference floor)."""

    def __init__(self, loop: ClosedLoop, retriever: FixedEmbeddingRetriever) -> None:
        w, sc = loop.world, loop.sc
        cpu = lambda t: t.detach().cpu().numpy()  # noqa: E731
        self.user_emb, self.item_emb = cpu(retriever.users), cpu(retriever.items)
        self.latent, self.quality, self.protos = cpu(w.item_latent), cpu(w.item_quality), cpu(w.prototypes)
        self.user_latent, self.attention = cpu(w.user_latent), cpu(w.user_attention)
        self.history = cpu(w.user_history).copy()
        self.clicks, self.exposures = cpu(w.item_clicks).copy(), cpu(w.item_exposures).copy()
        self.sc, self.k, self.s = sc, sc.cascade.k_retrieve, sc.cascade.slate_size
        self.curve = (1.0 + np.arange(self.s)) ** -sc.user_model.position_bias
        self.rng = numpy_stream(loop.seed, "bench-floor")
        self.log: list[dict[str, np.ndarray]] = []

    def serve(self, users: np.ndarray, intents: np.ndarray) -> float:
        start = time.perf_counter()
        k, s, sc = self.k, self.s, self.sc
        q = self.user_emb[users]
        cand = np.empty((len(users), k), dtype=np.int64)
        cand_scores = np.empty((len(users), k), dtype=np.float32)
        for a in range(0, len(users), 2048):  # 1. retrieval: block matmul + top-k
            sc_block = q[a : a + 2048] @ self.item_emb.T
            part = np.argpartition(-sc_block, k, axis=1)[:, :k]
            vals = np.take_along_axis(sc_block, part, 1)
            order = np.argsort(-vals, axis=1)
            cand[a : a + 2048], cand_scores[a : a + 2048] = np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1)
        query = sc.world.relevance_scale * (self.user_latent[users] + sc.world.intent_weight * self.protos[intents])
        logit = np.einsum("bd,bkd->bk", query, self.latent[cand]) + self.quality[cand] + sc.world.relevance_bias
        rel = 1.0 / (1.0 + np.exp(-logit))  # 2. ranking: true relevance + fixed noise
        rank = np.clip(rel + sc.cascade.ranker_noise * self.rng.standard_normal(rel.shape), 1e-4, 1 - 1e-4)
        slot = np.argpartition(-rank, s, axis=1)[:, :s]  # 3. exposure: top-S
        slot = np.take_along_axis(slot, np.argsort(-np.take_along_axis(rank, slot, 1), axis=1), 1)
        slate, slate_rel = np.take_along_axis(cand, slot, 1), np.take_along_axis(rel, slot, 1)
        u = self.rng.random((len(users), s, 4))  # 4. user model
        examined = u[..., 0] < np.minimum(1.0, self.curve * self.attention[users][:, None])
        clicked = examined & (u[..., 1] < slate_rel)
        finished = clicked & (u[..., 2] < slate_rel)
        self.exposures += np.bincount(slate.ravel(), minlength=len(self.exposures))  # 5. counters + history
        self.clicks += np.bincount(slate[clicked], minlength=len(self.clicks))
        last_click = np.where(clicked.any(1), slate[np.arange(len(users)), clicked.argmax(1)], -1)
        has = last_click >= 0
        self.history[users[has]] = np.concatenate([self.history[users[has], 1:], last_click[has, None]], axis=1)
        self.log.append({  # 6. logging
            "cand_item": cand.ravel().copy(), "cand_score": cand_scores.ravel().copy(), "cand_rank": rank.ravel().copy(),
            "imp_item": slate.ravel().copy(), "clicked": clicked.ravel().copy(), "finished": finished.ravel().copy(),
            "relevance": slate_rel.ravel().copy(), "examined": examined.ravel().copy(), "users": users.copy(),
        })  # fmt: skip
        return time.perf_counter() - start


def run_bench(users: int = 10_000, items: int = 10_000, requests: int = 10_000, repeats: int = 5, device: str = "cpu") -> pd.DataFrame:
    """Median seconds per batch for ours and the NumPy floor, and their ratio."""
    sc = bench_scenario(users, items, requests)
    dev = torch.device(device)
    loop = ClosedLoop(sc, seed=0, device=dev)
    retriever = FixedEmbeddingRetriever(sc.user_capacity, sc.item_capacity, sc.training.embedding_dim, 0, dev)
    loop.retriever = retriever
    start_round(loop, 0)
    floor = NumpyFloor(loop, retriever)
    ours_t, floor_t = [], []
    for rep in range(repeats + 1):  # the first repetition warms caches and is dropped
        batch, intents = sample_requests(loop.world, sc, 0, 0, rep, 0.0, loop.next_request_id, requests)
        loop.next_request_id += requests
        o = _ours(loop, batch, intents)
        f = floor.serve(batch.user_id.cpu().numpy(), intents.cpu().numpy())
        if rep:
            ours_t.append(o)
            floor_t.append(f)
    ours, fl = statistics.median(ours_t), statistics.median(floor_t)
    return pd.DataFrame(
        {
            "workload": [
                f"{requests} requests, {users} users x {items} items, K_r={sc.cascade.k_retrieve}, S={sc.cascade.slate_size}, {device}"
            ],
            "ours_s": [round(ours, 4)],
            "numpy_floor_s": [round(fl, 4)],
            "speed_vs_floor": [round(fl / ours, 3)],
            "threads": [torch.get_num_threads()],
        }
    ).T.rename(columns={0: "value"})
