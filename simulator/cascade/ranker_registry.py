"""The registry of platform ranker kinds (no imports of the simulator: the config validates against it).

:func:`register_ranker` (re-exported by :mod:`simulator.cascade.ranker`) adds a kind; ``cascade.ranker``
must name a built-in kind or a registered one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RankerFactory = Callable[[Any, int, Any], Any]  # (scenario, seed, torch device) -> a LearningRanker
BUILTIN = ("deepfm", "dcn", "noisy-oracle")  # click models of ranker_models, and the truth-reading noisy oracle (loop.new_ranker)
_REGISTRY: dict[str, RankerFactory] = {}


def register_ranker(kind: str, factory: RankerFactory) -> None:
    """Make ``kind`` a valid ``cascade.ranker``: ``factory(sc, seed, device)`` builds the platform ranker.

    The ranker must satisfy :class:`~simulator.cascade.protocols.LearningRanker` (fit on the training view,
    score, frozen snapshots, state_dict), so a ranking-stage method (e.g. a CTR model) can serve as the
    platform ranker. Register before the scenario is loaded: ``cascade.ranker`` is validated against the registry.
    Re-registering a kind replaces its factory.
    """
    if not kind or kind in BUILTIN:
        raise ValueError(f"register_ranker: {kind!r} is empty or built in ({', '.join(BUILTIN)})")
    _REGISTRY[kind] = factory


def ranker_kinds() -> list[str]:
    """Every valid ``cascade.ranker``: the built-in kinds, then registered ones."""
    return [*BUILTIN, *_REGISTRY]


def registered_factory(kind: str) -> RankerFactory | None:
    """The factory registered for ``kind`` (None for built-in or unknown kinds)."""
    return _REGISTRY.get(kind)
