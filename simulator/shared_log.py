"""The shared log: one common production log per seed, served by a fixed logging policy.

Every agent's candidate of a seed is scored on the same log (the ``shared`` offline protocol), as a team
compares candidate models on one production log. The log comes from a *logger*: a copy of the seed's
warm-started loop that keeps being served by the legacy system (popularity-biased recall, uniform ranker) with
a uniform exploration slice, never by an agent, and never retrained. Its rounds are generated on demand and
kept, so the log of round ``r`` is identical whichever agent asks first (and after a resume, regenerated
bit for bit from the warm start).
"""

from __future__ import annotations

import dataclasses

import torch

from simulator.loop import ClosedLoop
from simulator.metrics.offline import SharedRound, logged_batch
from simulator.metrics.protocols import clicked_items
from simulator.timeline import run_round
from simulator.world.state import WorldState


class SharedLog:
    """The common log of one seed, round by round.

    Args:
        warm: the seed's warm-started loop (copied; the original is not touched).
    """

    def __init__(self, warm: ClosedLoop) -> None:
        ev = warm.sc.evaluation
        logger = warm.copy()
        logger.sc = warm.sc.with_overrides(
            cascade={"exploration_share": ev.shared_log_exploration},
            timeline={"requests_per_round": ev.shared_log_requests},
            evaluation={"shared_log": False, "holdout_share": 0.0, "estimators": []},
        )
        logger.logging_only = True
        self.logger, self.next_round = logger, 0
        self.rounds: dict[int, SharedRound] = {}

    def round(self, r: int) -> SharedRound:
        """The shared log of round ``r`` (the logger runs on to it if it has not yet)."""
        while self.next_round <= r:
            run_round(self.logger, self.next_round)
            self.rounds[self.next_round] = capture(self.logger, self.next_round)
            self.next_round += 1
        return self.rounds[r]


def capture(loop: ClosedLoop, r: int) -> SharedRound:
    """Round ``r`` of ``loop``'s log as a :class:`SharedRound`: its clicked requests and their users' truth now."""
    req, imp = loop.log.concat("requests", r, r), loop.log.concat("impressions", r, r)
    rows = torch.nonzero(torch.isin(req["request_id"], torch.unique(imp["request_id"][imp["clicked"]]))).squeeze(1)
    batch = logged_batch(req, rows, loop.world, r)
    truth = loop.truth.concat("truth_requests", r, r)
    intents = truth["intent"][torch.searchsorted(truth["request_id"], batch.request_id)]
    clicked = clicked_items(batch.request_id, imp, loop.sc.cascade.slate_size)
    return SharedRound(batch, clicked, intents, user_rows(loop.world, batch.user_id))


def user_rows(world: WorldState, users: torch.Tensor) -> WorldState:
    """A truth snapshot holding only ``users``' rows (row ``i`` is ``users[i]``); item tensors as of now."""
    n = world.user_alive.shape[0]
    sliced = {
        f.name: getattr(world, f.name)[users].clone()
        for f in dataclasses.fields(world)
        if f.name.startswith("user_") and isinstance(getattr(world, f.name), torch.Tensor) and getattr(world, f.name).shape[:1] == (n,)
    }
    return dataclasses.replace(world, item_live=world.item_live.clone(), **sliced)
