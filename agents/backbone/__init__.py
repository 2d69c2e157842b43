"""Shared parts of the learned retrieval agents, written once.

- :mod:`agents.backbone.two_tower`: the DSSM / YouTube-DNN two-tower model
  (:class:`TwoTower`, :class:`TowerConfig`) with cosine or dot logits.
- :mod:`agents.backbone.index`: exact top-k over the live catalogue in blocks
  (:class:`ItemIndex`, :func:`blocked_topk`).
- :mod:`agents.backbone.retriever`: :class:`TwoTowerRetriever`, the serving
  half (index / retrieve / score / weights) an agent composes.
- :mod:`agents.backbone.training`: per-exposure tensors, optimisers, the
  seeded minibatch epoch loop.
- :mod:`agents.backbone.softmax`: the sampled-softmax loss (logQ, masks, weights)
  shared by YouTube-DNN, sampled softmax, CLRec and IPW.
- :mod:`agents.backbone.weighting`: clipped, detached, self-normalised inverse
  propensity weights and their logged quantiles.
"""

from agents.backbone.index import ItemIndex, blocked_topk, check_k
from agents.backbone.retriever import TwoTowerRetriever
from agents.backbone.training import Exposures, check_ranges, exposure_data, fit_generator, make_optimiser, run_epochs
from agents.backbone.two_tower import TowerConfig, TwoTower, evaluating, init_parameters

__all__ = [
    "Exposures", "ItemIndex", "TowerConfig", "TwoTower", "TwoTowerRetriever", "blocked_topk", "check_k",
    "check_ranges", "evaluating", "exposure_data", "fit_generator", "init_parameters", "make_optimiser", "run_epochs",
]  # fmt: skip
