"""NumPy floors of a round's phases: the same arithmetic on the same sizes, float32, one process.

Each floor is what the phase must compute at least, written plainly in NumPy:

* serve.sample: the users of ``B`` requests by activity weight, intents and times;
* serve.retrieve: ``B x d @ d x M`` in blocks of 2048 + ``argpartition`` top-``K_r`` + sort;
* serve.rank: a DeepFM forward on ``B x K_r`` pairs (14 field gathers, FM term, MLP ``F*D -> 128 -> 64 -> 1``);
* serve.expose: ``argpartition`` top-``S`` of ``[B, K_r]`` + sort; serve.respond: true relevance of the
  slates, four uniform draws per slot, counters by ``bincount``, history shift; serve.log: the candidate
  and impression columns copied into preallocated arrays;
* truth metrics: true relevance of ``P`` panel users x ``M`` items + top-``K`` (largest K), the serving
  retriever's top-``K`` of the same users, and the ranker's DeepFM forward on their ``P x K_r`` recalled pairs;
* offline evaluation: the candidate's top-``K_r`` on the round's ``B`` requests + the truth metrics' floor;
* dynamics: four passes over the user latents and the item arrays; deploy: re-indexing ``M`` item embeddings;
* ranker fit: 3 x the DeepFM forward (forward + backward) on the window's impressions, per epoch;
* agent fit: 3 x the agent's linear layers (rows x in x out) on the window's exposures, per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from simulator.config import Scenario

F32 = np.float32


def _best(fn: Callable[[], Any], reps: int = 2) -> float:
    """Fastest of ``reps`` timed calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
    return np.take_along_axis(part, order, 1)


def retrieve(rng: np.random.Generator, b: int, m: int, d: int, k: int) -> Callable[[], np.ndarray]:
    q, e = rng.standard_normal((b, d), dtype=F32), rng.standard_normal((m, d), dtype=F32)
    return lambda: np.concatenate([_topk_rows(q[a : a + 2048] @ e.T, k) for a in range(0, b, 2048)])


