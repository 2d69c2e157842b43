"""DAMCAR's target-domain generation (TDG, algorithms.md §5(c); paper §4.1) and its uniform control.

The exposures with engagement ``v_ui > 0`` (watch time) form a directed weighted bipartite graph,
``P(u -> i) = v_ui / Σ_i' v_ui'`` and ``P(i -> u) = v_ui / Σ_u' v_u'i`` (paper Eq. 1-2), stored as
two torch sparse CSR matrices. Every start user walks ``u -> i -> u' -> i' -> ...`` and goes back
to its start after ``radius`` hops (the restart). All walkers move at once: one vectorised step
draws the next node of every walker from the CSR rows by inverse-CDF sampling (``searchsorted``
on the cumulative edge weights), so there is no per-user Python loop.

Two readings of the walk length (FLAG §5(c)):

- ``code`` (the §5(c) DEFAULT; the public code): ``H`` independent walks of ``R`` hops each, i.e.
  ``H * R`` hops and ``H * ceil(R / 2)`` item visits per user.
- ``paper`` (paper §4.1): "when the next hop exceeds the radius R, the process returns to the
  starting node u ... until H visits are completed": ``H`` hops in all, restarting every ``R``.

On a sparse exposure graph the selection rule below, not the walk length, sets the target size: the
first hop of every walk lands on one of ``u``'s own engaged items, so those items collect about
``H / deg(u)`` visits each and few never-exposed items reach that mean (the sensitivity over ``R``,
``H`` and the mode is on docs/results/damcar.md).

``T(u, i)`` counts the visits of item ``i`` by ``u``'s walker. With ``I_u`` the visited items that
were ever exposed to ``u`` (any logged exposure, engaged or not: the spec's DEFAULT, not the code's
"graph neighbour"), the target domain keeps the visited, never-exposed, live items with
``T(u, i*) >= mean_{i in I_u} T(u, i)`` (paper Eq. 3 uses ``>=``; the code ``>``); a user with an
empty ``I_u`` contributes nothing.

:func:`uniform_unexposed` is the control ("w/o TDG", and the ``S_un`` of TL / AR / MUDA, §4): the
same number of pairs per user, drawn uniformly from the live never-exposed items.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class WalkGraph:
    """Transition matrices of the exposure graph (CSR; rows sum to 1 where a node has edges).

    Attributes:
        user_to_item: ``[N, M]`` ``P(u -> i)``.
        item_to_user: ``[M, N]`` ``P(i -> u)``.
    """

    user_to_item: torch.Tensor
    item_to_user: torch.Tensor


def _transition(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor, n_src: int, n_dst: int) -> torch.Tensor:
    """Row-normalised ``[n_src, n_dst]`` CSR matrix of the summed weights ``w`` on edges ``src -> dst``."""
    m = torch.sparse_coo_tensor(torch.stack([src, dst]), w.double(), (n_src, n_dst), check_invariants=False).coalesce()
    rows, vals = m.indices()[0], m.values()
    totals = torch.zeros(n_src, dtype=torch.float64, device=w.device).index_add_(0, rows, vals)
    p = torch.sparse_coo_tensor(m.indices(), vals / totals[rows], (n_src, n_dst), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; only its index arrays are read here
        warnings.simplefilter("ignore", UserWarning)
        return p.to_sparse_csr()


def exposure_graph(users: torch.Tensor, items: torch.Tensor, weight: torch.Tensor, n_users: int, n_items: int) -> WalkGraph:
    """The directed weighted bipartite graph of the exposures with ``weight > 0`` (paper Eq. 1-2).

    Args:
        users, items: ``[E] int64`` the exposure pairs (repeats are summed).
        weight: ``[E]`` engagement ``v_ui`` (watch time); pairs with ``v <= 0`` are not edges.
        n_users, n_items: id capacities.
    """
    keep = weight > 0
    u, i, w = users[keep], items[keep], weight[keep]
    return WalkGraph(_transition(u, i, w, n_users, n_items), _transition(i, u, w, n_items, n_users))


def _step(p: torch.Tensor, nodes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One hop of every walker: the next node drawn from row ``nodes`` of the CSR matrix ``p``.

    Inverse-CDF on the global cumulative sum of the CSR values: a row's draw lands in its own
    ``[crow[n], crow[n+1])`` slice (clamped against rounding). Rows must be non-empty.
    """
    crow, col, val = p.crow_indices(), p.col_indices(), p.values()
    cum = torch.cumsum(val, 0)
    lo, hi = crow[nodes], crow[nodes + 1]
    base = torch.where(lo > 0, cum[(lo - 1).clamp_min(0)], torch.zeros_like(cum[lo]))
    u = torch.rand(nodes.shape, generator=gen, dtype=torch.float64).to(cum.device)
    target = base + u * (cum[hi - 1] - base)
    pos = torch.searchsorted(cum, target, right=True)
    return col[torch.minimum(torch.maximum(pos, lo), hi - 1)]


