"""Environments an RL algorithm can learn, and that generalise across worlds: re-ranking and query retrieval.

Both observe normalised, observable features only (never item ids), so a policy learnt on one world
applies to another:

* request features ``[R]``: the user's noisy profile (scaled), the mean observable vector of the items in
  their history, the hour of the day and week as sines and cosines, one-hot domain and entry, the
  exploration flag;
* an item's observable vector ``[d]``: its three noisy modality vectors, concatenated and unit-normalised.

``cascadesim/Rerank-v0`` (:class:`RerankCore`): the ``K_r`` candidates are recalled by the platform's legacy
retriever (popularity-biased, seeded per batch); the observation adds, per candidate, its vector, its observed
popularity (``log1p`` clicks scaled by the catalogue's maximum, smoothed CTR x 10), its cosine with the history
vector and the platform ranker's score (z-scored within the request). The action is ``Box(-1, 1, (K_r,))``: a
score per candidate, and the slate is the top ``S`` of them, in that order (it replaces the platform ranker).

``cascadesim/Retrieval-v0`` (:class:`QueryCodec`): the action is a query ``Box(-1, 1, (d,))``; the recall is the
``K_r`` live items whose observable vectors score highest against it, so the action does not grow with the
catalogue; the platform ranker then ranks them and exposes the top ``S``, as in ``cascadesim run``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
from gymnasium import spaces

from simulator.cascade.legacy import LegacyRetriever
from simulator.cascade.protocols import ServingRanker
from simulator.cascade.step import serve_batch
from simulator.config import Scenario
from simulator.gym.core import CascadeCore
from simulator.gym.driver import GivenRecall, serve_given
from simulator.gym.env import CascadeEnv
from simulator.gym.registration import LEARN
from simulator.gym.spaces import Chunk, recall_width
from simulator.types import Catalogue

CLIP = 5.0  # every observation entry lies in [-CLIP, CLIP]
RERANK_FEATURES = 4  # per candidate, besides its vector: popularity, CTR, history cosine, ranker score


def item_vectors(catalogue: Catalogue) -> torch.Tensor:
    """``[M, d]`` unit vectors: the three observable modality vectors of each item, concatenated."""
    v = catalogue.modality.reshape(catalogue.modality.shape[0], -1)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)


class FeatureCodec:
    """Request features shared by both learnable environments (no ids, roughly unit scale)."""

    def __init__(self, sc: Scenario) -> None:
        self.sc, self.k, self.slate = sc, recall_width(sc), sc.cascade.slate_size
        self.d = 3 * sc.features.modality_dim
        self.request_dim = sc.features.profile_dim + self.d + 4 + 2 + 3 + 1

    def request_features(self, chunk: Chunk, vectors: torch.Tensor) -> torch.Tensor:
        """``[B, R]`` float32 features of the pending requests."""
        b = chunk.batch
        hist = b.history.clamp_min(0)
        mask = (b.history >= 0).unsqueeze(2).float()
        hist_vec = (vectors[hist] * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        day, week = 2 * torch.pi * b.hour / 24.0, 2 * torch.pi * b.hour / 168.0
        onehot = lambda v, k: torch.nn.functional.one_hot(v.long(), k).float()  # noqa: E731
        parts = [
            b.profile.float() / 2.0,
            hist_vec * 2.0,
            torch.stack([day.sin(), day.cos(), week.sin(), week.cos()], 1),
            onehot(b.domain, 2),
            onehot(b.entry, 3),
            chunk.explore.float().unsqueeze(1),
        ]
        return torch.cat(parts, 1).clamp(-CLIP, CLIP)

    @staticmethod
    def history_vectors(chunk: Chunk, vectors: torch.Tensor) -> torch.Tensor:
        hist = chunk.batch.history.clamp_min(0)
        mask = (chunk.batch.history >= 0).unsqueeze(2).float()
        v = (vectors[hist] * mask).sum(1)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-6)

    @staticmethod
    def lanes(values: torch.Tensor, lanes: int, dim: int) -> np.ndarray:
        out = np.zeros((lanes, dim), np.float32)
        out[: len(values)] = values.detach().cpu().numpy()
        return out


class QueryCodec(FeatureCodec):
    """``cascadesim/Retrieval-v0``: observe the request, act with a query vector scored against the live catalogue."""

    def __init__(self, sc: Scenario) -> None:
        super().__init__(sc)
        self.observation_space = spaces.Box(-CLIP, CLIP, (self.request_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.d,), np.float32)
        self.action, self.observation = "query", "features"

    def encode_features(self, chunk: Chunk | None, lanes: int, catalogue: Catalogue) -> np.ndarray:
        if chunk is None:
            return np.zeros((lanes, self.request_dim), np.float32)
        return self.lanes(self.request_features(chunk, item_vectors(catalogue)), lanes, self.request_dim)

    def recall(self, action: Any, n: int, catalogue: Catalogue) -> tuple[torch.Tensor, torch.Tensor]:
        """The top ``K_r`` live items by ``vector . query`` for each of the first ``n`` lanes: ``(ids, scores) [n, K_r]``."""
        q = torch.as_tensor(np.asarray(action, np.float32).reshape(-1, self.d)[:n], device=catalogue.live.device)
        if not torch.isfinite(q).all():
            raise ValueError("action: query entries must be finite")
        scores = (q @ item_vectors(catalogue).T).masked_fill(~catalogue.live, float("-inf"))
        top = scores.topk(self.k, dim=1)
        return top.indices, top.values


class RerankCodec(FeatureCodec):
    """``cascadesim/Rerank-v0``: observe the request and its recalled candidates, act with a score per candidate."""

    def __init__(self, sc: Scenario) -> None:
        super().__init__(sc)
        self.item_dim = self.d + RERANK_FEATURES
        self.obs_dim = self.request_dim + self.k * self.item_dim
        self.observation_space = spaces.Box(-CLIP, CLIP, (self.obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.k,), np.float32)
        self.action, self.observation = "rerank", "features"

    def candidate_features(self, chunk: Chunk, catalogue: Catalogue, ids: torch.Tensor, ranker_scores: torch.Tensor) -> torch.Tensor:
        """``[B, K_r, d + 4]``: vector, popularity, CTR, cosine with the history vector, the ranker's z-score."""
        vectors = item_vectors(catalogue)
        vec = vectors[ids]
        clicks = torch.log1p(catalogue.clicks)
        pop = (clicks / clicks.max().clamp_min(1e-6))[ids]
        ctr = ((catalogue.clicks + 1.0) / (catalogue.exposures + 10.0))[ids] * 10.0
        cos = (vec * self.history_vectors(chunk, vectors).unsqueeze(1)).sum(2)
        z = (ranker_scores - ranker_scores.mean(1, keepdim=True)) / ranker_scores.std(1, keepdim=True).clamp_min(1e-6)
        return torch.cat([vec * 2.0, torch.stack([pop, ctr, cos, z], 2)], 2).clamp(-CLIP, CLIP)


