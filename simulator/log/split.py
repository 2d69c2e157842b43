"""The offline hold-out split: which requests are withheld from training (observable ids only)."""

from __future__ import annotations

import torch

from simulator.rng import hash_uniform

_SALT = 0x5EED_0FF1  # keeps the split's hash stream apart from every other counter-based stream


def holdout_flags(seed: int, user_id: torch.Tensor, round_idx: torch.Tensor, share: float) -> torch.Tensor:
    """``[R] bool``: requests of users drawn into round ``round_idx``'s hold-out (a share of users per round, by hash).

    The split is by user: all of a user's requests in a round fall on the same side, and a fresh draw is made
    every round. Warm-start rounds (< 0) are never held out.
    """
    if share <= 0:
        return torch.zeros_like(user_id, dtype=torch.bool)
    u = hash_uniform(user_id.long(), round_idx.long(), salt=_SALT + 7919 * int(seed))
    return (u < share) & (round_idx >= 0)
