"""The UMA² sample spaces of each logged request, and vectorised samplers over them (algorithms.md §0.1, §7).

For one request ``r`` with recalled set ``R_r`` and exposed slate ``E_r`` (both as
*logged* by the policy that served it, never recomputed with the current model):

- positive: ``i ∈ E_r`` with label 1;
- space A: ``i ∈ E_r`` with label 0 (exposed, not clicked);
- space B: ``i ∈ R_r \\ E_r`` (recalled, not exposed), from ``view.candidates`` rows of
  that request with ``exposed == False``;
- space C: ``i ∈ I_live \\ R_r`` (never recalled for that request), uniform over the
  live catalogue minus that request's recalled set.

:func:`build_spaces` lays the window's recalled sets out as padded ``[R, K]``
tensors (one row per request) with the logged propensities; the samplers draw
``n`` items per positive from the positive's own request, all rows at once.
Randomness comes only from the caller's CPU ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from simulator.log.view import TrainingView


@dataclass(frozen=True)
class Spaces:
    """The window's per-request spaces (``R`` requests, ``K`` the largest recalled set).

    Attributes:
        recalled: ``[R, K] int64`` recalled items, -1 padding (any order within a row).
        exposed: ``[R, K] bool`` the slot was exposed.
        positive: ``[R, K] bool`` the slot was exposed and labelled positive.
        recall_prob: ``[R, K]`` logged P(recalled) of each slot (1 where not logged).
        expose_prob: ``[R, K]`` logged P(exposed | realised recalled set) of each slot.
        a_slots: ``[R, K] int64`` slots of space A first (exposed & negative), then anything.
        n_a: ``[R]`` size of space A.
        b_slots: ``[R, K] int64`` slots of space B first (recalled & not exposed), then anything.
        n_b: ``[R]`` size of space B.
        live_ids: ``[M]`` live item ids now (space C and "random" draw from them).
        pos_row: ``[P] int64`` request row of each positive exposure.
        pos_item: ``[P] int64`` item of each positive exposure.
        pos_slot: ``[P] int64`` slot of each positive in its row of ``recalled``.
    """

    recalled: torch.Tensor
    exposed: torch.Tensor
    positive: torch.Tensor
    recall_prob: torch.Tensor
    expose_prob: torch.Tensor
    a_slots: torch.Tensor
    n_a: torch.Tensor
    b_slots: torch.Tensor
    n_b: torch.Tensor
    live_ids: torch.Tensor
    pos_row: torch.Tensor
    pos_item: torch.Tensor
    pos_slot: torch.Tensor


@dataclass(frozen=True)
class Draw:
    """``n`` sampled items per positive (all ``[P, n]``).

    Attributes:
        items: sampled item ids (0 where invalid).
        valid: False where the space was empty for that request (weight the entry 0).
        slot: slot in the request's row of :attr:`Spaces.recalled` (-1 for C / random draws).
    """

    items: torch.Tensor
    valid: torch.Tensor
    slot: torch.Tensor


def _slot_of(recalled_rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``[E]`` slot of ``items [E]`` in ``recalled_rows [E, K]`` (-1 when absent)."""
    hit = recalled_rows == items.unsqueeze(1)
    return torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(items, -1))


def _first(mask: torch.Tensor) -> torch.Tensor:
    """``[R, K]`` column order that puts each row's True slots first (stable)."""
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)


