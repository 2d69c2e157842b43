"""Off-policy estimators of a deterministic slate policy's value from logs with propensities.

Plain tensors in, a float out. The logged data of ``n`` requests, ``S`` slots each:

- ``reward [n, S]``: the logged per-slot reward (a click, or a finish);
- ``propensity [n, S]``: the logging policy's probability of the logged item being exposed (item-level) or
  of being exposed at that slot (position-level), clipped below by ``floor`` before dividing;
- ``match [n, S]``: whether the target policy would expose the logged item (item-level) or expose it at the
  same slot (position-level);
- ``model_logged [n, S]`` / ``model_target [n, S]``: a reward model's predictions for the logged and the
  target slates (direct method).

The value is the expected total reward per request, ``V(pi) = E_x sum_j E[r | x, pi(x)_j]``. Formulas:

- IPS (item-level, the "independent-item" estimator of Li et al. 2018, unbiased when a click depends on the
  item and not on its slot): ``V = 1/n sum_q sum_j r_qj 1[s_qj in pi_q] / p_qj``.
- Position-based IPS (Li et al. 2018's item-position model, the slate estimator for cascades with position
  bias; unbiased when P(click) = examination(slot) x attraction(item)): the same sum with slot-level matches
  and propensities ``1[pi_q puts s_qj at slot j] / P(s_qj at slot j)``.
- SNIPS (Swaminathan & Joachims 2015, self-normalised): the IPS sum over the mean weight per request, which
  has expectation S under full support: ``V = S sum r w / sum w`` with ``w = match / p``.
- DM: ``V = 1/n sum_q sum_j c_hat(q, pi_qj)``.
- DR (Dudik et al. 2011, per item): ``V = DM + 1/n sum_q sum_j w_qj (r_qj - c_hat(q, s_qj))``; with
  ``c_hat = 0`` it is IPS.
"""

from __future__ import annotations

import torch


def importance_weights(match: torch.Tensor, propensity: torch.Tensor, floor: float) -> torch.Tensor:
    """``[n, S] float64``: ``match / max(p, floor)`` (0 where the target policy disagrees)."""
    return match.double() / propensity.double().clamp_min(floor)


def ips(reward: torch.Tensor, match: torch.Tensor, propensity: torch.Tensor, floor: float) -> float:
    """Inverse propensity scoring: ``1/n sum_q sum_j r_qj w_qj``."""
    w = importance_weights(match, propensity, floor)
    return float((reward.double() * w).sum(1).mean())


def snips(reward: torch.Tensor, match: torch.Tensor, propensity: torch.Tensor, floor: float) -> float:
    """Self-normalised IPS: ``S sum r w / sum w`` (NaN when no logged item matches the target policy)."""
    w = importance_weights(match, propensity, floor)
    total = w.sum()
    if float(total) == 0.0:
        return float("nan")
    return float(reward.shape[1] * (reward.double() * w).sum() / total)


def direct_method(model_target: torch.Tensor) -> float:
    """The reward model's value of the target slates: ``1/n sum_q sum_j c_hat(q, pi_qj)``."""
    return float(model_target.double().sum(1).mean())


def doubly_robust(
    reward: torch.Tensor,
    match: torch.Tensor,
    propensity: torch.Tensor,
    floor: float,
    model_logged: torch.Tensor,
    model_target: torch.Tensor,
) -> float:
    """DM plus the importance-weighted residuals of the reward model on the logged items."""
    w = importance_weights(match, propensity, floor)
    correction = (w * (reward.double() - model_logged.double())).sum(1).mean()
    return direct_method(model_target) + float(correction)


def item_match(logged: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[n, S] bool``: the logged item is somewhere in the target slate (item-level)."""
    return (logged.unsqueeze(2) == target.unsqueeze(1)).any(2)


def slot_match(logged: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[n, S] bool``: the target slate has the logged item at the same slot (position-level)."""
    return logged == target
