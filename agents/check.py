"""``check_agent``: the retrieval-agent contract checker, in the spirit of gymnasium's ``check_env``.

Run it in CI on every registered agent (``tests/test_agents.py`` does). It
fails with an ``AssertionError`` whose message names the agent and the broken
rule. What it checks, in order:

1. the agent satisfies :class:`~simulator.agent_api.RetrievalAgent`;
2. ``fit`` returns ``dict[str, float]`` and leaves the view unchanged;
3. after ``index``, ``retrieve`` returns int64 ids and float32 scores of shape
   ``[B, k]`` on the agent's device: live items only, no duplicate in a row,
   finite scores, non-increasing along each row, the same output twice;
4. ``score`` on the retrieved ids agrees with the retrieved scores (atol 1e-4);
5. ``k`` above the number of live items raises ``ValueError``;
6. ``state_dict`` -> a fresh agent of the same registered class, config and name ->
   ``load_state_dict`` -> ``index`` gives identical ``retrieve`` output, and
   (``check_resume``) one more ``fit`` of both gives identical output too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

import torch

from agents import registry
from simulator.agent_api import RetrievalAgent
from simulator.log.view import TrainingView
from simulator.types import RequestBatch

SCORE_ATOL = 1e-4


def _fail_unless(cond: bool, who: str, msg: str) -> None:
    if not cond:
        raise AssertionError(f"check_agent[{who}]: {msg}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor reachable through dataclass fields of ``obj``, by dotted name."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            out.update(_tensors(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name))
    return out


def _unchanged(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shape, dtype and values, NaN matching NaN (e.g. the padding of ``history_time``)."""
    if a.is_floating_point() and a.shape == b.shape and a.dtype == b.dtype:
        return bool(torch.isclose(a, b, rtol=0.0, atol=0.0, equal_nan=True).all())
    return torch.equal(a, b)


def _check_fit(agent: RetrievalAgent, view: TrainingView, who: str) -> None:
    before = {k: v.clone() for k, v in _tensors(view).items()}
    diag = agent.fit(view)
    _fail_unless(isinstance(diag, dict), who, f"fit must return a dict, got {type(diag).__name__}")
    bad = {k: type(v).__name__ for k, v in diag.items() if not isinstance(k, str) or not isinstance(v, float)}
    _fail_unless(not bad, who, f"fit must return dict[str, float]; offending entries: {bad}")
    after = _tensors(view)
    changed = [k for k, v in before.items() if not _unchanged(v, after[k])]
    _fail_unless(not changed, who, f"fit modified the training view: {changed}")


def _check_retrieval(
    agent: RetrievalAgent, view: TrainingView, requests: RequestBatch, k: int, who: str
) -> tuple[torch.Tensor, torch.Tensor]:
    out = agent.retrieve(requests, k)
    _fail_unless(isinstance(out, tuple) and len(out) == 2, who, "retrieve must return (item_ids, scores)")
    ids, scores = out
    b = len(requests)
    _fail_unless(ids.dtype == torch.int64, who, f"item_ids dtype must be int64, got {ids.dtype}")
    _fail_unless(scores.dtype == torch.float32, who, f"scores dtype must be float32, got {scores.dtype}")
    _fail_unless(tuple(ids.shape) == (b, k), who, f"item_ids shape must be {(b, k)}, got {tuple(ids.shape)}")
    _fail_unless(tuple(scores.shape) == (b, k), who, f"scores shape must be {(b, k)}, got {tuple(scores.shape)}")
    device = requests.user_id.device
    for label, t in (("item_ids", ids), ("scores", scores)):
        _fail_unless(_same_device(t.device, device), who, f"{label} on {t.device}, agent device is {device}")
    live = view.catalogue.live.to(ids.device)
    in_range = bool(((ids >= 0) & (ids < live.shape[0])).all())
    _fail_unless(in_range, who, f"item ids out of range [0, {live.shape[0]})")
    dead = ids[~live[ids]]
    _fail_unless(dead.numel() == 0, who, f"retrieved {dead.numel()} dead items, e.g. {dead[:5].tolist()}")
    srt = ids.sort(dim=1).values
    _fail_unless(bool((srt[:, 1:] != srt[:, :-1]).all()), who, "duplicate item ids within a row")
    _fail_unless(bool(torch.isfinite(scores).all()), who, "scores contain NaN or inf")
    _fail_unless(bool((scores[:, 1:] <= scores[:, :-1]).all()), who, "scores are not non-increasing along rows")
    again = agent.retrieve(requests, k)
    _fail_unless(torch.equal(again[0], ids) and torch.equal(again[1], scores), who, "retrieve is not repeatable")
    return ids, scores


