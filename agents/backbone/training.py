"""Shared training helpers: per-impression tensors, optimisers, seeded epochs.

Randomness comes only from :func:`fit_generator`, a CPU ``torch.Generator``
seeded by ``stream_seed(ctx.seed, agent_name, view.round)``: the same seed and
view give the same minibatch order on CPU and GPU, and a resumed run needs no
saved generator state. No global RNG is used anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.nn import check_finite, minibatches
from simulator.rng import stream_seed
from simulator.types import RequestBatch


@dataclass(frozen=True)
class Exposures:
    """One row per exposure of the window, ready for minibatching.

    The request context is gathered per minibatch (``requests.select(row[idx])``),
    so the per-exposure copy of the histories is never materialised.

    Attributes:
        requests: ``[R]`` the window's requests (``view.requests``).
        row: ``[E] int64`` request row of each exposure.
        item_ids: ``[E] int64`` exposed item.
        labels: ``[E] float32`` 1 for a positive (clicked / finished), 0 for exposed-unclicked.
    """

    requests: RequestBatch
    row: torch.Tensor
    item_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[RequestBatch, torch.Tensor, torch.Tensor]:
        """Minibatch ``idx [n] int64`` -> ``(requests [n], item_ids [n], labels [n])``."""
        return self.requests.select(self.row[idx]), self.item_ids[idx], self.labels[idx]


def exposure_data(view: TrainingView, label: Literal["clicked", "finished"], device: torch.device) -> Exposures:
    """Per-exposure training tensors of ``view`` on ``device``.

    Args:
        view: the training window.
        label: the impression field used as the positive label.
        device: where the tensors go (the agent's device).
    """
    imp = view.impressions
    labels = getattr(imp, label).to(device).float()
    return Exposures(view.requests.to(device), imp.row.to(device), imp.item_id.to(device), labels)


def fit_generator(ctx: AgentContext, name: str, round_idx: int) -> torch.Generator:
    """CPU generator of agent ``name``'s shuffling stream for round ``round_idx``."""
    return torch.Generator().manual_seed(stream_seed(ctx.seed, name, round_idx))


def make_optimiser(
    params: Iterable[torch.nn.Parameter], kind: Literal["adam", "adagrad"], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Adam (default; AdamW, i.e. decoupled decay, when ``weight_decay > 0``) or Adagrad (DAMCAR's choice, lr 1e-2) over ``params``."""
    if kind == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if weight_decay > 0 else torch.optim.Adam(params, lr=lr)
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: must be one of 'adam', 'adagrad', got {kind!r}")


def run_epochs(
    n: int,
    epochs: int,
    batch_size: int,
    gen: torch.Generator,
    device: torch.device,
    optimiser: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    who: str,
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """Minibatch SGD over ``n`` examples for ``epochs`` epochs.

    Args:
        n: number of examples.
        epochs: passes over the data.
        batch_size: examples per step (the last batch may be smaller).
        gen: shuffling generator (see :func:`fit_generator`).
        device: where minibatch indices live.
        optimiser: stepped once per minibatch.
        loss_fn: ``idx [b] int64 -> scalar loss`` of that minibatch.
        who: agent name for the divergence error.
        after_step: called after each optimiser step (e.g. an EMA teacher update).

    Returns:
        The mean loss of each epoch (weighted by batch size).

    Raises:
        FloatingPointError: the loss became NaN / inf (checked once per epoch, no per-step sync).
    """
    means: list[float] = []
    for _ in range(epochs):
        total = torch.zeros((), device=device)
        for idx in minibatches(n, batch_size, gen, device):
            loss = loss_fn(idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if after_step is not None:
                after_step()
            total = total + loss.detach() * idx.numel()
        mean = total / max(n, 1)
        check_finite(mean, who)
        means.append(float(mean))
    return means


_RANGES: dict[str, tuple[Callable[[object], bool], str]] = {
    "embedding_dim": (lambda v: v is None or v >= 1, "must be >= 1"),
    "id_dim": (lambda v: v >= 1, "must be >= 1"),
    "context_dim": (lambda v: v >= 1, "must be >= 1"),
    "hidden": (lambda v: all(h >= 1 for h in v), "every size must be >= 1"),
    "gamma": (lambda v: v > 0, "must be > 0"),
    "tau": (lambda v: v > 0, "must be > 0"),
    "init_std": (lambda v: v > 0, "must be > 0"),
    "block_users": (lambda v: v >= 1, "must be >= 1"),
    "epochs": (lambda v: v is None or v >= 0, "must be >= 0"),
    "batch_size": (lambda v: v is None or v >= 1, "must be >= 1"),
    "lr": (lambda v: v is None or v > 0, "must be > 0"),
    "l2": (lambda v: v >= 0, "must be >= 0"),
    "weight_decay": (lambda v: v >= 0, "must be >= 0"),
}


def check_ranges(config: object) -> None:
    """Range checks for the shared tower / training fields a Config carries (call from ``__post_init__``).

    Raises:
        ValueError: ``"<field>: must be ..., got <value>"`` (the registry prefixes ``agents.<name>.``).
    """
    for field_name, (ok, what) in _RANGES.items():
        if hasattr(config, field_name) and not ok(getattr(config, field_name)):
            raise ValueError(f"{field_name}: {what}, got {getattr(config, field_name)!r}")
