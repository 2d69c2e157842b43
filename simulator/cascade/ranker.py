"""The platform's learned ranker: the ranking stage of the cascade, retrained on exposures each round.

:class:`PlatformRanker` owns a DeepFM or DCN click model (see :mod:`simulator.cascade.ranker_models`),
its Adam optimiser, a snapshot ``version`` and the catalogue it scores against. It sees only
observable features (it never imports :mod:`simulator.world` or :mod:`simulator.metrics`) and
learns from the logged impressions of a :class:`~simulator.log.view.TrainingView`, warm-started
from the previous round like a real platform. :meth:`PlatformRanker.frozen` hands out
:class:`FrozenRanker` snapshots that satisfy :class:`~simulator.log.view.FrozenScorer`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from simulator.cascade.ranker_models import DCN, MODELS, REQUEST_SPARSE, ClickModel, DeepFM, FieldSizes, RankerFeatures
from simulator.cascade.ranker_registry import ranker_kinds, register_ranker, registered_factory
from simulator.config import Scenario
from simulator.log.view import TrainingView
from simulator.nn import check_finite, minibatches
from simulator.rng import stream_seed, torch_stream
from simulator.types import Catalogue, RequestBatch

__all__ = ["DCN", "DeepFM", "FrozenRanker", "PlatformRanker", "RankerFeatures", "make_ranker", "ranker_kinds", "register_ranker"]

BLOCK_PAIRS = 1 << 16  # (request, item) pairs scored per forward pass


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def _score_blocks(
    module: ClickModel, catalogue: Catalogue | None, requests: RequestBatch, item_ids: torch.Tensor, block_pairs: int
) -> torch.Tensor:
    """``[B, K] float32`` click probabilities of ``item_ids [B, K]``, in blocks of requests.

    Ids < 0 (padding) score 0. The result is on ``item_ids``' device.
    """
    if catalogue is None:
        raise RuntimeError("ranker: no catalogue to score against; call set_catalogue(catalogue) first")
    device = _module_device(module)
    n, k = item_ids.shape
    out = torch.zeros(n, k, dtype=torch.float32, device=device)
    if n == 0 or k == 0:
        return out.to(item_ids.device)
    requests, ids = requests.to(device), item_ids.to(device)
    step = max(1, block_pairs // k)
    popularity = catalogue.popularity_features()  # once per call, not once per block
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        block = requests.select(torch.arange(rows.start, rows.stop, device=device))
        feats = RankerFeatures.build(block, ids[rows], catalogue, popularity=popularity)
        out[rows] = torch.sigmoid(module(feats)).float()
    return out.masked_fill_(ids < 0, 0.0).to(item_ids.device)


class SplitAdam:
    """Adam for dense parameters, SparseAdam for the sparse-gradient id tables, stepped together."""

    def __init__(self, module: nn.Module, lr: float) -> None:
        sparse_ids = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse}
        sparse = [p for p in module.parameters() if id(p) in sparse_ids]
        dense = [p for p in module.parameters() if id(p) not in sparse_ids]
        self.optimizers = [torch.optim.Adam(dense, lr=lr, foreach=True)] + ([torch.optim.SparseAdam(sparse, lr=lr)] if sparse else [])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        for opt, st in zip(self.optimizers, state, strict=True):
            opt.load_state_dict(st)


class FrozenRanker:
    """A read-only ranker snapshot (eval mode, no gradients); satisfies ``FrozenScorer``.

    Attributes:
        version: the :class:`PlatformRanker` version it was taken at.
        kind: ``"deepfm"`` or ``"dcn"``.
    """

    def __init__(self, module: ClickModel, version: int, kind: str, catalogue: Catalogue | None, block_pairs: int) -> None:
        self.module = module.eval().requires_grad_(False)
        self.version = version
        self.kind = kind
        self.catalogue = catalogue
        self.block_pairs = block_pairs

    def set_catalogue(self, catalogue: Catalogue) -> None:
        """Score against ``catalogue`` (moved to the snapshot's device) from now on."""
        self.catalogue = catalogue.to(_module_device(self.module))

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` click probabilities of ``item_ids [B, K]`` for ``requests [B]``."""
        return _score_blocks(self.module, self.catalogue, requests, item_ids, self.block_pairs)

    @torch.no_grad()
    def representations(self, requests: RequestBatch, item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The snapshot's request and item representations (an entire-space teacher, e.g. for ECAT's KD).

        The sums of its request-side field embeddings ``[B, D]`` and of its item-side ones ``[B, K, D]``
        (their inner product is the FM cross term between the two sides), on ``item_ids``' device.
        """
        if self.catalogue is None:
            raise RuntimeError("ranker: no catalogue to score against; call set_catalogue(catalogue) first")
        device = _module_device(self.module)
        ids = item_ids.to(device)
        e = self.module.fields(RankerFeatures.build(requests.to(device), ids, self.catalogue))
        n_req = len(REQUEST_SPARSE) + 2  # + profile, history
        return e[:, 0, :n_req].sum(1).to(item_ids.device), e[:, :, n_req:].sum(2).to(item_ids.device)


class PlatformRanker:
    """The platform's DeepFM / DCN ranker, trained with BCE on logged clicks.

    Attributes:
        kind: ``"deepfm"`` or ``"dcn"``.
        module: the click model (logits).
        optimizer: Adam over the dense parameters and SparseAdam over the id tables (kept across fits: warm start).
        version: incremented by every :meth:`fit`; starts at 0.
        catalogue: the catalogue :meth:`score` reads item features from.
        block_pairs: (request, item) pairs per forward pass when scoring.
    """

    def __init__(self, kind: str, n_users: int, n_items: int, n_categories: int, n_creators: int, profile_dim: int, modality_dim: int,
                 dim: int, lr: float, batch_size: int, epochs: int, seed: int, device: torch.device | str = "cpu",
                 block_pairs: int = BLOCK_PAIRS) -> None:  # fmt: skip
        """Build the model with weights drawn from the ``"ranker_init"`` stream of ``seed``.

        Args:
            kind: ``"deepfm"`` or ``"dcn"``.
            n_users, n_items: user / item id capacities (embedding table sizes).
            n_categories, n_creators: category / creator id counts.
            profile_dim, modality_dim: ``D_p`` and ``D_m``.
            dim: field embedding size ``D``.
            lr, batch_size, epochs: Adam learning rate, minibatch size, epochs per :meth:`fit`.
            seed: root seed (initialisation and shuffling streams).
            device: where the model lives and computes.
            block_pairs: (request, item) pairs per forward pass when scoring.
        """
        if kind not in MODELS:
            raise ValueError(f"ranker: kind must be one of {sorted(MODELS)}, got {kind!r}")
        self.kind, self.seed, self.device = kind, int(seed), torch.device(device)
        self.batch_size, self.epochs, self.block_pairs = int(batch_size), int(epochs), int(block_pairs)
        sizes = FieldSizes(n_users, n_items, n_categories, n_creators, profile_dim, modality_dim, dim)
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the global RNG untouched
            torch.manual_seed(stream_seed(self.seed, "ranker_init"))
            module = MODELS[kind](sizes)
        self.module: ClickModel = module.to(self.device)
        self.optimizer = SplitAdam(self.module, lr)
        self.version = 0
        self.catalogue: Catalogue | None = None

    def set_catalogue(self, catalogue: Catalogue) -> None:
        """Score against ``catalogue`` (moved to the ranker's device) from now on."""
        self.catalogue = catalogue.to(self.device)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` click probabilities of ``item_ids [B, K]`` for ``requests [B]``.

        No gradients, eval mode, computed in blocks of ``block_pairs // K`` requests; ids < 0 score 0.
        """
        self.module.eval()
        return _score_blocks(self.module, self.catalogue, requests, item_ids, self.block_pairs)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started BCE on the window's impressions for ``epochs`` epochs; bumps ``version``.

        Each impression is scored with its own request context and item features from
        ``view.catalogue``; shuffling comes from the ``("ranker", view.round)`` stream.

        Returns:
            ``{"ranker_loss": mean BCE of the last epoch}`` (NaN when nothing was trained).
        """
        self.version += 1
        imp = view.impressions
        n = len(imp)
        if n == 0 or self.epochs == 0:
            return {"ranker_loss": float("nan")}
        dev = self.device
        requests, catalogue = view.requests.to(dev), view.catalogue.to(dev)
        rows, items = imp.row.to(dev), imp.item_id.to(dev)
        labels, req_round = imp.clicked.to(dev).float(), view.request_round.to(dev)
        gen = torch_stream(self.seed, "ranker", view.round)
        popularity = catalogue.popularity_features()  # the view's catalogue is fixed for the fit
        self.module.train()
        total = torch.zeros((), device=dev)
        for _ in range(self.epochs):
            total = torch.zeros((), device=dev)
            for idx in minibatches(n, self.batch_size, gen, dev):
                r = rows[idx]
                feats = RankerFeatures.build(requests.select(r), items[idx].unsqueeze(1), catalogue, req_round[r], popularity)
                loss = F.binary_cross_entropy_with_logits(self.module(feats).squeeze(1), labels[idx])
                check_finite(loss, "ranker")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += loss.detach() * idx.numel()
        self.module.eval()
        return {"ranker_loss": float(total / n)}

    def frozen(self) -> FrozenRanker:
        """An independent deep copy in eval mode (shares the current catalogue reference)."""
        return FrozenRanker(copy.deepcopy(self.module), self.version, self.kind, self.catalogue, self.block_pairs)

    def state_dict(self) -> dict[str, Any]:
        """An independent copy of module, optimiser and version (safe to keep in memory)."""
        return copy.deepcopy(
            {
                "kind": self.kind,
                "module": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "version": self.version,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore module, optimiser and version from :meth:`state_dict`."""
        if state.get("kind", self.kind) != self.kind:
            raise ValueError(f"ranker: state is for kind {state['kind']!r}, this ranker is {self.kind!r}")
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])


def make_ranker(kind: str, sc: Scenario, seed: int, device: torch.device | str = "cpu") -> Any:
    """The platform ranker ``kind`` sized from scenario ``sc``: a :class:`PlatformRanker` for ``"deepfm"`` /
    ``"dcn"``, else the registered factory's ranker."""
    factory = registered_factory(kind)
    if factory is not None:
        return factory(sc, int(seed), torch.device(device))
    if kind not in MODELS:
        known = sorted(MODELS) + ranker_kinds()[3:]
        raise ValueError(f"make_ranker: kind must be one of {known} (noisy-oracle is built elsewhere), got {kind!r}")
    return PlatformRanker(
        kind=kind,
        n_users=sc.user_capacity,
        n_items=sc.item_capacity,
        n_categories=sc.world.n_categories,
        n_creators=sc.world.n_creators,
        profile_dim=sc.features.profile_dim,
        modality_dim=sc.features.modality_dim,
        dim=sc.cascade.ranker_dim,
        lr=sc.training.lr,
        batch_size=sc.training.batch_size,
        epochs=sc.cascade.ranker_epochs,
        seed=seed,
        device=device,
    )