def _check_score(agent: RetrievalAgent, requests: RequestBatch, ids: torch.Tensor, scores: torch.Tensor, who: str) -> None:
    s = agent.score(requests, ids)
    _fail_unless(isinstance(s, torch.Tensor), who, "score must return a tensor")
    _fail_unless(tuple(s.shape) == tuple(ids.shape), who, f"score shape must be {tuple(ids.shape)}, got {tuple(s.shape)}")
    _fail_unless(s.dtype == torch.float32, who, f"score dtype must be float32, got {s.dtype}")
    err = float((s - scores).abs().max()) if s.numel() else 0.0
    _fail_unless(torch.allclose(s, scores, atol=SCORE_ATOL), who, f"score disagrees with retrieve (max |diff| {err:.3g})")


def _check_too_large_k(agent: RetrievalAgent, view: TrainingView, requests: RequestBatch, who: str) -> None:
    n_live = int(view.catalogue.live.sum())
    try:
        agent.retrieve(requests, n_live + 1)
    except ValueError:
        return
    raise AssertionError(f"check_agent[{who}]: retrieve(k={n_live + 1}) with {n_live} live items must raise ValueError")


def _check_state(
    agent: RetrievalAgent, view: TrainingView, requests: RequestBatch, k: int, resume: bool, who: str, rebuild: Callable[[], RetrievalAgent]
) -> None:
    fresh = rebuild()
    fresh.load_state_dict(agent.state_dict())
    fresh.index(view.catalogue)
    ids, scores = agent.retrieve(requests, k)
    ids2, scores2 = fresh.retrieve(requests, k)
    same = torch.equal(ids, ids2) and torch.equal(scores, scores2)
    _fail_unless(same, who, "state_dict -> load_state_dict -> index does not reproduce retrieve")
    if not resume:
        return
    agent.fit(view)
    fresh.fit(view)
    agent.index(view.catalogue)
    fresh.index(view.catalogue)
    ids, scores = agent.retrieve(requests, k)
    if requests.user_id.device.type == "cpu":
        ids2, scores2 = fresh.retrieve(requests, k)
        same = torch.equal(ids, ids2) and torch.equal(scores, scores2)
    else:  # GPU kernels may reorder float sums: compare scores of the same pairs
        same = torch.allclose(fresh.score(requests, ids), scores, atol=1e-3)
    _fail_unless(same, who, "a model restored from state_dict diverges from the original after one more fit")


def check_agent(
    agent: RetrievalAgent,
    view: TrainingView,
    requests: RequestBatch,
    k: int,
    check_resume: bool = True,
    rebuild: Callable[[], RetrievalAgent] | None = None,
) -> None:
    """Check that ``agent`` honours the retrieval-agent contract (see the module docstring).

    Args:
        agent: the agent under test, built as ``type(agent)(ctx, config)`` with ``.ctx`` and ``.config``.
        view: a small training view (its catalogue is indexed).
        requests: ``[B]`` requests to retrieve for, on the agent's device.
        k: items per request (``<=`` live items).
        check_resume: also fit the original and the restored agent once more and compare.
        rebuild: builds a fresh agent of the same kind (default :func:`agents.registry.rebuild`: its registered class, config and name);
            needed for agents built by the simulator, such as ``oracle``.

    Raises:
        AssertionError: naming the agent and the first broken rule.
    """
    who = getattr(agent, "name", type(agent).__name__)
    _fail_unless(isinstance(agent, RetrievalAgent), who, "does not implement the RetrievalAgent protocol")
    if rebuild is None:
        _fail_unless(hasattr(agent, "ctx") and hasattr(agent, "config"), who, "needs .ctx and .config attributes (or pass rebuild)")
        rebuild = lambda: registry.rebuild(agent)  # noqa: E731
    _check_fit(agent, view, who)
    agent.index(view.catalogue)
    ids, scores = _check_retrieval(agent, view, requests, k, who)
    _check_score(agent, requests, ids, scores, who)
    _check_too_large_k(agent, view, requests, who)
    _check_state(agent, view, requests, k, check_resume, who, rebuild)