def _padded_candidates(view: TrainingView, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(recalled, exposed, recall_prob, expose_prob)``, each ``[R, K]``: the logged candidates laid out one row per request."""
    cand = view.candidates
    n_req = len(view.requests)
    row = cand.row.to(device)
    order = torch.argsort(row, stable=True)
    row = row[order]
    counts = torch.bincount(row, minlength=n_req)
    k = int(counts.max()) if len(row) else 1
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(row), device=device) - start[row]

    def pad(values: torch.Tensor, fill: float | int | bool) -> torch.Tensor:
        out = torch.full((n_req, k), fill, dtype=values.dtype, device=device)
        out[row, slot] = values.to(device)[order]
        return out

    return (
        pad(cand.item_id.long(), -1),
        pad(cand.exposed.bool(), False),
        pad(cand.recall_prob.float(), 1.0),
        pad(cand.expose_prob.float(), 1.0),
    )


def build_spaces(view: TrainingView, label: Literal["clicked", "finished"], device: torch.device) -> Spaces:
    """Lay out the recalled sets, exposures and labels of ``view`` per request.

    Args:
        view: the training window (uses ``candidates``, ``impressions``, ``catalogue``).
        label: the impression field that marks a positive.
        device: where the tensors go.

    Returns:
        :class:`Spaces`. Exposures whose item is missing from the logged recalled set
        (impossible in the simulator's cascade) are dropped from the positives.
    """
    imp = view.impressions
    recalled, exposed, recall_prob, expose_prob = _padded_candidates(view, device)
    imp_row, imp_item = imp.row.to(device), imp.item_id.to(device).long()
    imp_slot = _slot_of(recalled[imp_row], imp_item)
    lab = getattr(imp, label).to(device).bool()
    found = imp_slot >= 0
    positive = torch.zeros_like(exposed)
    keep = found & lab
    positive[imp_row[keep], imp_slot[keep]] = True
    space_a = exposed & ~positive
    space_b = (recalled >= 0) & ~exposed
    return Spaces(
        recalled=recalled, exposed=exposed, positive=positive, recall_prob=recall_prob, expose_prob=expose_prob,
        a_slots=_first(space_a), n_a=space_a.sum(1), b_slots=_first(space_b), n_b=space_b.sum(1),
        live_ids=view.catalogue.live_ids().to(device),
        pos_row=imp_row[keep], pos_item=imp_item[keep], pos_slot=imp_slot[keep],
    )  # fmt: skip


def _uniform_index(counts: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[P, n]`` uniform integers in ``[0, counts[p])`` (0 where ``counts[p] == 0``)."""
    u = torch.rand(counts.shape[0], n, generator=gen).to(counts.device)
    return (u * counts.unsqueeze(1)).long().clamp(max=(counts - 1).clamp_min(0).unsqueeze(1))


def _from_slots(spaces: Spaces, rows: torch.Tensor, slots: torch.Tensor, counts: torch.Tensor, n: int, gen: torch.Generator) -> Draw:
    pick = slots[rows].gather(1, _uniform_index(counts[rows], n, gen))
    valid = (counts[rows] > 0).unsqueeze(1).expand(-1, n)
    items = spaces.recalled[rows].gather(1, pick).clamp_min(0)
    return Draw(items.masked_fill(~valid, 0), valid.clone(), pick.masked_fill(~valid, -1))


def sample_a(spaces: Spaces, rows: torch.Tensor, n: int, gen: torch.Generator) -> Draw:
    """``n`` space-A items per positive (uniform, with replacement) from the positive's request ``rows [P]``."""
    return _from_slots(spaces, rows, spaces.a_slots, spaces.n_a, n, gen)


def sample_b(spaces: Spaces, rows: torch.Tensor, n: int, gen: torch.Generator) -> Draw:
    """``n`` space-B items per positive (uniform, with replacement): recalled but not exposed in that request."""
    return _from_slots(spaces, rows, spaces.b_slots, spaces.n_b, n, gen)


def sample_c(spaces: Spaces, rows: torch.Tensor, n: int, gen: torch.Generator, tries: int = 4) -> Draw:
    """``n`` space-C items per positive: uniform over live items minus that request's recalled set.

    Rejection sampling for ``tries`` rounds (all rows at once); rows still holding
    a rejected draw are finished exactly by masking (multinomial over the allowed
    items). A request whose recalled set covers the whole live catalogue gets
    ``valid == False``.
    """
    live = spaces.live_ids
    p, m = rows.shape[0], live.shape[0]
    recalled = spaces.recalled[rows]  # [P, K]
    items = live[torch.randint(0, m, (p, n), generator=gen).to(live.device)]
    for _ in range(tries):
        bad = (items.unsqueeze(-1) == recalled.unsqueeze(1)).any(-1)
        if not bool(bad.any()):
            break
        fresh = live[torch.randint(0, m, (p, n), generator=gen).to(live.device)]
        items = torch.where(bad, fresh, items)
    bad = (items.unsqueeze(-1) == recalled.unsqueeze(1)).any(-1)
    valid = torch.ones_like(bad)
    if bool(bad.any()):
        rows_left = bad.any(1).nonzero().squeeze(1)
        allowed = ~(live.view(1, -1, 1) == recalled[rows_left].unsqueeze(1)).any(-1)  # [P', M]
        has = allowed.any(1)
        weights = allowed.float().cpu()
        weights[~has.cpu()] = 1.0
        exact = live[torch.multinomial(weights, n, replacement=True, generator=gen).to(live.device)]
        items[rows_left] = torch.where(bad[rows_left], exact, items[rows_left])
        valid[rows_left] = has.unsqueeze(1).expand(-1, n)
    return Draw(items.masked_fill(~valid, 0), valid, torch.full_like(items, -1))


def sample_random(spaces: Spaces, positives: torch.Tensor, n: int, gen: torch.Generator) -> Draw:
    """``n`` items per positive uniformly from the whole live catalogue (SS-ABC(random), YouTube-DNN).

    Accidental hits (a draw equal to the row's positive ``positives [P]``) are marked invalid.
    """
    live = spaces.live_ids
    items = live[torch.randint(0, live.shape[0], (positives.shape[0], n), generator=gen).to(live.device)]
    valid = items != positives.unsqueeze(1)
    return Draw(items, valid, torch.full_like(items, -1))
