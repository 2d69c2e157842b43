"""Click models of the platform ranker: observable input fields, shared field embeddings, DeepFM and DCN.

Shapes: ``B`` requests, ``K`` items per request, ``F`` fields, ``D`` field embedding size,
``L`` history length, ``D_p`` profile size, ``D_m`` size of one modality vector.
Only observable records (:mod:`simulator.types`) enter here; nothing reads the world.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from simulator.nn import mean_history_embedding, mlp
from simulator.types import Catalogue, RequestBatch

N_POP_BUCKETS = 16  # floor(log2(1 + clicks)) clamped to 0..15
N_AGE_BUCKETS = 8  # floor(log2(1 + age in rounds)) clamped to 0..7
REQUEST_SPARSE = ("user", "request_domain", "entry")
ITEM_SPARSE = ("item", "category", "creator", "item_domain", "promoted", "popularity_bucket", "age_bucket")
N_FIELDS = len(REQUEST_SPARSE) + 2 + len(ITEM_SPARSE) + 2  # + profile, history, modality, popularity


def _item_sparse(ids: torch.Tensor, catalogue: Catalogue, request_round: torch.Tensor) -> torch.Tensor:
    """``[B, K, 7]`` the item's id fields and its popularity and age buckets (log2 scale)."""
    age = (request_round.unsqueeze(1) - catalogue.born_round[ids]).clamp_min(0).float()
    clicks = catalogue.clicks[ids].clamp_min(0.0)
    fields = [ids, catalogue.category[ids], catalogue.creator[ids], catalogue.domain[ids], catalogue.promoted[ids].long(),
              torch.log2(1.0 + clicks).floor().long().clamp(0, N_POP_BUCKETS - 1),
              torch.log2(1.0 + age).floor().long().clamp(0, N_AGE_BUCKETS - 1)]  # fmt: skip
    return torch.stack(fields, dim=-1)


@dataclass(frozen=True)
class RankerFeatures:
    """Raw observable inputs for scoring ``K`` items for each of ``B`` requests.

    Per-request inputs are kept at ``[B, ...]`` and broadcast over ``K`` only after embedding.

    Attributes:
        request_sparse: ``[B, 3] int64`` user id, request domain, entry.
        item_sparse: ``[B, K, 7] int64`` item id, category, creator, item domain, promoted,
            popularity bucket, age bucket.
        profile: ``[B, D_p] float32`` user profile at request time.
        history: ``[B, L] int64`` click history, -1 padded.
        modality: ``[B, K, 3 * D_m] float32`` the three modality vectors, flattened.
        popularity: ``[B, K, 3] float32`` :meth:`Catalogue.popularity_features` of each item.
    """

    request_sparse: torch.Tensor
    item_sparse: torch.Tensor
    profile: torch.Tensor
    history: torch.Tensor
    modality: torch.Tensor
    popularity: torch.Tensor

    @classmethod
    def build(
        cls,
        requests: RequestBatch,
        item_ids: torch.Tensor,
        catalogue: Catalogue,
        request_round: torch.Tensor | None = None,
        popularity: torch.Tensor | None = None,
    ) -> RankerFeatures:
        """Gather the observable fields of ``item_ids [B, K]`` (-1 ids read item 0) for ``requests [B]``.

        Args:
            requests: the ``B`` requests.
            item_ids: ``[B, K] int64`` items to score per request.
            catalogue: observable item features indexed by item id.
            request_round: optional ``[B] int64`` round of each request (for the item age);
                defaults to ``requests.round`` for all.
            popularity: ``catalogue.popularity_features()`` if the caller has it already (blocks of one catalogue).
        """
        ids = item_ids.clamp_min(0)
        if request_round is None:
            request_round = torch.full_like(requests.user_id, int(requests.round))
        return cls(
            request_sparse=torch.stack([requests.user_id, requests.domain, requests.entry], dim=1),
            item_sparse=_item_sparse(ids, catalogue, request_round),
            profile=requests.profile.float(),
            history=requests.history,
            modality=catalogue.modality[ids].flatten(-2).float(),
            popularity=(catalogue.popularity_features() if popularity is None else popularity)[ids],
        )


@dataclass(frozen=True)
class FieldSizes:
    """Id-space cardinalities and vector sizes that fix the embedding tables."""

    n_users: int
    n_items: int
    n_categories: int
    n_creators: int
    profile_dim: int
    modality_dim: int
    dim: int


SPARSE_TABLES = ("user", "item", "creator")


