"""Exact top-k over the live catalogue, in blocks of users.

A users x items score matrix is never materialised beyond one block of
``rows x M_live`` entries (rows <= ``block_users`` and rows x M_live <=
``MAX_BLOCK_ELEMENTS``). The same code runs on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from simulator.types import Catalogue

MAX_BLOCK_ELEMENTS = 1 << 25  # ~32M scores (128 MiB of float32) per block


def check_k(k: int, n_live: int, who: str) -> None:
    """Raise ``ValueError`` unless ``1 <= k <= n_live``."""
    if not 1 <= k <= n_live:
        raise ValueError(f"{who}: k must be in [1, live items = {n_live}], got {k}")


def block_rows(n_items: int, block_users: int) -> int:
    """Rows per block so that one block holds at most ``MAX_BLOCK_ELEMENTS`` scores."""
    return max(1, min(block_users, MAX_BLOCK_ELEMENTS // max(n_items, 1)))


def blocked_topk(
    n_rows: int, k: int, rows: int, block_scores: Callable[[int, int], torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-``k`` of a score matrix produced one block of rows at a time.

    Args:
        n_rows: number of rows ``B`` (requests).
        k: entries kept per row.
        rows: rows per block.
        block_scores: ``(start, stop) -> [stop - start, M]`` scores of those rows
            (any dtype ``torch.topk`` supports).
        device: where the empty result lives when ``n_rows == 0``.

    Returns:
        ``(columns [B, k] int64, values [B, k])``, values descending along each row.
    """
    if n_rows == 0:
        return torch.empty((0, k), dtype=torch.int64, device=device), torch.empty((0, k), device=device)
    cols, vals = [], []
    for start in range(0, n_rows, rows):
        top = torch.topk(block_scores(start, min(start + rows, n_rows)), k, dim=1, largest=True, sorted=True)
        cols.append(top.indices)
        vals.append(top.values)
    return torch.cat(cols), torch.cat(vals)


@dataclass(frozen=True)
class ItemIndex:
    """Item embeddings of the live catalogue, frozen at index time.

    Attributes:
        item_ids: ``[M_live] int64`` live item ids, ascending.
        embeddings: ``[M_live, d] float32`` (already L2-normalised for cosine scoring).
        scale: logit scale: score = ``scale * <query, embedding>``.
        block_users: maximum users per top-k block.
    """

    item_ids: torch.Tensor
    embeddings: torch.Tensor
    scale: float
    block_users: int = 1024

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def topk(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` items for ``queries [B, d]`` -> ``(item_ids [B, k] int64, scores [B, k] float32)``."""
        rows = block_rows(len(self), self.block_users)
        cols, vals = blocked_topk(
            queries.shape[0], k, rows, lambda a, b: (queries[a:b] @ self.embeddings.T).mul_(self.scale), queries.device
        )
        return self.item_ids[cols], vals.float()

    def lookup(self, item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indexed embeddings of ``item_ids [*]``.

        Returns:
            ``(embeddings [*, d], found [*] bool)``; rows of items not in the index are zero.
        """
        if len(self) == 0:
            zeros = torch.zeros((*item_ids.shape, self.embeddings.shape[1]), device=item_ids.device)
            return zeros, torch.zeros(item_ids.shape, dtype=torch.bool, device=item_ids.device)
        pos = torch.searchsorted(self.item_ids, item_ids.contiguous()).clamp_max(len(self) - 1)
        found = self.item_ids[pos] == item_ids
        emb = self.embeddings[pos] * found.unsqueeze(-1).to(self.embeddings.dtype)
        return emb, found


class IndexedServing:
    """The item index a retriever serves from and the catalogue it was built on (a base class).

    ``index(catalogue)`` sets both; a weight update makes them stale, so ``invalidate()`` forgets the
    index and serving before the next ``index()`` is a clear error rather than stale scores.
    """

    name: str

    def __init__(self) -> None:
        self._index: ItemIndex | None = None
        self._catalogue: Catalogue | None = None

    def invalidate(self) -> None:
        """Forget the index (call after any weight update)."""
        self._index = None

    def _indexed(self) -> tuple[ItemIndex, Catalogue]:
        """The index and its catalogue; ``RuntimeError`` before ``index()`` or after ``invalidate()``."""
        if self._index is None or self._catalogue is None:
            raise RuntimeError(f"{self.name}: no index; call index(catalogue) after construction, fit or load_state_dict")
        return self._index, self._catalogue
