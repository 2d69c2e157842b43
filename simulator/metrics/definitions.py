"""Every metric name the runner writes, with its definition (shown by ``cascadesim list metrics``).

``@K`` metrics are reported for K in ``metrics.k_values`` plus the slate size S.
Truth metrics are means over the evaluation panel (fixed users, current intent
drawn per round); logged metrics are means over up to ``panel_size`` of the
round's requests with at least one click, replayed offline.
"""

from __future__ import annotations

METRICS: dict[str, str] = {
    # truth (the panel; never visible to agents)
    "true_recall@K": "|agent top-K ∩ true top-K| / K, true top-K by true relevance over the live catalogue for the request's intent",
    "unbiased_recall@K": "expected logged_recall@K if the user examined the whole live catalogue attentively: sum of true relevance over the agent's top-K / over all live items",
    "unbiased_precision@K": "expected logged_precision@K under full attentive exposure: sum of true relevance over the agent's top-K / K",
    "unbiased_hitrate@K": "expected logged_hitrate@K under full attentive exposure: 1 - prod over the agent's top-K of (1 - true relevance)",
    "true_ndcg@K": "DCG of the true relevance of the agent's top-K (gain r, discount 1/log2(rank+1)) over the DCG of the true top-K",
    "retrieval_slate_utility": "mean true relevance of the agent's top-S (before the ranker)",
    "retrieval_slate_regret": "oracle slate utility (mean true relevance of the true top-S) minus retrieval_slate_utility",
    "slate_utility": "mean true relevance of the slate the platform ranker picks (top-S of the agent's K_r candidates)",
    "slate_regret": "oracle slate utility minus slate_utility",
    "ranked_true_recall@S": "|ranker's slate ∩ true top-S| / S: retrieval bias propagated through the ranker",
    "ranked_true_ndcg@N": "NDCG@N of the platform ranker's order of the agent's recalled set, graded by true relevance (ideal: true top-N); N in metrics.rank_k_values and S",
    "ranked_true_map@N": "MAP@N of the ranker's order of the recalled set, relevant = the true top-N (DAMCAR's after-ranking protocol, against the truth)",
    "ranked_true_hr@N": "share of panel users whose ranker top-N (from the recalled set) holds at least one of their true top-N",
    "score_unexposed_true_pos": "mean agent score on never-exposed items of the user's true top-K_r",
    "score_unexposed_true_neg": "mean agent score on never-exposed sampled live items outside the user's true top-Kmax",
    "score_gap_unexposed": "score_unexposed_true_pos - score_unexposed_true_neg (DAMCAR Fig. 5, exact)",
    "true_top_ever_exposed": "share of a panel user's true top-S items (intent mixture) ever exposed to them so far",
    "preference_drift": "mean over live users of 1 - cos(current true latent, latent at start)",
    "true_exposed_relevance": "mean true relevance of the round's exposed items (truth store)",
    "true_attention_rate": "share of the round's exposures the user examined (truth store)",
    # logged (what a practitioner computes offline, biased by construction)
    "logged_recall@K": "mean over requests with clicks of |clicked ∩ agent top-K| / |clicked|, on the round's held-out clicks",
    "logged_precision@K": "mean of |clicked ∩ agent top-K| / K over the same requests",
    "logged_f1@K": "harmonic mean of logged_precision@K and logged_recall@K (of the means, as DAMCAR reports F)",
    "logged_hitrate@K": "share of those requests with at least one clicked item in the agent's top-K",
    "evaluation_bias@K": "logged_recall@K - true_recall@K: how much the offline metric lies",
    "logged_ctr": "clicks / exposures in the round",
    "logged_finish_rate": "finished / exposures in the round",
    # popularity, diversity, homogenisation
    "exposure_gini": "Gini coefficient of the round's exposure counts over live items (zeros included)",
    "exposure_top1_share": "share of the round's exposures going to the top 1% of live items",
    "aggregate_diversity": "number of distinct items exposed in the round",
    "coverage": "share of live items exposed at least once in the round",
    "long_tail_coverage": "share of the least popular 80% of live items (observed clicks at round start) exposed in the round",
    "novelty": "mean self-information -log2 p(i) of exposed items, p from observed clicks at round start (+1 smoothing)",
    "mean_exposed_popularity": "mean observed clicks (at round start) of exposed items: CLRec's E_A[pop(i)]",
    "popularity_index": "mean_exposed_popularity / its max over the agents compared at the same seed and round (CLRec)",
    "homogenisation": "mean pairwise Jaccard of the round's exposure sets of up to homogenisation_users active users",
    "ssb_divergence": "Jensen-Shannon divergence (base 2) between the item distributions of exposures and of recalled candidates",
    "exposure_lorenz@p": "Lorenz curve of the round's exposures: share of exposures of the least-exposed share p of live items (p = 0.1..0.9)",
    "exposure_share_decile@d": "share of the round's exposures going to popularity decile d of live items (observed clicks at round start; 10 = most popular)",
    "score_hist_pos@b": "share of unexposed true positives whose agent score falls in bin b of 20 equal bins over [score_hist_lo, score_hist_hi]",
    "score_hist_neg@b": "the same for unexposed true negatives (together: DAMCAR Fig. 5 as distributions)",
    "score_hist_lo": "lower edge of the score histogram bins (min panel score of the round)",
    "score_hist_hi": "upper edge of the score histogram bins (max panel score of the round)",
    "live_items": "live items at the round's end",
    "active_users": "registered, not churned users at the round's end",
    # training diagnostics of the serving models
    "fit_<name>": "diagnostics returned by the agent's and ranker's last fit (e.g. fit_loss, fit_ranker_loss)",
}