class FieldEmbedding(nn.Module):
    """Every field to one ``D``-dim embedding: sparse ids by table, dense vectors by a Linear.

    The history field is the mean embedding of the history items in the item-id table.
    Field order: user, request domain, entry, profile, history, item, category, creator,
    item domain, promoted, popularity bucket, age bucket, modality, popularity.
    """

    def __init__(self, sizes: FieldSizes, init_std: float = 0.05) -> None:
        super().__init__()
        cards = {
            "user": sizes.n_users,
            "request_domain": 2,
            "entry": 3,
            "item": sizes.n_items,
            "category": sizes.n_categories,
            "creator": sizes.n_creators,
            "item_domain": 2,
            "promoted": 2,
            "popularity_bucket": N_POP_BUCKETS,
            "age_bucket": N_AGE_BUCKETS,
        }
        # id tables grow with the catalogue and the user base: sparse gradients keep a step O(batch), not O(table)
        self.tables = nn.ModuleDict({name: nn.Embedding(n, sizes.dim, sparse=name in SPARSE_TABLES) for name, n in cards.items()})
        for table in self.tables.values():
            nn.init.normal_(cast(nn.Embedding, table).weight, std=init_std)
        self.profile = nn.Linear(sizes.profile_dim, sizes.dim)
        self.modality = nn.Linear(3 * sizes.modality_dim, sizes.dim)
        self.popularity = nn.Linear(3, sizes.dim)
        self.n_fields = N_FIELDS
        self.dim = sizes.dim

    def forward(self, x: RankerFeatures) -> torch.Tensor:
        """``[B, K, F, D]`` field embeddings of ``x``."""
        b, k = x.item_sparse.shape[:2]
        req = [self.tables[name](x.request_sparse[:, j]) for j, name in enumerate(REQUEST_SPARSE)]
        req += [self.profile(x.profile), mean_history_embedding(cast(nn.Embedding, self.tables["item"]), x.history)]
        item = [self.tables[name](x.item_sparse[..., j]) for j, name in enumerate(ITEM_SPARSE)]
        item += [self.modality(x.modality), self.popularity(x.popularity)]
        if not torch.is_grad_enabled():  # scoring: write each field once into the output (the same values, one copy fewer)
            return _fill_fields(req, item, b, k)
        req_e = torch.stack(req, dim=1).unsqueeze(1).expand(b, k, -1, -1)  # [B, K, 5, D]
        return torch.cat([req_e, torch.stack(item, dim=2)], dim=2)


def _fill_fields(req: list[torch.Tensor], item: list[torch.Tensor], b: int, k: int) -> torch.Tensor:
    """``[B, K, F, D]``: the request fields ``[B, D]`` broadcast over ``K``, then the item fields ``[B, K, D]``."""
    first = item[0]
    e = torch.empty(b, k, len(req) + len(item), first.shape[-1], dtype=first.dtype, device=first.device)
    e[:, :, : len(req)] = torch.stack(req, dim=1).unsqueeze(1)
    for j, field in enumerate(item):
        e[:, :, len(req) + j] = field
    return e


def fm_second_order(e: torch.Tensor) -> torch.Tensor:
    """FM pairwise term ``sum_{f<g} <e_f, e_g>`` of ``e [..., F, D]`` as ``[...]``.

    Computed as ``0.5 * ((sum_f e_f)^2 - sum_f e_f^2)`` summed over ``D``.
    """
    s = e.sum(dim=-2)
    return 0.5 * (s.pow(2) - e.pow(2).sum(dim=-2)).sum(dim=-1)


class ClickModel(nn.Module):
    """Shared shell: field embeddings, then a model-specific head on ``[B, K, F, D]``."""

    def __init__(self, sizes: FieldSizes) -> None:
        super().__init__()
        self.fields = FieldEmbedding(sizes)
        self.flat_dim = N_FIELDS * sizes.dim

    def head(self, e: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` logits from field embeddings ``e [B, K, F, D]``."""
        raise NotImplementedError

    def forward(self, x: RankerFeatures) -> torch.Tensor:
        """``[B, K]`` click logits of ``x``."""
        return self.head(self.fields(x))


class DeepFM(ClickModel):
    """DeepFM: first order + FM second order + DNN, all on the shared field embeddings.

    The first-order term is ``b + sum_f <w_f, e_f>`` (a scalar per id for sparse fields, a
    linear map of the raw vector for dense fields).
    """

    def __init__(self, sizes: FieldSizes, hidden: tuple[int, ...] = (128, 64)) -> None:
        super().__init__(sizes)
        self.first_order = nn.Parameter(torch.zeros(N_FIELDS, sizes.dim))
        self.bias = nn.Parameter(torch.zeros(()))
        self.dnn = mlp([self.flat_dim, *hidden, 1])

    def head(self, e: torch.Tensor) -> torch.Tensor:
        first = (e * self.first_order).sum(dim=(-2, -1)) + self.bias
        return first + fm_second_order(e) + self.dnn(e.flatten(-2)).squeeze(-1)


class DCN(ClickModel):
    """Deep & Cross Network: ``x_{l+1} = x_0 (x_l^T w_l) + b_l + x_l`` beside a DNN, then a linear head."""

    def __init__(self, sizes: FieldSizes, n_cross: int = 2, hidden: tuple[int, ...] = (128, 64)) -> None:
        super().__init__(sizes)
        self.cross_w = nn.Parameter(torch.randn(n_cross, self.flat_dim) / self.flat_dim**0.5)
        self.cross_b = nn.Parameter(torch.zeros(n_cross, self.flat_dim))
        self.dnn = mlp([self.flat_dim, *hidden], last_activation=True)
        self.out = nn.Linear(self.flat_dim + hidden[-1], 1)

    def cross(self, x0: torch.Tensor) -> torch.Tensor:
        """``[..., F*D]`` output of the cross network on ``x0 [..., F*D]``."""
        x = x0
        for w, b in zip(self.cross_w, self.cross_b, strict=True):
            x = torch.addcmul(x, x0, (x @ w).unsqueeze(-1)).add_(b)  # x0 (x^T w) + b + x, fewer passes
        return x

    def head(self, e: torch.Tensor) -> torch.Tensor:
        x0 = e.flatten(-2)
        w = self.out.weight[0]  # linear(concat(cross, deep)) without materialising the concat
        return self.cross(x0) @ w[: self.flat_dim] + self.dnn(x0) @ w[self.flat_dim :] + self.out.bias[0]


MODELS: dict[str, type[ClickModel]] = {"deepfm": DeepFM, "dcn": DCN}
