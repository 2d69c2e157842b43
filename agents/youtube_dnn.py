"""YouTube-DNN with random negatives (algorithms.md §6; Covington et al. 2016; UMA²'s "SS-ABC(random)").

The GMM two tower of :mod:`agents.sampling_strategies`, trained on clicks
against ``N = 25`` negatives per click drawn uniformly from the whole live
catalogue (fresh draws every epoch; a draw equal to the click is masked as an
accidental hit). Two losses, one name each:

- ``youtube-dnn`` (YTB-BCE, UMA²'s GMM): ``L = (1/|P|) Σ_P [BCE(σ(s_u,i+), 1) + Σ_{j=1}^{N} BCE(σ(s_u,j), 0)]``,
  i.e. the negatives *summed* per positive. It is :func:`~agents.sampling_strategies.gmm_loss`
  with one space and ``λ = N`` (the mean over the batch's negatives times N).
  ``ss-abc-random`` is the same sampling under Eq. 2's per-space mean (``λ = 1``);
- ``youtube-dnn-softmax`` (the original): the sampled softmax of §9 of each click against its
  N negatives (:func:`~agents.backbone.softmax.sampled_softmax_loss`). The sampler is uniform,
  so ``log Q`` is the same for every item and the logQ correction cancels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agents.registry import register
from agents.sampling_strategies import Config, SamplingStrategy, Space


@dataclass(frozen=True)
class YouTubeDNNConfig(Config):
    """YouTube-DNN (BCE) hyperparameters: 25 uniform negatives, summed per positive."""

    spaces: tuple[Space, ...] = ("random",)
    """Uniform over the live catalogue."""
    ratio: tuple[int, ...] = (25,)
    """``N``: negatives per positive (spec DEFAULT 25 = 1 + 4 + 20)."""
    space_weights: tuple[float, ...] = (25.0,)
    """``λ = N``: the per-positive sum of §6."""


@dataclass(frozen=True)
class YouTubeDNNSoftmaxConfig(Config):
    """YouTube-DNN (sampled softmax) hyperparameters."""

    spaces: tuple[Space, ...] = ("random",)
    """Uniform over the live catalogue."""
    ratio: tuple[int, ...] = (25,)
    """Negatives in each positive's softmax."""
    space_weights: tuple[float, ...] = (1.0,)
    """Unused by the softmax loss."""
    loss: Literal["bce", "softmax"] = "softmax"
    """The sampled softmax (§9)."""


@register("youtube-dnn")
class YouTubeDNN(SamplingStrategy):
    """YouTube-DNN: two tower, BCE on clicks vs 25 uniform random negatives summed per click (UMA²'s GMM)."""

    name = "youtube-dnn"
    Config = YouTubeDNNConfig


@register("youtube-dnn-softmax")
class YouTubeDNNSoftmax(SamplingStrategy):
    """YouTube-DNN (softmax): two tower, sampled softmax of each click against 25 uniform random items."""

    name = "youtube-dnn-softmax"
    Config = YouTubeDNNSoftmaxConfig
