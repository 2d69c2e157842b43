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

from agents.backbone.gmm import NegativesConfig
from agents.registry import register_variant
from agents.sampling_strategies import SamplingStrategy, SSConfig

register_variant(
    "youtube-dnn", SamplingStrategy,
    # 25 uniform negatives, λ = N = 25: the per-positive sum of §6 (spec DEFAULT 25 = 1 + 4 + 20)
    SSConfig(negatives=NegativesConfig(spaces=("random",), ratio=(25,), space_weights=(25.0,))),
    "YouTube-DNN: two tower, BCE on clicks vs 25 uniform random negatives summed per click (UMA²'s GMM).",
)  # fmt: skip
register_variant(
    "youtube-dnn-softmax", SamplingStrategy,
    # the sampled softmax (§9) of each positive against 25 uniform items; space_weights unused
    SSConfig(negatives=NegativesConfig(spaces=("random",), ratio=(25,), space_weights=(1.0,), loss="softmax")),
    "YouTube-DNN (softmax): two tower, sampled softmax of each click against 25 uniform random items.",
)  # fmt: skip
