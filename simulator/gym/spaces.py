"""Observation and action spaces of the cascade environments, and the conversions to and from tensors.

Observation (``observation="dict"``, one request; the vector env stacks ``N`` lanes):

* ``request_id`` ``Box(-1, 2**62, (1,), int64)``: -1 marks an idle lane (see :mod:`simulator.gym.vector`);
* ``user_id`` ``Discrete(N_users)``, ``domain`` ``Discrete(2)``, ``entry`` ``Discrete(3)``;
* ``round`` ``Box(int64, (1,))``, ``time`` (absolute hours, float64, ``(1,)``), ``hour`` (hour of the week, float32, ``(1,)``);
* ``profile`` ``Box(float32, (D_p,))``: the user's noisy profile;
* ``history`` ``Box(-1, M - 1, (L,), int64)``: the user's last clicked items, newest last, -1 padded;
* ``history_age`` ``Box(-1, T, (L,), float64)``: hours from each of those clicks to the request, -1 padded
  (what sequence encoders bucket; ``time - history_age`` is the click's absolute time);
* ``explore`` ``Discrete(2)``: the platform serves this request by uniform exploration (the action is ignored).

Everything in it is what the platform observes (the fields of :class:`~simulator.types.RequestBatch`);
the user's intent, relevance and attention never appear. ``observation="flat"`` gives one float32 vector
for MLP policies: profile (clipped to [-10, 10]), the history as a bag over the item ids, the hour of the
day and week as sines and cosines, one-hot domain and entry, the exploration and active flags, and the
catalogue's observed popularity (``log1p(clicks)`` scaled to [0, 1]).

Action (``action=...``), always over the item-id space of size ``M`` (the item capacity, fixed for a run):

* ``"ids"`` ``MultiDiscrete([M] * K)``: the recalled item ids, best first (the default). Every library knows
  this space and a real retriever's output is exactly this list; retrieval scores are implied by rank
  (``-log(1 + rank)``).
* ``"ids+scores"`` ``Dict(item_ids=MultiDiscrete, scores=Box(float32))``: ids and the model's scores; the
  scores are logged and drive stochastic recall (Gumbel-top-k). The agent adapter uses this.
* ``"scores"`` ``Box(-1, 1, (M,))``: a score per item; the recall is the top-``K`` live items (small catalogues).
* ``"discrete"`` ``Discrete(M)``: the item to recall first; the rest of the recall is topped up with popular items.

``K`` is ``cascade.k_retrieve``, or the pool ``ceil(candidate_pool * k_retrieve)`` that stochastic recall
samples from. Any action in the space is valid: ids that are out of range, not live or repeated in a row
are dropped, the rest keep their order, and the list is topped up with the most popular live items not in
it (``info["repaired"]`` counts them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from simulator.config import Scenario
from simulator.types import Catalogue, RequestBatch

ACTIONS = ("ids", "ids+scores", "scores", "discrete")
OBSERVATIONS = ("dict", "flat")
F32_MAX = float(np.finfo(np.float32).max)
VECTOR1 = ("request_id", "round", "time", "hour")  # one number each, as shape (1,) boxes
FLAT_CLIP = 10.0


@dataclass(frozen=True)
class Chunk:
    """The requests one step serves (``B <= lanes``), their true intents (truth, never observed) and exploration flags."""

    batch: RequestBatch
    intents: torch.Tensor
    explore: torch.Tensor


def recall_width(sc: Scenario) -> int:
    """Candidates an action carries: ``k_retrieve``, or the stochastic-recall pool."""
    cfg = sc.cascade
    k = math.ceil(cfg.candidate_pool * cfg.k_retrieve) if cfg.stochastic else cfg.k_retrieve
    return min(k, sc.item_capacity)


class Codec:
    """Spaces of one environment configuration and the tensor <-> numpy conversions.

    Args:
        sc: the scenario (fixes the id capacities and feature sizes).
        action: one of :data:`ACTIONS`.
        observation: one of :data:`OBSERVATIONS`.
    """

    def __init__(self, sc: Scenario, action: str = "ids", observation: str = "dict") -> None:
        if action not in ACTIONS:
            raise ValueError(f"action: must be one of {', '.join(ACTIONS)}, got {action!r}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation: must be one of {', '.join(OBSERVATIONS)}, got {observation!r}")
        self.sc, self.action, self.observation = sc, action, observation
        self.n_users, self.n_items = sc.user_capacity, sc.item_capacity
        self.k = recall_width(sc)
        self.profile_dim, self.history_len = sc.features.profile_dim, sc.features.history_len
        self.observation_space = self._observation_space()
        self.action_space = self._action_space()

    # ----- spaces ------------------------------------------------------------
    def _observation_space(self) -> spaces.Space[Any]:
        if self.observation == "flat":
            return spaces.Box(-FLAT_CLIP, FLAT_CLIP, (self.flat_dim,), np.float32)
        tl = self.sc.timeline
        return spaces.Dict(
            {
                "request_id": spaces.Box(-1, 2**62, (1,), np.int64),
                "user_id": spaces.Discrete(self.n_users),
                "domain": spaces.Discrete(2),
                "entry": spaces.Discrete(3),
                "round": spaces.Box(0, tl.rounds - 1, (1,), np.int64),
                "time": spaces.Box(0.0, tl.rounds * tl.round_hours, (1,), np.float64),
                "hour": spaces.Box(0.0, 168.0, (1,), np.float32),
                "profile": spaces.Box(-F32_MAX, F32_MAX, (self.profile_dim,), np.float32),
                "history": spaces.Box(-1, self.n_items - 1, (self.history_len,), np.int64),
                "history_age": spaces.Box(-1.0, self.sc.total_rounds * tl.round_hours, (self.history_len,), np.float64),
                "explore": spaces.Discrete(2),
            }
        )

    @property
    def flat_dim(self) -> int:
        return self.profile_dim + 2 * self.n_items + 4 + 2 + 3 + 2

    def _action_space(self) -> spaces.Space[Any]:
        ids = spaces.MultiDiscrete(np.full(self.k, self.n_items, dtype=np.int64))
        if self.action == "ids":
            return ids
        if self.action == "ids+scores":
            return spaces.Dict({"item_ids": ids, "scores": spaces.Box(-F32_MAX, F32_MAX, (self.k,), np.float32)})
        if self.action == "scores":
            return spaces.Box(-1.0, 1.0, (self.n_items,), np.float32)
        return spaces.Discrete(self.n_items)

    # ----- observations ------------------------------------------------------
    def encode(self, chunk: Chunk | None, lanes: int, round_idx: int, catalogue: Catalogue) -> dict[str, np.ndarray] | np.ndarray:
        """``lanes`` stacked observations; lanes past the chunk's requests are idle (request_id -1)."""
        cols = self._columns(chunk, lanes, round_idx)
        if self.observation == "flat":
            return self._flatten(cols, catalogue)
        return {k: (v[:, None] if k in VECTOR1 else v) for k, v in cols.items()}  # no 0-d entries (SB3, MultiInputPolicy)

    def _columns(self, chunk: Chunk | None, lanes: int, round_idx: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {
            "request_id": np.full(lanes, -1, np.int64),
            "user_id": np.zeros(lanes, np.int64),
            "domain": np.zeros(lanes, np.int64),
            "entry": np.zeros(lanes, np.int64),
            "round": np.full(lanes, round_idx, np.int64),
            "time": np.zeros(lanes, np.float64),
            "hour": np.zeros(lanes, np.float32),
            "profile": np.zeros((lanes, self.profile_dim), np.float32),
            "history": np.full((lanes, self.history_len), -1, np.int64),
            "explore": np.zeros(lanes, np.int64),
            "history_age": np.full((lanes, self.history_len), -1.0, np.float64),
        }
        if chunk is None:
            return out
        b, n = chunk.batch, len(chunk.batch)
        values = {
            "request_id": b.request_id,
            "user_id": b.user_id,
            "domain": b.domain,
            "entry": b.entry,
            "time": b.absolute_time(),
            "hour": b.hour,
            "profile": b.profile,
            "history": b.history,
            "explore": chunk.explore,
        }
        for key, tensor in values.items():
            out[key][:n] = tensor.detach().cpu().numpy()
        if b.history_time is not None:
            age = (b.absolute_time().unsqueeze(1) - b.history_time).clamp_min(0.0)  # NaN (padding) stays NaN
            out["history_age"][:n] = torch.nan_to_num(age, nan=-1.0).detach().cpu().numpy()
        return out

    def _flatten(self, cols: dict[str, np.ndarray], catalogue: Catalogue) -> np.ndarray:
        lanes, m = len(cols["request_id"]), self.n_items
        hist = cols["history"]
        bag = np.zeros((lanes, m), np.float32)
        rows = np.repeat(np.arange(lanes), hist.shape[1])
        flat = hist.reshape(-1)
        np.add.at(bag, (rows[flat >= 0], flat[flat >= 0]), 1.0 / self.history_len)
        clicks = np.log1p(catalogue.clicks.detach().cpu().numpy().astype(np.float32))
        pop = np.broadcast_to(clicks / max(float(clicks.max()), 1e-6), (lanes, m))
        day, week = 2 * np.pi * cols["hour"] / 24.0, 2 * np.pi * cols["hour"] / 168.0
        onehot = lambda v, k: np.eye(k, dtype=np.float32)[v]  # noqa: E731
        active = (cols["request_id"] >= 0).astype(np.float32)
        parts = [
            np.clip(cols["profile"], -FLAT_CLIP, FLAT_CLIP),
            bag,
            np.stack([np.sin(day), np.cos(day), np.sin(week), np.cos(week)], 1) * active[:, None],
            onehot(cols["domain"], 2),
            onehot(cols["entry"], 3),
            cols["explore"][:, None].astype(np.float32),
            active[:, None],
            pop,
        ]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def requests(self, obs: dict[str, np.ndarray], device: torch.device | str = "cpu") -> tuple[RequestBatch, np.ndarray]:
        """The :class:`RequestBatch` of the active lanes of stacked dict observations, and their lane indices."""
        if not isinstance(obs, dict):
            raise TypeError("observation: the agent adapter needs observation='dict' (it rebuilds the request batch from it)")
        lanes = np.nonzero(np.asarray(obs["request_id"]).reshape(-1) >= 0)[0]
        n = len(lanes)
        if not np.array_equal(lanes, np.arange(n)):
            raise ValueError("observation: active lanes must come first (idle lanes, request_id -1, last)")
        one = np.ndim(obs["profile"]) == 1  # a single env's observation: add the lane axis

        def t(key: str) -> torch.Tensor:
            value = np.asarray(obs[key])[None] if one else np.asarray(obs[key])
            return torch.as_tensor(value.reshape(len(value), -1)[:, 0] if key in VECTOR1 else value, device=device)[:n]

        rounds = np.asarray(obs["round"]).reshape(-1)
        history_time = None
        if "history_age" in obs:
            age = t("history_age")
            history_time = torch.where(age >= 0, t("time").unsqueeze(1) - age, torch.full_like(age, float("nan")))
        batch = RequestBatch(
            request_id=t("request_id"),
            user_id=t("user_id"),
            domain=t("domain"),
            entry=t("entry"),
            hour=t("hour"),
            profile=t("profile"),
            history=t("history"),
            round=int(rounds[0]) if len(rounds) else 0,
            time=t("time"),
            history_time=history_time,
        )
        return batch, lanes

    # ----- actions -----------------------------------------------------------
    def decode(self, action: Any, n: int, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` lanes of a stacked action as ``(item_ids [n, K] int64, scores [n, K] float32)``.

        Args:
            action: a batched action of :attr:`action_space` (lanes first).
            n: the lanes that serve a request this step.
            live: ``[M] bool`` live items of the round (host copy).
        """
        k = self.k
        prior = lambda: np.broadcast_to(-np.log1p(np.arange(k, dtype=np.float32)), (n, k)).copy()  # noqa: E731
        if self.action == "ids+scores":
            if not isinstance(action, dict) or set(action) != {"item_ids", "scores"}:
                raise ValueError("action: expected a dict with keys item_ids and scores")
            ids = _rows(action["item_ids"], n, (k,), np.int64, "action.item_ids")
            return ids, _rows(action["scores"], n, (k,), np.float32, "action.scores")
        if self.action == "ids":
            return _rows(action, n, (k,), np.int64, "action"), prior()
        if self.action == "discrete":
            ids = np.full((n, k), -1, dtype=np.int64)
            ids[:, 0] = _rows(action, n, (), np.int64, "action")
            return ids, prior()
        scores = np.where(live, _rows(action, n, (self.n_items,), np.float32, "action"), -np.inf)
        kk = min(k, int(live.sum()))
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
        ids = np.full((n, k), -1, dtype=np.int64)
        vals = np.zeros((n, k), dtype=np.float32)
        ids[:, :kk], vals[:, :kk] = top, np.take_along_axis(scores, top, 1)
        return ids, vals


def _rows(value: Any, n: int, shape: tuple[int, ...], dtype: Any, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape or arr.shape[0] < n:
        raise ValueError(f"{what}: expected shape (lanes, {', '.join(map(str, shape))}) with lanes >= {n}, got {arr.shape}")
    out = np.ascontiguousarray(arr[:n], dtype=dtype)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise ValueError(f"{what}: scores must be finite")
    return out


def popular_fallback(catalogue: Catalogue) -> np.ndarray:
    """Live item ids, most observed clicks first (ties by id): what tops up a repaired recall."""
    live = catalogue.live_ids()
    order = torch.sort(catalogue.clicks[live], descending=True, stable=True).indices
    return live[order].cpu().numpy()


def repair(
    ids: np.ndarray, scores: np.ndarray, live: np.ndarray, fallback: Callable[[], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make every row a list of distinct live ids, best score first (on the host, where actions arrive).

    Invalid entries (out of range, not live, or repeating an earlier entry of the row) are dropped, the valid
    ones keep their order, and the row is topped up with the first ``fallback()`` items it lacks, scored below
    its lowest valid score. Rows are then sorted by score, descending (stable: equal scores keep their order).
    A retriever's output (distinct live ids, scores descending) passes through unchanged.

    Returns:
        ``(item_ids [B, K], scores [B, K], repaired [B] int64)``.
    """
    b, m = ids.shape[0], live.shape[0]
    if ids.size and ids.min() >= 0 and ids.max() < m and live[ids].all() and (scores[:, 1:] <= scores[:, :-1]).all():
        srt = np.sort(ids, axis=1)
        if not (srt[:, 1:] == srt[:, :-1]).any():  # a retriever's output: distinct live ids, best first
            return ids, scores, np.zeros(b, dtype=np.int64)
    bad = ~_valid_entries(ids, live)
    n_bad = bad.sum(1)
    if n_bad.any():
        ids, scores = _top_up(ids, scores, bad, fallback(), m)
    if (scores[:, 1:] <= scores[:, :-1]).all():  # already best first (a retriever's output): keep as is
        return ids, scores, n_bad
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1), n_bad


def _valid_entries(ids: np.ndarray, live: np.ndarray) -> np.ndarray:
    """``[B, K] bool``: in range, live, and not repeating an earlier entry of the row."""
    m, k = live.shape[0], ids.shape[1]
    valid = (ids >= 0) & (ids < m)
    valid &= live[np.clip(ids, 0, m - 1)]
    key = np.where(valid, ids, m + np.arange(k))  # invalid entries never collide
    srt = np.sort(key, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():  # a repeated id: keep its first occurrence
        perm = np.argsort(key, axis=1, kind="stable")
        repeat = np.zeros_like(valid)
        repeat[:, 1:] = np.take_along_axis(key, perm[:, 1:], 1) == np.take_along_axis(key, perm[:, :-1], 1)
        first = np.ones_like(valid)
        np.put_along_axis(first, perm, ~repeat, 1)
        valid &= first
    return valid


def _top_up(ids: np.ndarray, scores: np.ndarray, bad: np.ndarray, fallback: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid entries first (in their order), the bad ones replaced by the first fallback items the row lacks, scored below.

    ``m`` is the item id capacity: row offsets of ``m + 1`` keep the rows' ids apart in one sorted array.
    """
    b, k = ids.shape
    order = np.argsort(bad, axis=1, kind="stable")  # valid entries first, in their order
    ids, scores, bad = (np.take_along_axis(a, order, 1) for a in (ids, scores, bad))
    cand = fallback[: 2 * k]
    off = np.arange(b)[:, None] * (m + 1)  # row offsets make one sorted array of all rows' sorted ids
    have = (np.sort(np.where(bad, -1, ids), axis=1) + 1 + off).ravel()
    want = (cand[None, :] + 1 + off).ravel()
    taken = (have[np.searchsorted(have, want).clip(max=len(have) - 1)] == want).reshape(b, len(cand))
    free = np.broadcast_to(cand, (b, len(cand)))[np.arange(b)[:, None], np.argsort(taken, axis=1, kind="stable")]
    slot = np.clip(np.cumsum(bad, 1) - 1, 0, len(cand) - 1)
    low = np.where(bad, np.inf, scores).min(1, keepdims=True)
    low = np.where(np.isfinite(low), low, 0.0)
    return np.where(bad, np.take_along_axis(free, slot, 1), ids), np.where(bad, low - 1.0 - slot, scores).astype(np.float32)
