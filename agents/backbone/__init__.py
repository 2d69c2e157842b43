"""Shared parts of the learned retrieval agents, written once; no module here imports a method.

Methods compose a core (has-a, not is-a) and keep their own config, losses and ``fit``:

- :mod:`agents.backbone.exposure`: :class:`ExposureCore`, the two tower with its optimiser, extra
  modules and a pair trainer (BC, KD, TL, AR, MUDA, DAMCAR);
- :mod:`agents.backbone.sequence_core`: :class:`SequenceCore`, the CLRec sequence encoder with its
  optimiser (sampled softmax, CLRec, IPW);
- :mod:`agents.backbone.gmm`: :class:`GMMCore`, the GMM two tower with UMA²'s negative sampler
  (the sampling strategies, YouTube-DNN, UMA²);
- :mod:`agents.backbone.unexposed`: the unexposed pair sets and the teacher scores (KD ... DAMCAR).

The parts they are built from:

- :mod:`agents.backbone.two_tower`: the DSSM / YouTube-DNN two-tower model
  (:class:`TwoTower`, :class:`TowerConfig`) with cosine or dot logits.
- :mod:`agents.backbone.index`: exact top-k over the live catalogue in blocks
  (:class:`ItemIndex`, :func:`blocked_topk`).
- :mod:`agents.backbone.retriever`: :class:`TwoTowerRetriever`, the serving
  half (index / retrieve / score / weights) an agent composes.
- :mod:`agents.backbone.training`: per-exposure tensors, :class:`TrainConfig`,
  optimisers, the seeded minibatch epoch loop.
- :mod:`agents.backbone.softmax`: the sampled-softmax loss (logQ, masks, weights)
  shared by YouTube-DNN, sampled softmax, CLRec and IPW.
- :mod:`agents.backbone.weighting`: clipped, detached, self-normalised inverse
  propensity weights and their logged quantiles.
"""

from agents.backbone.exposure import ExposureCore
from agents.backbone.gmm import GMMCore, NegativesConfig
from agents.backbone.index import ItemIndex, blocked_topk, check_k
from agents.backbone.retriever import TwoTowerRetriever
from agents.backbone.sequence_core import SequenceCore
from agents.backbone.training import Exposures, TrainConfig, check_ranges, exposure_data, fit_generator, make_optimiser, run_epochs
from agents.backbone.two_tower import TowerConfig, TwoTower, evaluating, init_parameters

__all__ = [
    "ExposureCore", "Exposures", "GMMCore", "ItemIndex", "NegativesConfig", "SequenceCore", "TowerConfig", "TrainConfig",
    "TwoTower", "TwoTowerRetriever", "blocked_topk", "check_k", "check_ranges", "evaluating", "exposure_data",
    "fit_generator", "init_parameters", "make_optimiser", "run_epochs",
]  # fmt: skip
