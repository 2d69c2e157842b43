"""FIFO negative queues of CLRec (algorithms.md §10(c), §16.5): item ids, or cached embeddings.

- :class:`IdQueue`: a FIFO of item ids (the positives of previous batches). The queue is
  **never deduplicated**: a popular item sits in it as often as it was clicked, which is what
  makes the queue an implicit sampler ``∝ p_data(y)``. It may start full of uniformly random
  ids (CLRec's official code) or empty (Multi-CLRec's secondary queues); ``enqueue`` returns
  what fell off the front (Multi-CLRec pushes it into a secondary queue).
- :class:`EmbeddingQueue`: the cached variant: the same FIFO of ids plus the *detached*
  embeddings ``stopgrad(g(y))`` computed when they were enqueued (stale by up to |Q|/B steps).

Both are plain tensors (``state_dict`` / ``load_state_dict`` for exact resume); they draw
randomness only from a generator the caller passes.
"""

from __future__ import annotations

from typing import Any

import torch


class IdQueue:
    """FIFO of item ids, oldest first, at most ``capacity`` long, duplicates kept.

    Args:
        capacity: the maximum length ``|Q|``.
        device: where the ids live.
    """

    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.capacity = capacity
        self.ids = torch.empty(0, dtype=torch.int64, device=device)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def fill_random(self, candidates: torch.Tensor, gen: torch.Generator) -> None:
        """Fill the queue to capacity with ids drawn uniformly (with replacement) from ``candidates [n]``."""
        need = self.capacity - len(self)
        if need <= 0 or candidates.numel() == 0:
            return
        pick = torch.randint(0, candidates.numel(), (need,), generator=gen).to(candidates.device)
        self.ids = torch.cat([candidates[pick].to(self.ids.device), self.ids])  # the random fill is the oldest part

    def enqueue(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Append ``item_ids [b]`` (in order) at the back; return the ids dequeued from the front (oldest first)."""
        merged = torch.cat([self.ids, item_ids.reshape(-1).to(self.ids.device)])
        cut = max(0, merged.shape[0] - self.capacity)
        self.ids = merged[cut:]
        return merged[:cut]

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "ids": self.ids.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.ids = int(state["capacity"]), state["ids"].clone()


class EmbeddingQueue:
    """FIFO of ``(item id, detached embedding)`` pairs, oldest first, duplicates kept.

    Args:
        capacity: the maximum length ``|Q|``.
        dim: embedding size ``d``.
        device: where the tensors live.
    """

    def __init__(self, capacity: int, dim: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.capacity = capacity
        self.ids = torch.empty(0, dtype=torch.int64, device=device)
        self.embeddings = torch.empty(0, dim, device=device)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def enqueue(self, item_ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Append ids ``[b]`` and ``stopgrad(embeddings [b, d])``; return the dequeued ids."""
        ids = torch.cat([self.ids, item_ids.reshape(-1).to(self.ids.device)])
        emb = torch.cat([self.embeddings, embeddings.detach().to(self.embeddings.device, self.embeddings.dtype)])
        cut = max(0, ids.shape[0] - self.capacity)
        self.ids, self.embeddings = ids[cut:], emb[cut:]
        return ids[:cut]

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "ids": self.ids.clone(), "embeddings": self.embeddings.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.ids, self.embeddings = state["ids"].clone(), state["embeddings"].clone()
