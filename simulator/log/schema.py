"""The columns of every log table and of the truth store: written once, used by the writer and the readers.

The log is columnar: each table is a dict of equally long tensors per round, exported
as pandas DataFrames / Parquet. Ids are integers. ``truth_*`` tables live in
:class:`~simulator.log.store.TruthStore` and are read by metrics only.
:func:`check_chunk` holds every appended chunk to these columns, so the schema cannot
drift from what the loop writes; :meth:`~simulator.log.store.LogStore.frame` orders
exported columns by it.
"""

from __future__ import annotations

from collections.abc import Iterable

REQUESTS = (
    "request_id",
    "round",
    "time",
    "user_id",
    "domain",
    "entry",
    "explore",
    "retriever_version",
    "ranker_version",
    "history",  # [R, L] click history at request time, exported as a list column
    "session_id",  # the request id that opened the session (its own id when [session] is off)
    "scroll_depth",  # slots scrolled, noisy ([attention] on; NaN when off)
)
OPTIONAL = {"requests": ("history_time",)}  # [R, L] hours of each history click (NaN padded); absent in older logs
IMPRESSIONS = (
    "request_id",
    "user_id",
    "item_id",
    "position",
    "retrieval_rank",
    "retrieval_score",
    "ranking_score",
    "exposure_propensity",
    "clicked",
    "finished",
    "watch_time",
    "converted",  # a finished mini-app item converted ([mini_app] conversion_prob; False when off)
)
CANDIDATES = (
    "request_id",
    "item_id",
    "retrieval_rank",
    "retrieval_score",
    "ranking_score",
    "exposed",
    "recall_prob",
    "expose_prob",
)
# dwell: viewport seconds on the slot; portal_only: clicked without item engagement (exact when [click_motive] is off,
# the platform's guess from the noisy engagement when on); engagement: post-click item seconds as logged;
# other_clicks: clicks in the same session on other slots
SESSIONS = ("request_id", "position", "dwell", "portal_only", "engagement", "other_clicks")
ITEMS = ("round", "item_id", "live", "category", "creator", "domain", "promoted", "clicks", "exposures", "born_round")
USERS = ("round", "user_id", "alive", "profile", "history")
TRUTH_REQUESTS = ("request_id", "intent", "attended")  # attended: the user looked at the block ([attention])
TRUTH_IMPRESSIONS = ("request_id", "position", "item_id", "user_id", "relevance", "examined", "motive", "examine_prob")

METRIC_COLUMNS = ["scenario", "agent", "seed", "round", "metric", "value"]  # metrics.parquet, long form

LOG_TABLES = {"requests": REQUESTS, "impressions": IMPRESSIONS, "candidates": CANDIDATES, "sessions": SESSIONS}
TRUTH_TABLES = {"truth_requests": TRUTH_REQUESTS, "truth_impressions": TRUTH_IMPRESSIONS}
TABLES = {**LOG_TABLES, **TRUTH_TABLES}


def check_chunk(table: str, columns: Iterable[str]) -> None:
    """Raise ``KeyError`` unless ``columns`` are exactly ``table``'s (its optional columns may be present)."""
    if table not in TABLES:
        raise KeyError(f"log: unknown table {table!r}; tables: {', '.join(TABLES)}")
    have, need = set(columns), set(TABLES[table])
    extra = have - need - set(OPTIONAL.get(table, ()))
    if need - have or extra:
        raise KeyError(f"log.{table}: columns differ from the schema (missing {sorted(need - have)}, unknown {sorted(extra)})")


def ordered(table: str, columns: Iterable[str]) -> list[str]:
    """``columns`` in the schema's order (optional columns last)."""
    names = list(TABLES[table]) + list(OPTIONAL.get(table, ()))
    present = set(columns)
    return [c for c in names if c in present]