def deepfm(rng: np.random.Generator, b: int, k: int, m: int, sc: Scenario) -> Callable[[], np.ndarray]:
    """A DeepFM forward on ``b x k`` pairs (``k`` items per request), blocks of 65536 pairs like the ranker."""
    d, dm, dp, hl, f = sc.cascade.ranker_dim, sc.features.modality_dim, sc.features.profile_dim, sc.features.history_len, 14
    table = rng.standard_normal((m, d), dtype=F32) * F32(0.05)
    ids = rng.integers(0, m, (b, k, 7))
    hist = rng.integers(0, m, (b, hl))
    modality, pop, profile = rng.random((b, k, 3 * dm), dtype=F32), rng.random((b, k, 3), dtype=F32), rng.random((b, dp), dtype=F32)
    w_mod, w_pop, w_prof = (rng.standard_normal(s, dtype=F32) for s in ((3 * dm, d), (3, d), (dp, d)))
    w1, w2, w3 = (rng.standard_normal(s, dtype=F32) * F32(0.05) for s in ((f * d, 128), (128, 64), (64, 1)))
    first = rng.standard_normal((f, d), dtype=F32)
    step = max(1, 65536 // k)

    def block(rows: slice) -> np.ndarray:
        n = ids[rows].shape[0]
        req = np.stack([table[ids[rows, 0, 0]], table[ids[rows, 0, 1]], table[ids[rows, 0, 2]],
                        profile[rows] @ w_prof, table[hist[rows]].mean(1)], 1)
        item = np.concatenate([table[ids[rows]], (modality[rows] @ w_mod)[:, :, None], (pop[rows] @ w_pop)[:, :, None]], 2)
        e = np.concatenate([np.broadcast_to(req[:, None], (n, k, 5, d)), item], 2)
        s = e.sum(2)
        fm = 0.5 * (s * s - (e * e).sum(2)).sum(-1)
        h = np.maximum(e.reshape(n * k, f * d) @ w1, 0)  # 2-D matmuls: NumPy's batched 3-D matmul is far slower
        logit = (np.maximum(h @ w2, 0) @ w3).reshape(n, k) + fm + (e * first).sum((2, 3))
        return 1 / (1 + np.exp(-np.clip(logit, -30, 30)))

    return lambda: [block(slice(a, a + step)) for a in range(0, b, step)]


def serve_small(rng: np.random.Generator, n: int, m: int, b: int, k: int, s: int, sc: Scenario) -> dict[str, Callable[[], Any]]:
    """Floors of sampling, exposure, the user's response and logging."""
    weights = rng.random(n)
    weights /= weights.sum()
    scores = rng.random((b, k), dtype=F32)
    dl = sc.world.d_true
    user_lat, item_lat, quality = rng.standard_normal((n, dl), dtype=F32), rng.standard_normal((m, dl), dtype=F32), rng.random(m, dtype=F32)
    users, slate = rng.integers(0, n, b), rng.integers(0, m, (b, s))
    history = np.full((n, sc.features.history_len), -1)
    cand_cols = [np.empty(b * k, dtype=t) for t in (np.int64, np.int64, F32, F32, np.int16)]
    imp_cols = [np.empty(b * s, dtype=t) for t in (np.int64, np.int64, np.int64, F32, F32, F32, F32, bool, bool, bool, np.int16)]

    def respond() -> None:
        rel = 1 / (1 + np.exp(-(np.einsum("bd,bsd->bs", user_lat[users], item_lat[slate]) + quality[slate])))
        u = rng.random((b, s, 4), dtype=F32)
        clicked = (u[..., 0] < 0.5) & (u[..., 1] < rel)
        np.bincount(slate.ravel(), minlength=m), np.bincount(slate[clicked], minlength=m)
        last = slate[np.arange(b), clicked.argmax(1)]
        history[users] = np.concatenate([history[users, 1:], last[:, None]], 1)

    def log() -> None:
        for col in cand_cols:
            col[:] = scores.ravel()
        for col in imp_cols:
            col[:] = slate.ravel()

    return {
        "serve.sample": lambda: (rng.choice(n, b, p=weights), rng.integers(0, 4, b), rng.random(b)),
        "serve.expose": lambda: _topk_rows(scores, s),
        "serve.respond": respond, "serve.log": log,
    }


def linear_passes(module: torch.nn.Module, rows: int) -> Callable[[], None]:
    """Every ``nn.Linear`` of ``module`` as a NumPy matmul over ``rows`` rows."""
    shapes = [(mod.in_features, mod.out_features) for mod in module.modules() if isinstance(mod, torch.nn.Linear)]
    rng = np.random.default_rng(0)
    mats = [(rng.random((rows, i), dtype=F32), rng.random((i, o), dtype=F32)) for i, o in shapes]
    return lambda: [x @ w for x, w in mats]


def phase_floors(loop: Any, sc: Scenario) -> dict[str, float]:
    """Seconds of each phase's NumPy floor for ``loop``'s sizes (one round)."""
    rng = np.random.default_rng(0)
    n, m, b = sc.world.n_users, sc.world.n_items, sc.timeline.requests_per_round
    k, s, d, p = sc.cascade.k_retrieve, sc.cascade.slate_size, sc.training.embedding_dim, min(sc.metrics.panel_size, n)
    kmax = max(sc.eval_ks)
    out = {name: _best(fn) for name, fn in serve_small(rng, n, m, b, k, s, sc).items()}
    out["serve.retrieve"] = _best(retrieve(rng, b, m, d, k))
    out["serve.rank"] = _best(deepfm(rng, b, k, m, sc))
    truth = _best(retrieve(rng, p, m, sc.world.d_true, min(kmax, m))) + _best(retrieve(rng, p, m, d, min(kmax, m)))
    out["truth metrics"] = truth + _best(deepfm(rng, p, k, m, sc), reps=1)  # + the ranker on the panel's recalled K_r
    out["offline evaluation"] = out["serve.retrieve"] + truth
    lat, items = rng.standard_normal((n, sc.world.d_true), dtype=F32), rng.random((m, 8), dtype=F32)
    out["dynamics"] = _best(lambda: [lat * F32(0.95) + lat for _ in range(4)] + [items * 2 for _ in range(4)])
    emb = rng.standard_normal((m, d), dtype=F32)
    out["deploy"] = _best(lambda: emb / np.linalg.norm(emb, axis=1, keepdims=True))
    impressions = b * s * sc.training.window_rounds
    out["ranker fit"] = 3 * sc.cascade.ranker_epochs * _best(deepfm(rng, impressions, 1, m, sc), reps=1)
    model = getattr(loop.learner, "core", None)
    model = getattr(model, "model", None) if model is not None else None
    out["agent fit"] = 3 * sc.training.epochs * _best(linear_passes(model, impressions), reps=1) if model is not None else 0.0
    return out