class GivenRanker:
    """The action's scores in the serving ranker's slot for one batch (other queries go to the platform ranker)."""

    def __init__(self, ranker: ServingRanker, request_id: torch.Tensor, item_ids: torch.Tensor, scores: torch.Tensor) -> None:
        self.ranker, self.version = ranker, getattr(ranker, "version", -1)
        self.request_id, self.item_ids, self.scores = request_id, item_ids, scores

    def score(self, requests: Any, item_ids: torch.Tensor) -> torch.Tensor:
        rows = torch.searchsorted(self.request_id, requests.request_id)
        if item_ids.shape[1] == self.item_ids.shape[1] and torch.equal(self.item_ids[rows], item_ids):
            return self.scores[rows]
        return self.ranker.score(requests, item_ids)

    def __getattr__(self, name: str) -> Any:
        if name == "ranker":
            raise AttributeError(name)
        return getattr(self.ranker, name)


class CodecCore(CascadeCore):
    """The cascade with an action / observation codec of its own (the learnable ids); ``codec_class(sc)`` builds it."""

    codec_class: Any

    def __init__(
        self,
        sc: Scenario,
        lanes: int,
        device: torch.device | str = "cpu",
        action: str = "",
        observation: str = "",
        reward: str = "clicks",
    ) -> None:
        super().__init__(sc, lanes, device, reward=reward)  # the action and observation are this environment's own
        self.codec = cast(Any, self.codec_class(sc))


