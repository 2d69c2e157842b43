"""Column names of the observable log tables and of the truth store.

The log is columnar: each table is a dict of equally long tensors per round,
exported as pandas DataFrames / Parquet. Ids are integers. ``TRUTH_*`` tables
live in :class:`~simulator.log.store.TruthStore` and are read by metrics only.
"""

from __future__ import annotations

REQUESTS = (
    "request_id", "round", "time", "user_id", "domain", "entry", "explore",
    "retriever_version", "ranker_version",
)  # plus "history" [R, L] and "history_time" [R, L] (hours, NaN padded; absent in older logs), kept as tensors and exported as list columns
IMPRESSIONS = (
    "request_id", "user_id", "item_id", "position", "retrieval_rank", "retrieval_score",
    "ranking_score", "exposure_propensity", "clicked", "finished", "watch_time",
)
CANDIDATES = (
    "request_id", "item_id", "retrieval_rank", "retrieval_score", "ranking_score",
    "exposed", "recall_prob", "expose_prob",
)
SESSIONS = ("request_id", "position", "dwell", "portal_only")
ITEMS = ("round", "item_id", "live", "category", "creator", "domain", "promoted", "clicks", "exposures", "born_round")
TRUTH_REQUESTS = ("request_id", "intent")
TRUTH_IMPRESSIONS = ("request_id", "position", "relevance", "examined", "motive")

METRIC_COLUMNS = ["scenario", "agent", "seed", "round", "metric", "value"]  # metrics.parquet, long form

LOG_TABLES = {"requests": REQUESTS, "impressions": IMPRESSIONS, "candidates": CANDIDATES, "sessions": SESSIONS}
TRUTH_TABLES = {"truth_requests": TRUTH_REQUESTS, "truth_impressions": TRUTH_IMPRESSIONS}
