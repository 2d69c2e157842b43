"""The cascade after retrieval: the platform ranker and serving (exposure)."""
