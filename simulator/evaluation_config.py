"""The ``[evaluation]`` section of a scenario: how offline evaluation is run and held against the truth.

Kept beside :mod:`simulator.config` (which embeds it) so the offline side reads as one unit:
the protocols (hold-out, shared log), the off-policy estimators and what each needs from the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from simulator.config import Scenario

Estimator = Literal["ips", "snips", "dr", "dm", "ips_pos"]
ESTIMATORS: tuple[Estimator, ...] = ("ips", "snips", "dr", "dm", "ips_pos")


class EvaluationConfig(BaseModel):
    """Offline protocols and off-policy estimators, computed every round for every agent."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    holdout_share: float = Field(
        0.1, ge=0, le=0.5, description="share of each round's users whose requests are withheld from training and held out (0: off)"
    )
    shared_log: bool = Field(True, description="score every agent's candidate on one common log served by the legacy system")
    shared_log_requests: int = Field(400, ge=10, le=1_000_000, description="requests per round in the shared log")
    shared_log_exploration: float = Field(0.2, ge=0, le=1, description="share of the shared log served uniformly at random")
    estimators: tuple[Estimator, ...] | Literal["auto"] = Field(
        "auto",
        description="off-policy estimators: 'auto' = every one the scenario's logs support; or a list of ips, snips, dr, dm, ips_pos",
    )
    ope_logs: Literal["auto", "explore", "stochastic"] = Field(
        "auto", description="rows the estimators read: the exploration slice (exact propensities), stochastic serving (Monte-Carlo) or auto"
    )
    propensity_floor: float = Field(1e-4, gt=0, le=1, description="propensities are clipped below at this value before dividing")


def ope_rows(sc: Scenario) -> Literal["explore", "stochastic"] | None:
    """Which logged rows carry propensities the estimators can use (None: none do)."""
    cfg, ev = sc.cascade, sc.evaluation
    has_explore, has_stochastic = cfg.exploration_share > 0, cfg.stochastic
    if ev.ope_logs == "explore":
        return "explore" if has_explore else None
    if ev.ope_logs == "stochastic":
        return "stochastic" if has_stochastic else None
    return "explore" if has_explore else ("stochastic" if has_stochastic else None)


def active_estimators(sc: Scenario) -> tuple[Estimator, ...]:
    """The estimators that run: ``auto`` resolves to what the logs support (ips_pos needs the uniform slice)."""
    rows = ope_rows(sc)
    if rows is None:
        return ()
    supported = tuple(e for e in ESTIMATORS if e != "ips_pos" or rows == "explore")
    return supported if sc.evaluation.estimators == "auto" else tuple(sc.evaluation.estimators)


def check_estimators(sc: Scenario) -> None:
    """Raise ``ValueError('evaluation.estimators: ...')`` when an asked-for estimator has no propensities to use."""
    asked = sc.evaluation.estimators
    if asked == "auto" or not asked:
        return
    rows = ope_rows(sc)
    if rows is None:
        raise ValueError(
            f"evaluation.estimators: {', '.join(asked)} need logged propensities; set cascade.stochastic = true or "
            f"cascade.exploration_share > 0 (evaluation.ope_logs = {sc.evaluation.ope_logs!r}), or estimators = []"
        )
    if "ips_pos" in asked and rows != "explore":
        raise ValueError(
            "evaluation.estimators: ips_pos needs per-slot propensities, which only the uniform exploration slice has; "
            "set cascade.exploration_share > 0"
        )
