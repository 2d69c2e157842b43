"""CP2Rec's parts (algorithms.md §13, **our reading**): confounding proxies ``Z``, bias encoders, losses, leakage probe.

Only the abstract of CP2Rec (Liu et al., MM 2023) is public; everything past its three named
modules (confounding-proxy priors, orthogonal bias disentangling, accuracy-bias tradeoff) is the
reading of §13. This module holds the pieces :mod:`agents.cp2rec` composes:

- :func:`proxies_of_view` / :func:`item_proxies` / :func:`user_proxies`: ``Z`` as served. The item
  popularity counters are rebuilt for the round each exposure was served in (the catalogue's
  counters now, minus the window's exposures and clicks of that round and later), not read now.
- :class:`BiasEncoders`: ``b_i = B_item(Z_item)``, ``b_u = B_user(Z_user)``, ``b_ctx = B_ctx(Z_ctx)``,
  the readout ``w`` and the maps ``P``, ``P'`` of the cosine orthogonality.
- the losses ``L_bias``, ``L_unb`` and ``L_orth`` (two forms), each a plain function;
- :func:`leakage_probe`: the cross-fitted R² of a linear probe (§13(f): orthogonality alone does not
  remove information).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.two_tower import init_parameters
from simulator.log.view import TrainingView
from simulator.nn import mlp
from simulator.types import Catalogue, RequestBatch

POSITIONS = 16
"""Slot positions one-hot encoded in ``Z_ctx`` (later slots share the last)."""
N_ITEM_Z, N_USER_Z = 4, 1
N_CTX_Z = POSITIONS + 3 + 5  # positions, entry (3), explore, log rank, scroll depth + known flag, log other clicks


@dataclass(frozen=True)
class Proxies:
    """Confounding proxies of a set of exposures, as served (all ``[E, *]`` float32).

    Attributes:
        item: ``log1p`` exposures and clicks of the item when served, ``log1p`` age in rounds, promoted flag.
        user: ``log1p`` length of the user's click history at the request (activity level).
        ctx: slot position (one-hot), entry (one-hot), explore flag, ``log1p`` retrieval rank, scroll depth
            (0 when not logged) and its known flag, ``log1p`` other clicks in the session.
    """

    item: torch.Tensor
    user: torch.Tensor
    ctx: torch.Tensor

    def all(self) -> torch.Tensor:
        """``[E, N_ITEM_Z + N_USER_Z + N_CTX_Z]`` the three groups side by side (the propensity model's input)."""
        return torch.cat([self.item, self.user, self.ctx], dim=1)


def item_proxies(catalogue: Catalogue, item_ids: torch.Tensor, round_now: torch.Tensor | int, exposures=None, clicks=None) -> torch.Tensor:
    """``[n, 4]`` ``Z_item`` of ``item_ids [n]`` at round ``round_now`` (scalar or ``[n]``); counters default to the catalogue's."""
    exposures = catalogue.exposures[item_ids] if exposures is None else exposures
    clicks = catalogue.clicks[item_ids] if clicks is None else clicks
    age = (torch.as_tensor(round_now, device=item_ids.device) - catalogue.born_round[item_ids]).clamp_min(0).float()
    return torch.stack([exposures.float().log1p(), clicks.float().log1p(), age.log1p(), catalogue.promoted[item_ids].float()], dim=1)


def user_proxies(requests: RequestBatch) -> torch.Tensor:
    """``[B, 1]`` ``Z_user``: ``log1p`` of the click-history length as served (the user's activity level)."""
    return (requests.history >= 0).sum(1, keepdim=True).float().log1p()


def served_counters(view: TrainingView, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``([E], [E])`` exposures and clicks of each impression's item at the start of the round it was served.

    The catalogue's counters are the end of ``view.round``; the window's impressions of the
    exposure's round and later are taken off (``[W, M]`` reverse cumulative counts, no per-item loop).
    Requests withheld from the view (an offline hold-out) are not in the window, so their share of
    the counters stays in: an undercount of the rounds' growth, not a leak of later data.
    """
    imp, m = view.impressions, view.n_items
    rnd = view.request_round.to(device)[imp.row.to(device)]
    off = rnd - rnd.min() if len(rnd) else rnd
    w = int(off.max()) + 1 if len(off) else 1
    item = imp.item_id.to(device)
    out = []
    for counter, mask in ((view.catalogue.exposures, None), (view.catalogue.clicks, imp.clicked.to(device).bool())):
        key = off * m + item
        counts = torch.bincount(key if mask is None else key[mask], minlength=w * m).reshape(w, m).float()
        later = counts.flip(0).cumsum(0).flip(0)  # [w, m]: count in round offset >= w
        out.append((counter.to(device)[item].float() - later[off, item]).clamp_min(0.0))
    return out[0], out[1]


def context_proxies(view: TrainingView, device: torch.device) -> torch.Tensor:
    """``[E, N_CTX_Z]`` ``Z_ctx`` of the window's impressions (used in training only; dropped at retrieval)."""
    imp = view.impressions
    e = len(imp)
    row = imp.row.to(device)
    pos = F.one_hot(imp.position.to(device).long().clamp(0, POSITIONS - 1), POSITIONS).float()
    entry = F.one_hot(view.requests.entry.to(device)[row].long().clamp(0, 2), 3).float()
    explore = view.explore.to(device)[row].float().unsqueeze(1)
    rank = imp.retrieval_rank.to(device).float().clamp_min(0).log1p().unsqueeze(1)
    scroll = imp.scroll_depth.to(device).float() if imp.scroll_depth is not None else torch.full((e,), float("nan"), device=device)
    known = torch.isfinite(scroll)
    scroll = torch.where(known, scroll, torch.zeros_like(scroll)).clamp_min(0).log1p()
    other = imp.other_clicks.to(device).float() if imp.other_clicks is not None else torch.zeros(e, device=device)
    return torch.cat([pos, entry, explore, rank, scroll.unsqueeze(1), known.float().unsqueeze(1), other.log1p().unsqueeze(1)], dim=1)


def proxies_of_view(view: TrainingView, device: torch.device) -> Proxies:
    """``Z`` of every impression of the window, as served (see :func:`served_counters`)."""
    imp = view.impressions
    row, item = imp.row.to(device), imp.item_id.to(device)
    exposures, clicks = served_counters(view, device)
    rnd = view.request_round.to(device)[row]
    catalogue = view.catalogue.to(device)
    z_item = item_proxies(catalogue, item, rnd, exposures, clicks)
    z_user = user_proxies(view.requests.to(device))[row]
    return Proxies(z_item, z_user, context_proxies(view, device))


def _encoder(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """``BatchNorm (non-affine) -> MLP``: the proxies are log counts and flags of very different scales."""
    return nn.Sequential(nn.BatchNorm1d(n_in, affine=False), mlp([n_in, *hidden, n_out]))


class BiasEncoders(nn.Module):
    """``B_item``, ``B_user``, ``B_ctx`` (small MLPs on ``Z``), the readout ``w`` of ``b_ctx`` and the maps ``P``, ``P'``.

    Args:
        dim_b: size of the bias embeddings.
        hidden: hidden sizes of each encoder.
        dim_main: size of the purified embeddings (the range of ``P``, ``P'``).
        gen: initialisation generator (no global RNG).
        device: where the parameters live.
    """

    def __init__(self, dim_b: int, hidden: tuple[int, ...], dim_main: int, gen: torch.Generator, device: torch.device) -> None:
        super().__init__()
        with torch.device("meta"):
            self.item = _encoder(N_ITEM_Z, hidden, dim_b)
            self.user = _encoder(N_USER_Z, hidden, dim_b)
            self.ctx = _encoder(N_CTX_Z, hidden, dim_b)
            self.ctx_out = nn.Linear(dim_b, 1)
            self.p_item = nn.Linear(dim_b, dim_main, bias=False)
            self.p_user = nn.Linear(dim_b, dim_main, bias=False)
        self.to_empty(device=device)
        init_parameters(self, gen, 0.1)

    def bias_logit(self, b_u: torch.Tensor, b_i: torch.Tensor, z_ctx: torch.Tensor) -> torch.Tensor:
        """``[n]`` ``<b_u, b_i> + w^T b_ctx`` of paired rows."""
        return (b_u * b_i).sum(-1) + self.ctx_out(self.ctx(z_ctx)).squeeze(-1)


class PropensityMLP(nn.Module):
    """``P̂(click | Z)``: a tiny MLP on all proxies (§13(c) DEFAULT), fitted first each round, then frozen."""

    def __init__(self, hidden: tuple[int, ...], gen: torch.Generator, device: torch.device) -> None:
        super().__init__()
        n_in = N_ITEM_Z + N_USER_Z + N_CTX_Z
        with torch.device("meta"):
            self.net = _encoder(n_in, hidden, 1)
        self.to_empty(device=device)
        init_parameters(self, gen, 0.1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[n]`` logits of ``z [n, N_ITEM_Z + N_USER_Z + N_CTX_Z]``."""
        return self.net(z).squeeze(-1)


# --- losses -----------------------------------------------------------------------------------


def bias_loss(logit_bias: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_bias = mean BCE(σ(s + <b_u, b_i> + w^T b_ctx), y)``: the original, biased loss (§13(c))."""
    return F.binary_cross_entropy_with_logits(logit_bias, labels.to(logit_bias.dtype))


def unbiased_loss(logit_unb: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``L_unb = mean w·BCE(σ(s), y)`` on the unbiased head (§13(c)).

    ``w``: detached IPS weights ``1 / P̂(examined | Z)`` (clipped, self-normalised) or, on the uniform
    exploration slice, its indicator divided by the slice's share (plain BCE on the slice).
    """
    per = F.binary_cross_entropy_with_logits(logit_unb, labels.to(logit_unb.dtype), reduction="none")
    return (weights.detach() * per).mean()


def orth_loss_cosine(g: torch.Tensor, pb_i: torch.Tensor, f: torch.Tensor, pb_u: torch.Tensor) -> torch.Tensor:
    """``L_orth = mean cos²(g(i), P·b_i) + mean cos²(f(u), P'·b_u)`` (§13(c), first form)."""
    return F.cosine_similarity(g, pb_i, dim=-1, eps=1e-8).pow(2).mean() + F.cosine_similarity(f, pb_u, dim=-1, eps=1e-8).pow(2).mean()


def cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[da, db]`` batch correlation matrix of the columns of ``a [n, da]`` and ``b [n, db]`` (constant columns give 0)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    a = a / a.pow(2).mean(0).add(1e-8).sqrt()
    b = b / b.pow(2).mean(0).add(1e-8).sqrt()
    return a.T @ b / max(a.shape[0], 1)


def orth_loss_xcov(g: torch.Tensor, b_i: torch.Tensor, f: torch.Tensor, b_u: torch.Tensor) -> torch.Tensor:
    """``L_orth = ||corr(G, B_i)||_F² + ||corr(F, B_u)||_F²`` over the batch (§13(c), the cross-covariance form).

    Standardised columns, so the penalty is scale-free: every purified coordinate is pushed to be
    linearly uncorrelated with every bias coordinate (what the linear leakage probe measures).
    """
    return cross_correlation(g, b_i).pow(2).sum() + cross_correlation(f, b_u).pow(2).sum()


# --- leakage probe ----------------------------------------------------------------------------


def popularity_bucket(counts: torch.Tensor, n_buckets: int = 10) -> torch.Tensor:
    """``[n]`` float bucket ``0..n_buckets-1`` of ``log1p(counts)`` by quantiles (ties share a bucket)."""
    x = counts.double().log1p()
    if x.numel() == 0:
        return x.float()
    edges = torch.quantile(x, torch.linspace(0, 1, n_buckets + 1, dtype=torch.float64, device=x.device)[1:-1])
    return torch.bucketize(x, edges, right=True).float()


def leakage_probe(
    emb: torch.Tensor, target: torch.Tensor, gen: torch.Generator, weights: torch.Tensor | None = None, ridge: float = 1e-3
) -> float:
    """Cross-fitted R² of a linear (ridge) probe from ``emb [n, d]`` to ``target [n]`` (§13(f)).

    The rows (items) are split in two halves at random (``gen``); a probe fitted on each half predicts
    the other, so R² is out of sample: about 0 (slightly below) when ``emb`` carries no linear
    information about ``target``. ``weights [n]`` (e.g. the items' exposures in the window) weight the
    fit and the R²: leakage as the training data presents the items. Returns NaN with fewer than 4
    rows of positive weight or a constant target.
    """
    w = torch.ones_like(target, dtype=torch.float64) if weights is None else weights.double()
    keep = w > 0
    emb, y, w = emb[keep].detach().double(), target[keep].double(), w[keep]
    n = emb.shape[0]
    if n < 4 or float(y.var()) == 0.0:
        return float("nan")
    x = torch.cat([emb, torch.ones(n, 1, dtype=torch.float64, device=emb.device)], dim=1)
    perm = torch.randperm(n, generator=gen).to(emb.device)
    halves = (perm[: n // 2], perm[n // 2 :])
    pred = torch.empty_like(y)
    eye = torch.eye(x.shape[1], dtype=torch.float64, device=emb.device)
    for fit_rows, test_rows in (halves, halves[::-1]):
        xf, wf = x[fit_rows], w[fit_rows].unsqueeze(1)
        coef = torch.linalg.solve(xf.T @ (wf * xf) + ridge * float(wf.sum()) * eye, xf.T @ (wf.squeeze(1) * y[fit_rows]))
        pred[test_rows] = x[test_rows] @ coef
    mean = (w * y).sum() / w.sum()
    return float(1.0 - (w * (y - pred).pow(2)).sum() / (w * (y - mean).pow(2)).sum())
