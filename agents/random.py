"""Random: a uniformly random set of ``k`` live items per request (reference agent).

Each (request, item) pair gets a deterministic pseudo-random key, a 32-bit
integer hash of ``(stream_seed(ctx.seed, "random-agent"), request_id, item_id)``.
A request's retrieved set is the ``k`` live items with the largest keys, which
is a uniform random ``k``-subset; its scores are ``key / 2^32`` in [0, 1),
descending. Because the key is a function of the pair, ``score`` is well
defined for any pair and agrees with ``retrieve``, and the same request ids give
the same sets on any device. The score carries no preference information.

For a fixed request the map item -> key is a bijection on 32-bit ids, so keys
never tie within a row.

Each ``fit`` draws a fresh model: the salt becomes ``stream_seed(ctx.seed,
"random-agent", fits)``, carried by the state dict to the serving copy. Without
it the candidate evaluated offline after a retrain would rank a round's requests
exactly as the model that served them did, and its hold-out recall would only
replay its own exposures instead of scoring a model independent of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agents.backbone.index import block_rows, blocked_topk, check_k
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch

_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class RandomConfig:
    """Random-agent settings."""

    block_users: int = 1024
    """Users per block when scanning the catalogue."""

    def __post_init__(self) -> None:
        if self.block_users < 1:
            raise ValueError(f"block_users: must be >= 1, got {self.block_users}")


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash of ``x`` (int64 values in [0, 2^32)); products stay below 2^63."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def pair_keys(salt: int, request_id: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
    """``[B, K] int64`` keys in [0, 2^32) of the pairs ``(request_id [B], item_ids [B, K] or [K])``."""
    r = _mix32((request_id & _M32) ^ (salt & _M32))
    r = _mix32(r ^ ((request_id >> 32) & _M32))
    i = _mix32((item_ids & _M32) ^ ((salt >> 32) & _M32))
    return _mix32(i ^ r.unsqueeze(1))


@register("random", config=RandomConfig)
class RandomAgent:
    """Uniform random k live items per request (deterministic in the request id; scores carry no signal).

    Args:
        ctx: sizes, device and seed.
        config: settings (default :class:`RandomConfig`).
    """

    def __init__(self, ctx: AgentContext, config: RandomConfig | None = None, name: str = "random") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or RandomConfig()
        self.fits = 0
        self.salt = self._salt()
        self._live: torch.Tensor | None = None

    def _salt(self) -> int:
        """The keys' salt of the current model (the first one is the seed's; each fit draws another)."""
        return stream_seed(self.ctx.seed, "random-agent", *((self.fits,) if self.fits else ()))

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Nothing to learn: a retrained random model is a fresh draw, independent of what it served."""
        self.fits += 1
        self.salt = self._salt()
        return {}

    def index(self, catalogue: Catalogue) -> None:
        """Remember the live item ids."""
        self._live = catalogue.live_ids().to(self.ctx.device)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` live items with the largest pair keys: ``(item_ids [B, k] int64, scores [B, k] float32)``."""
        if self._live is None:
            raise RuntimeError("random: no index; call index(catalogue) first")
        live = self._live
        check_k(k, len(live), self.name)
        rid = requests.request_id
        rows = block_rows(len(live), self.config.block_users)
        cols, keys = blocked_topk(len(requests), k, rows, lambda a, b: pair_keys(self.salt, rid[a:b], live), rid.device)
        return live[cols], self._to_score(keys)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` pair keys scaled to [0, 1) (the value ``retrieve`` ranks by)."""
        return self._to_score(pair_keys(self.salt, requests.request_id, item_ids))

    @staticmethod
    def _to_score(keys: torch.Tensor) -> torch.Tensor:
        return (keys.double() / 2.0**32).float()

    def state_dict(self) -> dict[str, Any]:
        """The number of fits: with ``ctx.seed`` and the request ids it determines the keys."""
        return {"fits": self.fits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take another instance's model (the serving copy takes the learner's)."""
        self.fits = int(state.get("fits", 0))
        self.salt = self._salt()