def visit_counts(
    graph: WalkGraph, starts: torch.Tensor, radius: int, visits: int, mode: Literal["paper", "code"], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the restarting walks from every user in ``starts`` at once and count item visits.

    Args:
        graph: the exposure graph.
        starts: ``[S] int64`` start users (each must have at least one edge).
        radius: ``R``, hops before returning to the start user.
        visits: ``H`` (``paper``: hops in all; ``code``: walks of ``R`` hops).
        mode: ``paper`` or ``code`` (module docstring).
        gen: CPU generator.

    Returns:
        ``(user [P], item [P], count [P])``: the distinct visited (start user, item) pairs and ``T(u, i)``.
    """
    n_items = graph.user_to_item.shape[1]
    hops = visits if mode == "paper" else visits * radius
    node = starts.clone()
    seen: list[torch.Tensor] = []
    for hop in range(hops):
        if hop % radius == 0:
            node = starts.clone()  # restart (a fresh walk)
        at_user = (hop % radius) % 2 == 0
        node = _step(graph.user_to_item if at_user else graph.item_to_user, node, gen)
        if at_user:  # landed on an item
            seen.append(starts * n_items + node)
    if not seen:
        empty = torch.zeros(0, dtype=torch.int64, device=starts.device)
        return empty, empty, empty
    keys, counts = torch.unique(torch.cat(seen), return_counts=True)
    return keys // n_items, keys % n_items, counts


def hard_unexposed(
    user: torch.Tensor, item: torch.Tensor, count: torch.Tensor, exposed_keys: torch.Tensor, live: torch.Tensor, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper Eq. 3: visited never-exposed live items visited at least as often as the user's mean exposed item.

    Args:
        user, item, count: output of :func:`visit_counts`.
        exposed_keys: ``[X] int64`` sorted unique ``u * n_items + i`` of every logged exposure.
        live: ``[M] bool`` live items.
        n_items: item id capacity.

    Returns:
        ``(user [S], item [S])`` the target-domain pairs, sorted by (user, item).
    """
    exposed = _member(user * n_items + item, exposed_keys)
    n_users = int(user.max()) + 1 if len(user) else 0
    zeros = torch.zeros(n_users, dtype=torch.float64, device=user.device)
    tot = zeros.index_add(0, user[exposed], count[exposed].double())
    num = zeros.index_add(0, user[exposed], torch.ones_like(count[exposed], dtype=torch.float64))
    mean = tot / num.clamp_min(1)
    keep = ~exposed & live[item] & (num[user] > 0) & (count.double() >= mean[user])
    return user[keep], item[keep]


def _member(keys: torch.Tensor, sorted_keys: torch.Tensor) -> torch.Tensor:
    """``[n] bool``: ``keys`` found in the sorted ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp_max(len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def uniform_unexposed(
    per_user: torch.Tensor, exposed_keys: torch.Tensor, live: torch.Tensor, gen: torch.Generator, tries: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_user[u]`` live items per user drawn uniformly (with replacement) among ``u``'s never-exposed ones.

    Draws that hit an exposed pair are redrawn up to ``tries`` times, then dropped.

    Args:
        per_user: ``[N] int64`` how many pairs each user gets.
        exposed_keys: sorted unique ``u * n_items + i`` of every logged exposure.
        live: ``[M] bool`` live items (``M = n_items``).
        gen: CPU generator.

    Returns:
        ``(user [S], item [S])``.
    """
    n_items = live.shape[0]
    live_ids = live.nonzero().squeeze(1)
    user = torch.repeat_interleave(torch.arange(len(per_user), device=per_user.device), per_user)
    item = torch.full_like(user, -1)
    todo = torch.ones_like(user, dtype=torch.bool)
    for _ in range(tries):
        idx = todo.nonzero().squeeze(1)
        if len(idx) == 0 or len(live_ids) == 0:
            break
        draw = live_ids[torch.randint(len(live_ids), (len(idx),), generator=gen).to(live_ids.device)]
        ok = ~_member(user[idx] * n_items + draw, exposed_keys)
        item[idx[ok]] = draw[ok]
        todo[idx[ok]] = False
    keep = item >= 0
    return user[keep], item[keep]
