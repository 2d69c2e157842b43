"""Issue 17 item 5: nothing reachable from what an agent receives leads to the world or the truth store.

An adversarial agent walks the object graph of everything it is given (its context, every training view,
catalogue, request batch and state) looking for the world, the truth store, the loop, the intent lookup,
the noisy-oracle ranker and any tensor that shares memory with the world's. It runs under every ranker type.
The walk follows attributes, containers, closures and bound methods; it does not enter classes, modules or a
function's globals (Python cannot close those; agents are held to the import contract for them).
"""

from __future__ import annotations

import gc
import sys
import types
from typing import Any

import pytest
import torch

from scenarios.experiment import warm_started_loop
from simulator.agent_api import AgentContext
from simulator.log.store import LogStore, TruthStore
from simulator.loop import ClosedLoop
from simulator.metrics.measure import MetricState
from simulator.oracle import IntentLookup, NoisyOracleRanker, OracleAgent, OracleScorerHandle
from simulator.round import attach_agent, training_view
from simulator.timeline import run_round
from simulator.world.state import WorldState
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")

FORBIDDEN = (WorldState, TruthStore, LogStore, ClosedLoop, IntentLookup, NoisyOracleRanker, OracleAgent, MetricState)


def reachable(*roots: Any) -> list[Any]:
    """Every object reachable from ``roots`` through instance state (see the module docstring)."""
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
    seen: set[int] = set()
    stack, out = list(roots), []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in module_dicts or isinstance(obj, (type, types.ModuleType, types.CodeType)):
            continue
        seen.add(id(obj))
        out.append(obj)
        if isinstance(obj, types.FunctionType):  # closures and defaults, not __globals__
            stack += [*(c.cell_contents for c in obj.__closure__ or ()), *(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
        else:
            stack += gc.get_referents(obj)
    return out


def leaks(world: WorldState, *roots: Any) -> list[str]:
    """Names of the forbidden objects, and of tensors sharing the world's memory, reachable from ``roots``."""
    world_ptrs = {v.untyped_storage().data_ptr() for v in vars(world).values() if isinstance(v, torch.Tensor) and v.numel()}
    found = []
    for obj in reachable(*roots):
        if isinstance(obj, FORBIDDEN):
            found.append(type(obj).__name__)
        elif isinstance(obj, torch.Tensor) and obj.numel() and obj.untyped_storage().data_ptr() in world_ptrs:
            found.append(f"tensor sharing the world's memory {tuple(obj.shape)}")
    return found


class Adversary:
    """Retrieves the first K live items and, in every call, searches what it was given for a way to the truth."""

    name = "adversary"

    def __init__(self, ctx: AgentContext, world: WorldState, found: list[str], seen: dict[str, int]) -> None:
        self._world, self.found, self.seen = world, found, seen  # the test's, never searched
        self._probe("ctx", ctx)
        self.live = torch.empty(0, dtype=torch.int64)

    def _probe(self, what: str, *given: Any) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1
        self.found += [f"{what}: {name}" for name in leaks(self._world, *given)]

    def fit(self, view: Any) -> dict[str, float]:
        self._probe("fit", view, view.candidates)
        return {}

    def index(self, catalogue: Any) -> None:
        self._probe("index", catalogue)
        self.live = catalogue.live.nonzero().squeeze(1)

    def retrieve(self, requests: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._probe("retrieve", requests)
        ids = self.live[:k].expand(len(requests), k).clone()
        return ids, -torch.arange(k, dtype=torch.float32).expand(len(requests), k).clone()

    def score(self, requests: Any, item_ids: torch.Tensor) -> torch.Tensor:
        self._probe("score", requests, item_ids)
        return torch.zeros(item_ids.shape)

    def state_dict(self) -> dict[str, Any]:
        return {"live": self.live.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._probe("load_state_dict", state)
        self.live = state["live"].clone()


@pytest.mark.parametrize("ranker", ["deepfm", "dcn", "noisy-oracle"])
def test_nothing_an_agent_receives_leads_to_the_truth(ranker: str) -> None:
    sc = tiny_scenario(cascade={"ranker": ranker}, timeline={"rounds": 2})
    loop = warm_started_loop(sc, 0, torch.device("cpu")).copy()
    found: list[str] = []
    seen: dict[str, int] = {}
    attach_agent(loop, lambda lp: Adversary(AgentContext.from_scenario(sc, 0), lp.world, found, seen), "adversary")
    for r in range(2):
        run_round(loop, r)
    assert {"ctx", "fit", "index", "retrieve", "load_state_dict"} <= set(seen), seen
    assert found == []


def test_the_search_finds_the_world_where_it_is() -> None:
    """The check can fail: the raw noisy-oracle snapshot (what views carried before) reaches the world."""
    sc = tiny_scenario(cascade={"ranker": "noisy-oracle"})
    loop = ClosedLoop(sc, 0)
    assert "WorldState" in leaks(loop.world, loop.next_ranker.frozen())
    assert leaks(loop.world, loop.next_ranker.agent_handle()) == []


def test_noisy_oracle_handle_scores_exactly_like_its_snapshot() -> None:
    sc = tiny_scenario(cascade={"ranker": "noisy-oracle"}, timeline={"rounds": 1})
    loop = warm_started_loop(sc, 0, torch.device("cpu"))
    view = training_view(loop, -1)
    assert isinstance(view.ranker, OracleScorerHandle) and view.ranker.version == loop.next_ranker.version
    req = view.requests.select(torch.arange(20))
    items = view.candidates.item_id[: 20 * 7].reshape(20, 7)
    torch.testing.assert_close(view.ranker.score(req, items), loop.next_ranker.score(req, items), rtol=0, atol=0)
