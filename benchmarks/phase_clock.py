"""Exclusive wall time per named phase, by wrapping the round's functions for the length of a benchmark."""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import simulator.round as round_mod
import simulator.timeline as timeline
from simulator.cascade import ranker as ranker_mod
from simulator.cascade import step
from simulator.world import dynamics


class PhaseClock:
    """Exclusive seconds per phase (time spent in a nested phase counts for that phase only)."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync or (lambda: None)  # torch.cuda.synchronize on a GPU: kernels run asynchronously
        self.stack: list[list[Any]] = []
        self.totals: dict[str, float] = {}
        self.rounds: list[dict[str, float]] = []

    def reset(self) -> None:
        self.totals = {}

    def top(self) -> str | None:
        return self.stack[-1][0] if self.stack else None

    def wrap(self, name: str, fn: Callable[..., Any], inside: tuple[str, ...] | None = None) -> Callable[..., Any]:
        """``fn`` timed as ``name`` (only when the enclosing phase is one of ``inside``, if given)."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if inside is not None and self.top() not in inside:
                return fn(*args, **kwargs)
            self.sync()
            self.stack.append([name, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                _, start, child = self.stack.pop()
                elapsed = time.perf_counter() - start
                self.totals[name] = self.totals.get(name, 0.0) + elapsed - child
                if self.stack:
                    self.stack[-1][2] += elapsed

        return timed

    def close_round(self, wall: float, skip: bool) -> None:
        """Book the round (``other`` = wall - timed phases); ``skip`` leaves it out of :meth:`mean`."""
        self.totals["other"] = wall - sum(self.totals.values())
        if not skip:
            self.rounds.append(dict(self.totals))

    def mean(self) -> dict[str, float]:
        names = {k for r in self.rounds for k in r}
        return {k: sum(r.get(k, 0.0) for r in self.rounds) / max(len(self.rounds), 1) for k in names}


class _TimedCopy:
    """Stands in for the ``copy`` module inside :mod:`simulator.round`: its ``deepcopy`` timed."""

    def __init__(self, clock: PhaseClock, name: str) -> None:
        self.deepcopy = clock.wrap(name, copy.deepcopy)


@contextlib.contextmanager
def instrument(loop: Any, clock: PhaseClock) -> Iterator[Callable[..., Any]]:
    """Patch the round's functions with timed wrappers; yields the timed ``serve`` to hand to ``run_round``."""
    serving = ("serve.other", "serve.expose")
    patches = [
        (timeline, "sample_requests", "serve.sample", None), (timeline, "start_round", "dynamics", None),
        (timeline, "deploy", "deploy", None), (round_mod, "measure", "truth metrics", None),
        (round_mod, "evaluate_candidate", "offline evaluation", None), (dynamics, "end_round", "dynamics", None),
        (step, "_recall", "serve.retrieve", None), (step, "_expose", "serve.expose", None),
        (step, "true_relevance", "serve.respond", None), (step, "respond", "serve.respond", None),
        (dynamics, "record_feedback", "serve.respond", ("serve.other",)), (step, "examination_curve", "serve.respond", None),
        (step, "part_tables", "serve.log", None), (step, "append_parts", "serve.log", None),
        (ranker_mod.FrozenRanker, "score", "serve.rank", serving), (ranker_mod.PlatformRanker, "score", "serve.rank", serving),
    ]
    patches += [
        (round_mod, "training_view", "training view", None), (round_mod, "_candidate", "model copies", None),
        (ranker_mod.PlatformRanker, "frozen", "model copies", None), (round_mod, "copy", "model copies", None),
    ]
    # the fits are timed on their classes, not as instance attributes: those would be deep-copied into the loop's model
    # snapshots and make the loop unpicklable (round_phases.py saves it, as a run checkpoints it)
    patches += [(type(loop.ranker_learner), "fit", "ranker fit", None), (type(loop.learner), "fit", "agent fit", None)]
    saved = [(obj, attr, obj.__dict__.get(attr)) for obj, attr, _, _ in patches]
    for obj, attr, name, inside in patches:
        target = getattr(obj, attr)
        setattr(obj, attr, _TimedCopy(clock, name) if attr == "copy" else clock.wrap(name, target, inside))
    try:
        yield clock.wrap("serve.other", step.serve_batch)
    finally:
        for obj, attr, fn in saved:
            if fn is None:  # inherited: drop the patch, the base class's method shows through again
                delattr(obj, attr)
            else:
                setattr(obj, attr, fn)
