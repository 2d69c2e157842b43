"""Domain-adaptation parts written once for AR, DAMCAR (and any later DANN-style agent): §0.3, §16.3-4.

- :func:`grad_reverse` / :class:`GradReverse`: the gradient reversal layer (GRL). Forward: the
  identity. Backward: the incoming gradient times ``-kappa``.
- :func:`dann_kappa`: the DANN warm-up schedule ``kappa(p) = lo + (hi - lo) * (2 / (1 + exp(-alpha p)) - 1)``
  over training progress ``p in [0, 1]`` (``lo=0, hi=1, alpha=10`` is DANN's; DAMCAR's public code
  uses a constant ``kappa = 1``).
- :class:`DomainClassifier`: ``Psi(GRL(z))``, an MLP (or one linear layer) giving a domain logit.
- :func:`domain_loss`: ``L_dom = -(1/|S_src|) Σ log d^s - (1/|S_tgt|) Σ log(1 - d^t)`` (source = 1).
- :func:`standardised_gap`, :func:`probe_accuracy`, :func:`projection_summary`: how far apart the source
  and target features sit after a fit (the diagnostics that show whether the adversary aligned them).
- :class:`EMATeacher`: ``theta_tea <- alpha * theta_tea + (1 - alpha) * theta_stu`` after every
  optimiser step, over parameters *and* floating buffers (BatchNorm running statistics; integer
  buffers such as ``num_batches_tracked`` are copied). It starts as an exact copy, stays in eval
  mode and gets no gradients; :meth:`EMATeacher.reset` re-copies it (once per round, §5(d)).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.two_tower import init_parameters
from simulator.nn import mlp


class GradReverse(torch.autograd.Function):
    """Identity forward; gradient times ``-kappa`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kappa: float) -> torch.Tensor:  # noqa: D102
        ctx.kappa = kappa
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return -ctx.kappa * grad, None


def grad_reverse(x: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; its gradient is multiplied by ``-kappa`` on the way back."""
    return GradReverse.apply(x, kappa)


def dann_kappa(progress: float, lo: float = 0.0, hi: float = 1.0, alpha: float = 10.0) -> float:
    """The warm-start GRL coefficient at training progress ``progress in [0, 1]``: ``lo`` at 0, -> ``hi``."""
    p = min(max(progress, 0.0), 1.0)
    return lo + (hi - lo) * (2.0 / (1.0 + math.exp(-alpha * p)) - 1.0)


class DomainClassifier(nn.Module):
    """``Psi(GRL(z))``: a domain logit (source = 1) behind the gradient reversal layer.

    Args:
        in_dim: size of ``z``.
        hidden: hidden sizes (``()``: one linear layer, as DAMCAR's ``Psi``).
        bias: bias on the output layer (DAMCAR's code: none).
        gen: generator for the initialisation (no global RNG).

    Attributes:
        kappa: the GRL coefficient; set it per step for a schedule (:func:`dann_kappa`).
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], bias: bool, gen: torch.Generator) -> None:
        super().__init__()
        with torch.device("meta"):
            self.body = mlp([in_dim, *hidden], last_activation=True) if hidden else nn.Identity()
            self.out = nn.Linear(hidden[-1] if hidden else in_dim, 1, bias=bias)
        self.to_empty(device="cpu")
        init_parameters(self, gen, 0.1)
        self.kappa = 1.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[n]`` domain logits of ``z [n, in_dim]``."""
        return self.out(self.body(grad_reverse(z, self.kappa))).squeeze(-1)


def domain_loss(source_logits: torch.Tensor, target_logits: torch.Tensor, target_grad: bool = True) -> torch.Tensor:
    """``L_dom = BCE(d^s, 1) + BCE(d^t, 0)``, each averaged over its own domain (DAMCAR Eq. 8, AR §4.2).

    Args:
        source_logits: ``[n_s]`` domain logits of source (exposed) samples.
        target_logits: ``[n_t]`` domain logits of target (unexposed) samples.
        target_grad: False reproduces DAMCAR's public code (FLAG §5(c)): the target term is computed
            on a detached tensor, so only the source side trains the classifier and the encoder.
    """
    tgt = target_logits if target_grad else target_logits.detach()
    return F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits)) + F.binary_cross_entropy_with_logits(
        tgt, torch.zeros_like(tgt)
    )


def domain_accuracy(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Share of samples the domain classifier puts on the right side (0.5 = aligned), as a 0-dim tensor."""
    right = torch.cat([(source_logits > 0), (target_logits <= 0)]).float()
    return right.mean() if right.numel() else torch.full((), math.nan)


class EMATeacher:
    """An exponential-moving-average copy of a student module.

    Args:
        student: the module to follow.
        alpha: smoothing ``alpha in [0, 1]`` (0: teacher = student after each update; 1: frozen at the copy).
    """

    def __init__(self, student: nn.Module, alpha: float) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: must be in [0, 1], got {alpha!r}")
        self.alpha = alpha
        self.module = copy.deepcopy(student)
        self.reset(student)

    def reset(self, student: nn.Module) -> None:
        """Make the teacher an exact copy of ``student`` again (eval mode, no gradients)."""
        self.module.load_state_dict(student.state_dict())
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """``theta_tea <- alpha * theta_tea + (1 - alpha) * theta_stu`` (parameters and float buffers); call after ``optimizer.step()``."""
        if self.alpha == 1.0:
            return  # frozen at the copy, counters included
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = [*zip(self.module.parameters(), student.parameters(), strict=True)]
        pairs += zip(self.module.buffers(), student.buffers(), strict=True)
        for t, s in pairs:
            if self.alpha == 0.0 or not t.dtype.is_floating_point:
                t.copy_(s)  # exact (lerp with weight 1 may differ by an ulp)
            else:
                t.lerp_(s.detach(), 1.0 - self.alpha)


def standardised_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over dimensions of ``|mean_a − mean_b| / pooled sd``: how far two samples ``[n, d]`` sit apart (0 = same means)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = torch.sqrt(0.5 * (a.var(0) + b.var(0))).clamp_min(1e-8)
    return float(((a.mean(0) - b.mean(0)).abs() / pooled).mean())


@torch.enable_grad()
def probe_accuracy(a: torch.Tensor, b: torch.Tensor, steps: int = 200) -> float:
    """Held-out accuracy of a fresh logistic regression telling ``a`` (1) from ``b`` (0); 0.5 = indistinguishable.

    Fitted (Adam, full batch, zero init: no randomness) on the even rows of each sample and scored on the
    odd rows with balanced weights. Unlike the adversary's own accuracy, which chases a moving encoder,
    this asks whether the frozen features still reveal the domain.
    """
    if len(a) < 4 or len(b) < 4:
        return math.nan
    x = torch.cat([a, b]).detach().float()
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    y = torch.cat([torch.ones(len(a)), torch.zeros(len(b))]).to(x.device)
    w = torch.cat([torch.full((len(a),), 0.5 / len(a)), torch.full((len(b),), 0.5 / len(b))]).to(x.device)
    odd = torch.cat([torch.arange(len(a)) % 2 == 1, torch.arange(len(b)) % 2 == 1]).to(x.device)
    coef = torch.zeros(x.shape[1] + 1, device=x.device, requires_grad=True)  # no nn.Linear: its init would draw from the global RNG
    xb = torch.cat([x, torch.ones(len(x), 1, device=x.device)], dim=1)
    opt = torch.optim.Adam([coef], lr=0.05)
    for _ in range(steps):
        loss = (F.binary_cross_entropy_with_logits(xb[~odd] @ coef, y[~odd], reduction="none") * w[~odd]).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        right = (((xb[odd] @ coef) > 0).float() == y[odd]).float()
    return float((right * w[odd]).sum() / w[odd].sum())


def projection_summary(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """The two samples on the first two principal axes of their pooled, centred features (data for a 2-D drawing).

    Returns:
        ``pc{1,2}_{source,target}_{mean,sd}`` (``a`` is the source); an axis's sign is fixed so the source mean is >= 0.
    """
    keys = [f"pc{k}_{side}_{stat}" for k in (1, 2) for side in ("source", "target") for stat in ("mean", "sd")]
    if len(a) < 2 or len(b) < 2:
        return dict.fromkeys(keys, math.nan)
    x = torch.cat([a, b]).detach().double()
    centre = x.mean(0)
    _, _, vh = torch.linalg.svd(x - centre, full_matrices=False)
    out: dict[str, float] = {}
    for k in (1, 2):
        axis = vh[k - 1] if vh.shape[0] >= k else torch.zeros_like(centre)
        pa, pb = (a.double() - centre) @ axis, (b.double() - centre) @ axis
        sign = -1.0 if float(pa.mean()) < 0 else 1.0
        for side, p in (("source", pa * sign), ("target", pb * sign)):
            out[f"pc{k}_{side}_mean"], out[f"pc{k}_{side}_sd"] = float(p.mean()), float(p.std())
    return out
