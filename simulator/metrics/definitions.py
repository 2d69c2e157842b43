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
    "mini_app_<metric>": "with world.mini_app_share > 0: the retrieval truth metric <metric> (true_recall@K, true_ndcg@K, unbiased_*@K, retrieval_slate_utility/regret) for the panel served as mini-app requests, graded by the relevance mini-app requests respond to (the [mini_app] category shift and own-domain bonus)",
    "true_top_ever_exposed": "share of a panel user's true top-S items (intent mixture) ever exposed to them so far",
    "preference_drift": "mean over live users of 1 - cos(current true latent, latent at start)",
    "true_exposed_relevance": "mean true relevance of the round's exposed items (truth store)",
    "true_attention_rate": "share of the round's exposures the user examined (truth store)",
    # offline evaluation of the freshly trained candidate (simulator/metrics/offline.py), each held against the truth
    "offline_holdout_recall@K": "hold-out protocol: mean over the round's held-out requests with a click (a share of users withheld from training) of |clicked ∩ candidate top-K| / |clicked|; the candidate ranks the whole live catalogue, items in the request's history excluded; the withheld requests were served by the previous model, so their clicks sit on its exposures (for agents that do not retrain, random/popular/oracle, the candidate IS that model)",
    "offline_holdout_precision@K": "hold-out protocol: |clicked ∩ candidate top-K| / K, same requests",
    "offline_holdout_ndcg@K": "hold-out protocol: NDCG@K with binary gains (clicked), ideal = min(|clicked|, K) hits, same requests",
    "offline_holdout_hitrate@K": "hold-out protocol: share of the same requests with a clicked item in the candidate's top-K",
    "offline_holdout_requests": "number of held-out requests with a click the hold-out metrics average over",
    "true_holdout_recall@K": "truth of offline_holdout_recall@K on the same requests: candidate top-K's true relevance / the total over live items outside the history (the expected recall if every live item were examined)",
    "true_holdout_precision@K": "truth of offline_holdout_precision@K: mean true relevance of the candidate's top-K",
    "true_holdout_ndcg@K": "truth of offline_holdout_ndcg@K: NDCG@K with true relevance as gains, ideal = true top-K outside the history",
    "true_holdout_hitrate@K": "truth of offline_holdout_hitrate@K: 1 - prod over the candidate's top-K of (1 - true relevance)",
    "bias_holdout_<metric>@K": "offline_holdout_<metric>@K - true_holdout_<metric>@K: how far the hold-out protocol misleads",
    "offline_shared_<metric>@K": "shared-log protocol: the same four metrics on ONE common log per seed (legacy serving + a uniform slice, identical for every agent)",
    "true_shared_<metric>@K": "truth of offline_shared_<metric>@K on the shared log's requests (the logging world's users and intents)",
    "bias_shared_<metric>@K": "offline_shared_<metric>@K - true_shared_<metric>@K",
    "offline_shared_requests": "number of shared-log requests with a click the shared metrics average over",
    "ope_<estimator>_clicks": "off-policy estimate of the candidate policy's clicks per request (candidate top-K_r -> ranker -> top-S) from the round's logged rows with propensities; estimators ips, snips, dr, dm, ips_pos (simulator/metrics/estimators.py)",
    "ope_<estimator>_finished": "the same for finished items per request (dr/dm: the ranker's click model x the logged finish rate per click)",
    "true_clicks": "the candidate policy's expected clicks per request on the same requests, from the user model in the world it will serve in",
    "true_finished": "the candidate policy's expected finished items per request on the same requests",
    "bias_ope_<estimator>_<target>": "ope_<estimator>_<target> - true_<target>",
    "ope_requests": "logged requests the estimators read (exploration slice or stochastic serving, evaluation.ope_logs)",
    "leaderboard_tau_<protocol>": "(leaderboard.parquet) Kendall's tau-b between the agents' ranking by a protocol's estimate and by its truth, per seed and round",
    "leaderboard_top1_<protocol>": "(leaderboard.parquet) 1 when the protocol's best agent is the truth's best agent, else 0",
    # the serving model replayed on its own clicks: ~1 by construction for K >= K_r
    "onpolicy_replay_recall@K": "CAUTION, biased by construction: the SERVING model replayed on the clicks its own recall produced (mean over up to panel_size clicked requests of |clicked ∩ top-K| / |clicked|); ~1 for K >= K_r whatever the model; use offline_holdout/shared instead",
    "onpolicy_replay_precision@K": "CAUTION (see onpolicy_replay_recall@K): |clicked ∩ serving top-K| / K over the same requests",
    "onpolicy_replay_f1@K": "CAUTION (see onpolicy_replay_recall@K): harmonic mean of the two means (as DAMCAR reports F)",
    "onpolicy_replay_hitrate@K": "CAUTION (see onpolicy_replay_recall@K): share of those requests with a clicked item in the serving top-K",
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

# Which way is better, for `cascadesim list metrics` and the dashboards ("higher", "lower", "zero": closer to 0 is better;
# "none": descriptive, no better side). Metrics not listed here are descriptive.
_HIGHER = (
    "true_recall@K",
    "unbiased_recall@K",
    "unbiased_precision@K",
    "unbiased_hitrate@K",
    "true_ndcg@K",
    "retrieval_slate_utility",
    "slate_utility",
    "ranked_true_recall@S",
    "ranked_true_ndcg@N",
    "ranked_true_map@N",
    "ranked_true_hr@N",
    "score_gap_unexposed",
    "true_top_ever_exposed",
    "true_exposed_relevance",
    "logged_ctr",
    "logged_finish_rate",
    "aggregate_diversity",
    "coverage",
    "long_tail_coverage",
    "novelty",
    "true_holdout_recall@K",
    "true_holdout_precision@K",
    "true_holdout_ndcg@K",
    "true_holdout_hitrate@K",
    "true_shared_<metric>@K",
    "true_clicks",
    "true_finished",
    "leaderboard_tau_<protocol>",
    "leaderboard_top1_<protocol>",
)
_LOWER = (
    "retrieval_slate_regret",
    "slate_regret",
    "exposure_gini",
    "exposure_top1_share",
    "mean_exposed_popularity",
    "popularity_index",
    "homogenisation",
    "ssb_divergence",
)
_ZERO = ("bias_holdout_<metric>@K", "bias_shared_<metric>@K", "bias_ope_<estimator>_<target>")
BETTER: dict[str, str] = {
    **{name: "none" for name in METRICS},
    **{n: "higher" for n in _HIGHER},
    **{n: "lower" for n in _LOWER},
    **{n: "zero" for n in _ZERO},
}
