"""Inverse-propensity weights, written once for UMA², IPW and every other weighted loss (algorithms.md §16.1).

The rules of §16.1: weights are computed in log space from a *detached*
propensity, clipped, then self-normalised over the batch; their quantiles are
logged every round. A propensity head must never receive gradient from the
weighted main loss, hence the ``detach`` here rather than at each call site.
"""

from __future__ import annotations

import math

import torch


def inverse_propensity_weights(
    propensity: torch.Tensor, min_propensity: float = 0.05, max_weight: float | None = None, self_normalise: bool = True
) -> torch.Tensor:
    """``w = 1 / stopgrad(p)``, clipped, optionally self-normalised to batch mean 1.

    Args:
        propensity: ``[n]`` probabilities in (0, 1] (learned or logged).
        min_propensity: floor on ``p`` before inverting (``w <= 1 / min_propensity``).
        max_weight: an extra cap on ``w`` (None: only the floor).
        self_normalise: divide by the batch mean, so the loss scale does not depend on the clip.

    Returns:
        ``[n]`` detached weights. Before self-normalisation every weight is in
        ``[1, min(1 / min_propensity, max_weight)]``.

    Raises:
        ValueError: ``min_propensity`` outside (0, 1] or ``max_weight < 1``.
    """
    if not 0.0 < min_propensity <= 1.0:
        raise ValueError(f"min_propensity: must be in (0, 1], got {min_propensity!r}")
    if max_weight is not None and max_weight < 1.0:
        raise ValueError(f"max_weight: must be >= 1, got {max_weight!r}")
    log_p = propensity.detach().float().clamp(min=min_propensity, max=1.0).log()
    log_w = -log_p
    if max_weight is not None:
        log_w = log_w.clamp(max=math.log(max_weight))
    w = log_w.exp()
    return w / w.mean().clamp_min(1e-12) if self_normalise and w.numel() else w


def weight_quantiles(weights: torch.Tensor, prefix: str = "weight") -> dict[str, float]:
    """``{prefix}_p50 / _p90 / _p99 / _max`` of ``weights`` (NaN when empty), for the round's fit diagnostics."""
    if weights.numel() == 0:
        return {f"{prefix}_{k}": math.nan for k in ("p50", "p90", "p99", "max")}
    w = weights.detach().float().reshape(-1)
    sample = w[:: -(-w.numel() // 1_000_000)]  # torch.quantile caps its input size; a strided sample is plenty
    q = torch.quantile(sample, torch.tensor([0.5, 0.9, 0.99], device=w.device))
    return {f"{prefix}_p50": float(q[0]), f"{prefix}_p90": float(q[1]), f"{prefix}_p99": float(q[2]), f"{prefix}_max": float(w.max())}
