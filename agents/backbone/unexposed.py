"""The unexposed pair sets KD, TL, AR, MUDA and DAMCAR train on, written once (algorithms.md §3-§5).

- :class:`TargetDomainConfig`: the unexposed-set fields (the target-domain walk ``radius`` R /
  ``visits`` H / ``walk_mode``, the sampler, the teacher block), embedded as a method config's ``target``.
- :func:`target_domain`: the unexposed pairs ``S_sam`` (DAMCAR's random walk, §5(c)) or ``S_un``
  (uniform with the same per-user counts: DAMCAR "w/o TDG" and the §4 DEFAULT for TL/AR/MUDA).
  An unexposed pair ``(u, i)`` is scored with ``u``'s latest request of the window as its context.
- :func:`teacher_scores`: ``Rank(u, i)`` from one frozen ranker snapshot, the same for every teacher target
  of a fit (§16.7): the agent's own teacher trained on its label (DEFAULT) or the platform's (``view.ranker``).
- :class:`~agents.backbone.exposure.ExposureCore` (its own module) is the trainer these methods compose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from agents.backbone.random_walk import exposure_graph, hard_unexposed, uniform_unexposed, visit_counts
from agents.backbone.training import Exposures
from simulator.log.view import FrozenScorer, TrainingView


@dataclass(frozen=True)
class TargetDomainConfig:
    """The unexposed sample set: which pairs, how the walk runs, how the teacher scores them."""

    sampler: Literal["walk", "uniform"] = "uniform"
    """``walk``: DAMCAR's target-domain generation; ``uniform``: the same number of never-exposed
    pairs per user drawn uniformly (DAMCAR "w/o TDG"; the §4 DEFAULT ``S_un`` of TL / AR / MUDA)."""
    radius: int = 25
    """TDG radius ``R``: hops before the walk restarts at its user (paper: 25 WeChat, 30 TikTok)."""
    visits: int = 50
    """TDG ``H``: hops in all (``walk_mode = paper``) or walks of ``R`` hops (``code``) (paper: 50 / 60)."""
    walk_mode: Literal["paper", "code"] = "code"
    """``code`` (the §5(c) DEFAULT): H walks x R hops (public code); ``paper``: H hops in all, restarting every R (paper §4.1)."""
    teacher_block: int = 65536
    """Pairs per ranker call when scoring teacher targets."""
    teacher_source: Literal["own", "platform"] = "own"
    """Who labels the distillation targets: ``own`` a ranker of the platform's kind the agent fits on its own
    ``label`` (:mod:`agents.backbone.label_teacher`); ``platform`` the platform snapshot (trained on clicks)."""
    teacher_kind: Literal["deepfm", "dcn"] = "deepfm"
    """Architecture of the own teacher (match the scenario's ``cascade.ranker``)."""
    teacher_dim: int = 16
    """Field embedding size of the own teacher (the platform's default ``cascade.ranker_dim``)."""
    teacher_epochs: int = 1
    """Epochs per fit of the own teacher (the platform's default ``cascade.ranker_epochs``)."""

    def __post_init__(self) -> None:
        for name in ("radius", "visits", "teacher_block", "teacher_dim", "teacher_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)!r}")


def latest_rows(view: TrainingView) -> torch.Tensor:
    """``[N] int64``: each user's latest request row in the window (-1: no request)."""
    user = view.requests.user_id
    rows = torch.full((view.n_users,), -1, dtype=torch.int64, device=user.device)
    return rows.scatter_reduce(0, user, torch.arange(len(user), device=user.device), reduce="amax")


def exposed_keys(view: TrainingView) -> torch.Tensor:
    """Sorted unique ``u * n_items + i`` of every logged exposure of the window (engaged or not)."""
    imp = view.impressions
    return torch.unique(view.requests.user_id[imp.row] * view.n_items + imp.item_id)


def target_domain(
    view: TrainingView, cfg: TargetDomainConfig, gen: torch.Generator, device: torch.device
) -> tuple[Exposures, dict[str, float]]:
    """The unexposed pairs (labels 0) and their diagnostics.

    The walk always runs (it fixes the per-user counts); ``uniform`` then redraws that many
    never-exposed live items per user uniformly.

    Returns:
        ``(pairs, {"target_pairs", "target_users"})``; each pair's context is its user's latest request.
    """
    imp = view.impressions
    users = view.requests.user_id[imp.row]
    graph = exposure_graph(users, imp.item_id, imp.watch_time.float(), view.n_users, view.n_items)
    starts = torch.unique(users[imp.watch_time > 0])
    keys = exposed_keys(view)
    live = view.catalogue.live
    u, i, t = visit_counts(graph, starts, cfg.radius, cfg.visits, cfg.walk_mode, gen)
    tu, ti = hard_unexposed(u, i, t, keys, live, view.n_items)
    if cfg.sampler == "uniform":
        per_user = torch.bincount(tu, minlength=view.n_users)
        tu, ti = uniform_unexposed(per_user, keys, live, gen)
    rows = latest_rows(view)[tu]
    pairs = Exposures(view.requests.to(device), rows.to(device), ti.to(device), torch.zeros(len(ti), device=device))
    return pairs, {"target_pairs": float(len(ti)), "target_users": float(len(torch.unique(tu)))}


def teacher_scores(ranker: FrozenScorer, data: Exposures, block: int) -> torch.Tensor:
    """``[n]`` ``Rank(u, i)`` of every pair of ``data`` (the snapshot's probabilities of its label, no grad)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(data), block):
            idx = torch.arange(s, min(s + block, len(data)), device=data.row.device)
            requests, items, _ = data.batch(idx)
            out.append(ranker.score(requests, items.unsqueeze(1)).squeeze(1).float().to(items.device))
    return torch.cat(out) if out else torch.zeros(0, device=data.row.device)


def concat(a: Exposures, b: Exposures) -> Exposures:
    """``a`` then ``b`` (same ``requests``)."""
    return Exposures(a.requests, torch.cat([a.row, b.row]), torch.cat([a.item_ids, b.item_ids]), torch.cat([a.labels, b.labels]))


def with_labels(data: Exposures, labels: torch.Tensor) -> Exposures:
    """``data`` with its targets replaced (soft labels in [0, 1])."""
    return Exposures(data.requests, data.row, data.item_ids, labels.to(data.labels.dtype))


def tiled(n: int, m: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[n]`` indices into ``range(m)``: shuffled copies of it tiled / truncated to length ``n`` (DAMCAR's target batches)."""
    reps = -(-n // max(m, 1))
    return torch.cat([torch.randperm(m, generator=gen) for _ in range(reps)])[:n].to(device)


def loss_summary(losses: list[float]) -> dict[str, float]:
    """``{"loss": last epoch, "loss_first_epoch": first epoch}`` (NaN when no epoch ran)."""
    return {"loss": losses[-1] if losses else math.nan, "loss_first_epoch": losses[0] if losses else math.nan}


def last_epoch_mean(values: list[torch.Tensor], n: int, batch_size: int) -> float:
    """Mean of the per-step ``values`` of the last epoch (``ceil(n / batch_size)`` steps); NaN when empty."""
    steps = max(1, -(-n // batch_size))
    return float(torch.stack(values[-steps:]).mean()) if values else math.nan
