"""What KD, TL, AR, MUDA and DAMCAR share on top of BC, written once (algorithms.md §3-§5).

- :class:`UnexposedConfig`: BC's :class:`~agents.bc.Config` plus the unexposed-set fields (the
  target-domain walk ``radius`` R / ``visits`` H / ``walk_mode``, the sampler, the teacher block).
- :func:`target_domain`: the unexposed pairs ``S_sam`` (DAMCAR's random walk, §5(c)) or ``S_un``
  (uniform with the same per-user counts: DAMCAR "w/o TDG" and the §4 DEFAULT for TL/AR/MUDA).
  An unexposed pair ``(u, i)`` is scored with ``u``'s latest request of the window as its context.
- :func:`teacher_scores`: ``Rank(u, i)`` from the frozen ranker snapshot serving now
  (``view.ranker``), the one snapshot used for every teacher target of a fit (§16.7).
- :class:`ExposureFamily`: the BC agent extended with :meth:`~ExposureFamily.train_pairs` (a seeded
  epoch loop over any pair set with soft targets) and state for extra modules and optimisers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from agents.backbone.random_walk import exposure_graph, hard_unexposed, uniform_unexposed, visit_counts
from agents.backbone.training import Exposures, check_ranges, run_epochs
from agents.bc import BC
from agents.bc import Config as BCConfig
from simulator.log.view import FrozenScorer, TrainingView


@dataclass(frozen=True)
class UnexposedConfig(BCConfig):
    """BC's fields plus the unexposed sample set's."""

    sampler: Literal["walk", "uniform"] = "uniform"
    """``walk``: DAMCAR's target-domain generation; ``uniform``: the same number of never-exposed
    pairs per user drawn uniformly (DAMCAR "w/o TDG"; the §4 DEFAULT ``S_un`` of TL / AR / MUDA)."""
    radius: int = 25
    """TDG radius ``R``: hops before the walk restarts at its user (paper: 25 WeChat, 30 TikTok)."""
    visits: int = 50
    """TDG ``H``: hops in all (``walk_mode = paper``) or walks of ``R`` hops (``code``) (paper: 50 / 60)."""
    walk_mode: Literal["paper", "code"] = "paper"
    """``paper``: restart every R hops until H visits (paper §4.1); ``code``: H walks x R hops (public code)."""
    teacher_block: int = 65536
    """Pairs per ranker call when scoring teacher targets."""

    def __post_init__(self) -> None:
        check_ranges(self)
        for name in ("radius", "visits", "teacher_block"):
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
    view: TrainingView, cfg: UnexposedConfig, gen: torch.Generator, device: torch.device
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
    """``[n]`` ``Rank(u, i)`` of every pair of ``data`` (click probabilities, no grad)."""
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


class ExposureFamily(BC):
    """BC plus a soft-target pair trainer and state for extra modules (base of KD, TL, AR, MUDA, DAMCAR).

    Subclasses put extra ``nn.Module``s in ``self.extra`` and their optimisers in
    ``self.extra_optimisers``: both are saved and restored with the agent.
    """

    name = "exposure-family"  # overridden by every registered subclass
    Config = UnexposedConfig

    def __init__(self, ctx: Any, config: Any = None) -> None:
        super().__init__(ctx, config or self.Config())
        self.extra: dict[str, nn.Module] = {}
        self.extra_optimisers: dict[str, torch.optim.Optimizer] = {}

    def epochs(self) -> int:
        """Epochs per training stage (the config's, else ``training.epochs``)."""
        return self.config.epochs if self.config.epochs is not None else self.ctx.training.epochs

    def batch_size(self) -> int:
        """Minibatch size (the config's, else ``training.batch_size``)."""
        return self.config.batch_size or self.ctx.training.batch_size

    def logits(self, view_catalogue: Any, data: Exposures, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits [b], targets [b], l2 term)`` of the retriever on minibatch ``idx`` of ``data``."""
        model = self.retriever.model
        requests, items, targets = data.batch(idx)
        logits = model.score_pairs(model.user_embedding(requests), model.item_embedding(view_catalogue, items))
        logits = logits + model.bias_terms(requests.user_id, items)
        return logits, targets, model.id_l2(requests.user_id, items, view_catalogue)

    def train_pairs(
        self,
        data: Exposures,
        gen: torch.Generator,
        loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        catalogue: Any,
        optimiser: torch.optim.Optimizer | None = None,
        epochs: int | None = None,
        frozen: Sequence[nn.Module] = (),
    ) -> list[float]:
        """Warm-started minibatch training of the retriever on ``data``.

        Args:
            data: pairs with (soft) targets in ``labels``.
            gen: the fit's generator.
            loss: ``(logits, targets, l2_term, idx) -> scalar``.
            catalogue: the view's catalogue on the agent's device.
            optimiser: default the agent's.
            epochs: default :meth:`epochs`.
            frozen: submodules kept in eval mode (no BatchNorm statistics update; TL's user side).

        Returns:
            The mean loss of each epoch.
        """
        self.retriever.model.train()
        for m in frozen:
            m.eval()

        def step_loss(idx: torch.Tensor) -> torch.Tensor:
            logits, targets, l2_term = self.logits(catalogue, data, idx)
            return loss(logits, targets, l2_term, idx)

        out = run_epochs(
            len(data), self.epochs() if epochs is None else epochs, self.batch_size(), gen, self.ctx.device,
            optimiser or self.optimiser, step_loss, self.name,
        )  # fmt: skip
        self.retriever.invalidate()
        return out

    def state_dict(self) -> dict[str, Any]:
        """BC's state plus the extra modules and optimisers (deep copies)."""
        state = super().state_dict()
        state["extra"] = copy.deepcopy({k: m.state_dict() for k, m in self.extra.items()})
        state["extra_optimisers"] = copy.deepcopy({k: o.state_dict() for k, o in self.extra_optimisers.items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        super().load_state_dict(state)
        for k, m in self.extra.items():
            m.load_state_dict(state["extra"][k])
        for k, o in self.extra_optimisers.items():
            o.load_state_dict(copy.deepcopy(state["extra_optimisers"][k]))
