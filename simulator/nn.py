"""Small torch building blocks shared by the platform ranker and the agents."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from simulator.guard import check_training


def mlp(sizes: list[int], batch_norm: bool = False, last_activation: bool = False) -> nn.Sequential:
    """``Linear -> [BatchNorm] -> ReLU`` stack over ``sizes``; the last layer is linear unless asked."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        last = i == len(sizes) - 2
        if not last or last_activation:
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def minibatches(n: int, batch_size: int, gen: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """A shuffled partition of ``range(n)`` into minibatches of at most ``batch_size`` indices.

    A last minibatch of a single index joins the one before it (``batch_size + 1`` indices): BatchNorm
    cannot train on one example, and ``n % batch_size == 1`` happens in long studies.
    """
    perm = torch.randperm(n, generator=gen, device=gen.device).to(device)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def check_finite(loss: torch.Tensor, who: str, params: Iterable[torch.Tensor] = ()) -> None:
    """Stop with a clear error when training diverges: a non-finite or exploding loss, or non-finite parameters.

    The policy (design.md §9) is to fail the (agent, seed) with one line naming the agent and the hyperparameter
    to lower; :func:`simulator.round.retrain` adds the round. Nothing is skipped silently.
    """
    hint = "training.lr / cascade ranker" if who == "ranker" else f"agents.{who.split('/')[0]}.lr"
    check_training(loss, params, who=who, hint=hint)


def mean_history_embedding(table: nn.Embedding, history: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` mean of the embeddings of ``history [B, L]`` ids, ignoring -1 padding."""
    mask = (history >= 0).unsqueeze(-1).float()
    emb = table(history.clamp_min(0)) * mask
    return emb.sum(1) / mask.sum(1).clamp_min(1.0)