class QueryCore(CodecCore):
    """The cascade with the recall chosen by a query vector (``cascadesim/Retrieval-v0``)."""

    codec_class = QueryCodec

    @property
    def query(self) -> QueryCodec:
        """The query codec (action -> recall, catalogue -> observation)."""
        return cast(QueryCodec, self.codec)

    def _serve(self, chunk: Chunk, action: Any) -> np.ndarray:
        assert self.loop is not None
        ids, scores = self.query.recall(action, len(chunk.batch), self.loop.log.catalogue[chunk.batch.round])
        serve_given(self.loop, chunk.batch, chunk.intents, ids, scores)
        return np.zeros(len(chunk.batch), np.int64)

    def _observe(self) -> Any:
        assert self.loop is not None
        return self.query.encode_features(self.chunk, self.lanes, self.loop.log.catalogue[max(self.loop.log.catalogue)])


class RerankCore(CodecCore):
    """The cascade with the slate chosen by per-candidate scores (``cascadesim/Rerank-v0``)."""

    codec_class = RerankCodec

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # recall ids, scores, ranker scores
        self._pending_for = -1

    @property
    def rerank(self) -> RerankCodec:
        """The rerank codec (scores -> slate, candidates -> observation)."""
        return cast(RerankCodec, self.codec)

    def reset(self, seed: int) -> tuple[Any, dict[str, Any]]:
        """A new episode: the cached candidates belong to the last world (request ids restart, so drop them)."""
        self.pending, self._pending_for = None, -1
        return super().reset(seed)

    def _candidates(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pending requests' recall (legacy retriever) and the platform ranker's scores of it, computed once."""
        assert self.loop is not None and self.chunk is not None
        first = int(self.chunk.batch.request_id[0])
        if self.pending is None or len(self.pending[0]) != len(self.chunk.batch) or self._pending_for != first:
            catalogue = self.loop.log.catalogue[self.chunk.batch.round]
            legacy = LegacyRetriever(self.loop.seed, self.sc.cascade.legacy_popularity_bias)
            legacy.index(catalogue)
            ids, scores = legacy.retrieve(self.chunk.batch, self.rerank.k)
            self.pending = (ids, scores, self.loop.serving_ranker.score(self.chunk.batch, ids))
            self._pending_for = first
        return self.pending

    def _serve(self, chunk: Chunk, action: Any) -> np.ndarray:
        assert self.loop is not None
        ids, rec_scores, _ = self._candidates()
        n = len(chunk.batch)
        given = torch.as_tensor(np.asarray(action, np.float32).reshape(-1, self.rerank.k)[:n], device=ids.device)
        if not torch.isfinite(given).all():
            raise ValueError("action: scores must be finite")
        ranker = self.loop.serving_ranker
        self.loop.serving_ranker = cast(ServingRanker, GivenRanker(ranker, chunk.batch.request_id, ids, given))
        server = self.loop.retriever
        self.loop.retriever = cast(Any, GivenRecall(chunk.batch.request_id, ids, rec_scores))
        try:
            serve_batch(self.loop, chunk.batch, chunk.intents)
        finally:
            self.loop.serving_ranker, self.loop.retriever = ranker, server
        return np.zeros(n, np.int64)

    def _observe(self) -> Any:
        assert self.loop is not None
        codec, lanes = self.rerank, self.lanes
        if self.chunk is None:
            return np.zeros((lanes, codec.obs_dim), np.float32)
        ids, _, ranker_scores = self._candidates()
        catalogue = self.loop.log.catalogue[self.chunk.batch.round]
        req = codec.request_features(self.chunk, item_vectors(catalogue))
        items = codec.candidate_features(self.chunk, catalogue, ids, ranker_scores).reshape(len(ids), -1)
        return codec.lanes(torch.cat([req, items], 1), lanes, codec.obs_dim)


class LearnableEnv(CascadeEnv):
    """A learnable environment: the :data:`~simulator.gym.registration.LEARN` world unless told otherwise."""

    def __init__(self, scenario: Scenario | str | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(LEARN if scenario is None else scenario, **kwargs)


class RetrievalEnv(LearnableEnv):
    """``cascadesim/Retrieval-v0``: one request per step; the action is a query vector (see the module docstring)."""

    core_class = QueryCore


class RerankEnv(LearnableEnv):
    """``cascadesim/Rerank-v0``: one request per step; the action is a score per recalled candidate (see the module docstring)."""

    core_class = RerankCore
