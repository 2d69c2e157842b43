"""Item frequency estimators ``Q(i)`` for the logQ correction and the negative sampler (algorithms.md §0.3, §9).

- :func:`unigram_q`: the exact unigram distribution of the window's positives with add-α
  smoothing (α = 1: add-one) over a support (the live items):
  ``Q(i) = (n_i + α) / (Σ_j n_j + α·|S|)`` for ``i ∈ S``, 0 outside. **DEFAULT** of §9(e).
- :class:`StreamingFrequency`: the streaming hashed estimator of Yi et al. 2019 (§0.3). Two
  arrays per hash function, ``A[h]`` = the last step item ``h`` was seen and ``B[h]`` = an EMA
  of the gap between sightings: ``B ← (1−a)·B + a·(step − A)``, then ``A ← step``. The
  estimated per-step sampling probability is ``Q̂ = 1 / B``; with several hash functions the
  largest ``B`` is taken (collisions only shorten gaps). Hashes are fixed multiplicative
  hashes, so the estimator draws no randomness; its state is a plain dict of tensors.

The Yi et al. order is: update the estimate with the batch, *then* compute the batch's loss.
"""

from __future__ import annotations

from typing import Any

import torch

# odd multipliers and offsets of the multiplicative hashes (fixed: reproducible, no RNG)
_HASH_MULT = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646C, 0xFD7046C5, 0xB55A4F09)
_HASH_ADD = (0x7F4A7C15, 0x2545F491, 0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C)
_PRIME = 4294967311  # > 2^32


def unigram_q(item_ids: torch.Tensor, n_items: int, support: torch.Tensor | None = None, alpha: float = 1.0) -> torch.Tensor:
    """``[M] float32`` smoothed unigram pmf of ``item_ids`` over ``support``.

    Args:
        item_ids: ``[E] int64`` observed positives (clicks) of the window.
        n_items: the id capacity ``M``.
        support: ``[M] bool`` the items that may be sampled (e.g. ``catalogue.live``); None: all.
        alpha: additive smoothing (1 = add-one; must be > 0 so that ``log Q`` is finite on ``support``).

    Returns:
        ``Q``: sums to 1 over ``support``, 0 outside it. Positives outside ``support`` are ignored.
    """
    if alpha <= 0:
        raise ValueError(f"alpha: must be > 0, got {alpha!r}")
    sup = torch.ones(n_items, dtype=torch.bool, device=item_ids.device) if support is None else support.to(item_ids.device)
    counts = torch.bincount(item_ids, minlength=n_items)[:n_items].double()
    q = torch.where(sup, counts + alpha, torch.zeros_like(counts))
    return (q / q.sum().clamp_min(1e-300)).float()


class StreamingFrequency:
    """The hashed streaming estimator of item sampling probability per step (Yi et al. 2019).

    Args:
        size: buckets per hash array.
        n_hashes: hash functions (<= 8); the largest gap over them is used.
        rate: EMA rate ``a`` of the gap (0.01 in the public TF snippet).
        init_gap: the gap assumed for a bucket never seen (``Q̂ = 1 / init_gap``); at its first
            sighting a bucket's gap starts at the steps elapsed since the estimator started.
        device: where the arrays live.
    """

    def __init__(
        self, size: int = 1 << 16, n_hashes: int = 2, rate: float = 0.01, init_gap: float = 100.0, device: torch.device | str = "cpu"
    ) -> None:
        if not 1 <= n_hashes <= len(_HASH_MULT):
            raise ValueError(f"n_hashes: must be in [1, {len(_HASH_MULT)}], got {n_hashes}")
        if size < 1 or not 0.0 < rate <= 1.0 or init_gap < 1.0:
            raise ValueError(f"StreamingFrequency: need size >= 1, 0 < rate <= 1, init_gap >= 1; got {size}, {rate}, {init_gap}")
        self.size, self.n_hashes, self.rate = size, n_hashes, rate
        self.last = torch.zeros(n_hashes, size, dtype=torch.float64, device=device)  # A
        self.gap = torch.full((n_hashes, size), float(init_gap), dtype=torch.float64, device=device)  # B
        self.seen = torch.zeros(n_hashes, size, dtype=torch.bool, device=device)
        self.step = 0

    def _buckets(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``[n_hashes, n]`` bucket of each id under each hash."""
        ids = item_ids.long().reshape(1, -1)
        mult = torch.tensor(_HASH_MULT[: self.n_hashes], dtype=torch.int64, device=ids.device).unsqueeze(1)
        add = torch.tensor(_HASH_ADD[: self.n_hashes], dtype=torch.int64, device=ids.device).unsqueeze(1)
        return ((ids * mult + add) % _PRIME) % self.size

    def update(self, item_ids: torch.Tensor) -> None:
        """Advance one step and record the items of this batch (duplicates count once per step)."""
        self.step += 1
        uniq = torch.unique(item_ids.reshape(-1))
        if uniq.numel() == 0:
            return
        for h, b in enumerate(self._buckets(uniq)):
            b = torch.unique(b)
            seen = self.seen[h, b]
            gap_now = self.step - self.last[h, b]
            new_gap = (1 - self.rate) * self.gap[h, b] + self.rate * gap_now
            # first sighting: the gap since the estimator started (a better start than init_gap)
            self.gap[h, b] = torch.where(seen, new_gap, torch.full_like(new_gap, float(self.step)))
            self.last[h, b] = float(self.step)
            self.seen[h, b] = True

    def probability(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``Q̂ = 1 / max_h B[h(i)]`` (float32, in (0, 1]) for ``item_ids [*]``."""
        gaps = self.gap.gather(1, self._buckets(item_ids.reshape(-1))).max(0).values
        return (1.0 / gaps.clamp_min(1.0)).float().reshape(item_ids.shape)

    def state_dict(self) -> dict[str, Any]:
        return {"last": self.last.clone(), "gap": self.gap.clone(), "seen": self.seen.clone(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last, self.gap, self.seen = state["last"].clone(), state["gap"].clone(), state["seen"].clone()
        self.step = int(state["step"])
