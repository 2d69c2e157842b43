"""Offline evaluation: estimators on hand-computed logs, their statistics, the hold-out barrier, the protocols'
agreement with the truth where no feedback loop biases them, and the leaderboard statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from scenarios.experiment import make_experiment, run_experiment
from simulator.config import ConfigError
from simulator.evaluation_config import active_estimators
from simulator.log.split import holdout_flags
from simulator.metrics import estimators as E
from simulator.metrics.leaderboard import kendall_tau_b, top1_agreement
from simulator.metrics.protocols import ranking_metrics
from simulator.round import training_view
from simulator.timeline import run_round, warm_started_loop
from simulator.world.user_model import expected_response, respond
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")

# two requests, two slots: logged items, clicks, propensities; the target slates
LOGGED = torch.tensor([[1, 2], [3, 4]])
REWARD = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
PROP = torch.tensor([[0.5, 0.25], [0.2, 0.4]])
TARGET = torch.tensor([[2, 1], [4, 9]])


def test_estimators_on_a_hand_computed_log() -> None:
    match = E.item_match(LOGGED, TARGET)  # request 0: both logged items in the target; request 1: item 4 only
    assert match.tolist() == [[True, True], [False, True]]
    # IPS = 1/2 * (1/0.5 + 0/0.25 + 1/0.4) = 2.25
    assert E.ips(REWARD, match, PROP, 1e-6) == pytest.approx(2.25)
    # SNIPS = S * sum(r w) / sum(w) = 2 * 4.5 / (2 + 4 + 2.5)
    assert E.snips(REWARD, match, PROP, 1e-6) == pytest.approx(2 * 4.5 / 8.5)
    model_target = torch.tensor([[0.3, 0.2], [0.1, 0.0]])
    model_logged = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert E.direct_method(model_target) == pytest.approx(0.3)
    # DR = DM + 1/2 * ((1-0.5)/0.5 + (0-0.5)/0.25 + (1-0.5)/0.4) = 0.3 + 0.5 * (1 - 2 + 1.25)
    assert E.doubly_robust(REWARD, match, PROP, 1e-6, model_logged, model_target) == pytest.approx(0.3 + 0.125)
    # position-level: only request 0 slot ... none match at the same slot except (1, 9)? none
    assert E.slot_match(LOGGED, TARGET).tolist() == [[False, False], [False, False]]
    # the floor clips small propensities before dividing
    assert E.ips(REWARD, match, PROP, 0.5) == pytest.approx(0.5 * (1 / 0.5 + 1 / 0.5))


def test_doubly_robust_is_ips_when_the_reward_model_is_zero() -> None:
    match = E.item_match(LOGGED, TARGET)
    zero = torch.zeros_like(REWARD)
    assert E.doubly_robust(REWARD, match, PROP, 1e-6, zero, zero) == pytest.approx(E.ips(REWARD, match, PROP, 1e-6))


def test_snips_without_any_match_is_nan_not_zero() -> None:
    assert math.isnan(E.snips(REWARD, torch.zeros_like(REWARD, dtype=torch.bool), PROP, 1e-6))


def _uniform_log(n: int, m: int, s: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniform logging of ordered S-slates from m items; click prob = exam(slot) x attraction(item)."""
    slates = torch.rand(n, m, generator=gen).argsort(1)[:, :s]
    attraction = torch.linspace(0.05, 0.9, m)
    exam = 1.0 / (1.0 + torch.arange(s, dtype=torch.float32))
    clicks = (torch.rand(n, s, generator=gen) < exam * attraction[slates]).double()
    return slates, clicks, attraction


def test_ips_and_snips_are_unbiased_under_uniform_logging() -> None:
    """On a synthetic uniform log the item-position IPS and SNIPS land within 4 standard errors of the true value."""
    n, m, s = 40_000, 20, 3
    gen = torch.Generator().manual_seed(7)
    slates, clicks, attraction = _uniform_log(n, m, s, gen)
    target = torch.tensor([[0, 1, 19]]).expand(n, s)  # the most attractive item in the least examined slot
    exam = 1.0 / (1.0 + torch.arange(s, dtype=torch.float64))
    truth = float((exam * attraction[target[0]].double()).sum())
    match, prop = E.slot_match(slates, target), torch.full((n, s), 1.0 / m)
    per_request = (clicks * match / prop).sum(1)
    se = float(per_request.std() / math.sqrt(n))  # the estimator's own standard error at this sample size
    assert abs(E.ips(clicks, match, prop, 1e-9) - truth) < 4 * se
    assert abs(E.snips(clicks, match, prop, 1e-9) - truth) < 4 * se
    # item-level IPS ignores the slot: its items are credited with the mean examination over slots, so it
    # overestimates a target that hides its best item in the last slot (expected 0.61 x 1.045 vs the truth 0.40)
    item_ips = E.ips(clicks, E.item_match(slates, target), torch.full((n, s), s / m), 1e-9)
    assert item_ips > truth + 4 * se


def test_asking_for_an_estimator_without_propensities_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^evaluation\.estimators: ips need logged propensities"):
        tiny_scenario(evaluation={"estimators": ["ips"]})
    with pytest.raises(ConfigError, match=r"^evaluation\.estimators: ips_pos needs"):
        tiny_scenario(cascade={"stochastic": True}, evaluation={"estimators": ["ips_pos"]})
    assert active_estimators(tiny_scenario()) == ()
    assert "ips_pos" in active_estimators(tiny_scenario(cascade={"exploration_share": 0.1}))


def test_holdout_requests_never_reach_the_training_view() -> None:
    sc = tiny_scenario(evaluation={"holdout_share": 0.3})
    loop = warm_started_loop(sc, 0)
    run_round(loop, 0)
    run_round(loop, 1)
    req = loop.log.concat("requests", 0, 1)
    held = holdout_flags(0, req["user_id"], req["round"], 0.3)
    assert 0.15 < float(held.float().mean()) < 0.45  # the split is active
    view = training_view(loop, 1)
    assert not bool(torch.isin(view.requests.request_id, req["request_id"][held]).any())
    assert set(view.requests.request_id.tolist()) >= set(req["request_id"][~held].tolist())
    assert bool((view.requests.request_id[view.impressions.row] >= 0).all())
    assert torch.equal(view.requests.request_id[view.impressions.row].unique(), view.requests.request_id.unique()) or len(view.impressions)
    assert not bool(torch.isin(view.candidates.row, torch.tensor([-1])).any())
    # rows point at the right requests: each impression's user is its request's user
    imp = loop.log.concat("impressions", 0, 1)
    kept = ~torch.isin(imp["request_id"], req["request_id"][held])
    assert torch.equal(view.impressions.item_id, imp["item_id"][kept])
    assert torch.equal(view.requests.user_id[view.impressions.row], imp["user_id"][kept])


def _holdout_gap(exploration_share: float) -> tuple[float, float]:
    """Mean (hold-out recall@50 - its truth) of the oracle's candidate over two rounds, and a 4-sigma tolerance."""
    sc = tiny_scenario(
        cascade={"exploration_share": exploration_share}, user_model={"promo_click_prob": 0.0}, world={"conformity_mean": 0.0},
        timeline={"rounds": 2, "requests_per_round": 3000}, evaluation={"holdout_share": 0.5, "shared_log": False},
    )
    metrics = run_experiment(make_experiment(sc, agent_names=["oracle"], seeds=1, rounds=2))
    wide = metrics.pivot_table(index="round", columns="metric", values="value")
    n = float(wide["offline_holdout_requests"].sum())
    assert n > 500
    diff = float((wide["offline_holdout_recall@50"] - wide["true_holdout_recall@50"]).mean())
    return diff, 4 * 0.5 / math.sqrt(n)  # recall is in [0, 1]: its standard deviation is at most 1/2


def test_holdout_recall_agrees_with_the_truth_without_a_feedback_loop() -> None:
    """With uniform serving and clicks proportional to relevance, the hold-out recall estimates the truth;
    under the agent's own serving (exposure bias) the same comparison shows the bias."""
    diff, tol = _holdout_gap(1.0)
    assert abs(diff) < tol
    biased, tol = _holdout_gap(0.0)
    assert biased < -tol  # the oracle's best items were mostly never shown, so their clicks are missing


def test_expected_response_matches_the_sampled_user_model() -> None:
    sc = tiny_scenario(user_model={"promo_click_prob": 0.3}, world={"conformity_mean": 0.4})
    loop = warm_started_loop(sc, 0)
    world, n = loop.world, 20_000
    users = torch.arange(n) % 200
    slate = (torch.arange(n * 5).reshape(n, 5) * 7) % 300
    rel = torch.rand(n, 5, generator=torch.Generator().manual_seed(1))
    entry = torch.arange(n) % 3
    fb = respond(world, sc, users, entry, slate, rel, torch.Generator().manual_seed(2))
    p_click, p_finish = expected_response(world, sc, users, entry, slate, rel)
    tol = 4 * 0.5 / math.sqrt(n)
    assert abs(float(fb.clicked.double().mean() - p_click.double().mean())) < tol
    assert abs(float(fb.finished.double().mean() - p_finish.double().mean())) < tol


def test_ranking_metrics_on_a_hand_computed_case() -> None:
    lists = torch.tensor([[5, 6, 7], [1, 2, 3]])
    clicked = torch.tensor([[6, -1], [9, 3]])
    out = ranking_metrics(lists, clicked, (2,), "x")
    assert out["x_recall@2"] == pytest.approx((1 / 1 + 0 / 2) / 2)
    assert out["x_precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert out["x_hitrate@2"] == pytest.approx(0.5)
    assert out["x_ndcg@2"] == pytest.approx((1 / math.log2(3)) / 1 / 2)


def test_kendall_tau_b_and_top1_on_hand_computed_cases() -> None:
    assert kendall_tau_b(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == pytest.approx(1.0)
    assert kendall_tau_b(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)
    # one discordant pair of three, no ties: (2 - 1) / 3
    assert kendall_tau_b(np.array([1.0, 2, 3]), np.array([1.0, 3, 2])) == pytest.approx(1 / 3)
    # a tie in x: pairs (1,2) tied; C = 2, D = 0, n0 = 3, n1 = 1: 2 / sqrt(2 * 3)
    assert kendall_tau_b(np.array([1.0, 1, 2]), np.array([1.0, 2, 3])) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))
    assert top1_agreement(np.array([0.1, 0.9, 0.5]), np.array([1.0, 3.0, 2.0])) == 1.0
    assert top1_agreement(np.array([0.9, 0.1, 0.5]), np.array([1.0, 3.0, 2.0])) == 0.0
    # a tie at the top is a coin flip among the tied agents, whatever their names
    assert top1_agreement(np.zeros(3), np.array([3.0, 1.0, 2.0])) == pytest.approx(1 / 3)
    assert top1_agreement(np.zeros(3), np.array([1.0, 3.0, 2.0])) == pytest.approx(1 / 3)


def test_shared_log_is_identical_for_every_agent_and_offline_rows_exist() -> None:
    sc = tiny_scenario(timeline={"rounds": 2})
    metrics = run_experiment(make_experiment(sc, agent_names=["random", "popular"], seeds=1, rounds=2))
    n = metrics[metrics.metric == "offline_shared_requests"].pivot_table(index="round", columns="agent", values="value")
    assert (n["random"] == n["popular"]).all() and (n["random"] > 0).all()
    assert {"offline_holdout_recall@20", "true_holdout_recall@20", "bias_holdout_recall@20"} <= set(metrics.metric)


def test_the_audit_trail_recomputes_the_truth_and_offline_metrics() -> None:
    """With save_truth, a round's panel and hold-out tables alone give back true_recall@K and the hold-out metrics."""
    from scenarios.experiment import agent_factory
    from simulator.round import attach_agent

    sc = tiny_scenario(cascade={"exploration_share": 0.2}, evaluation={"holdout_share": 0.3})
    loop = warm_started_loop(sc, 0)
    attach_agent(loop, agent_factory("popular", sc, 0, torch.device("cpu")), "popular")
    loop.save_truth = True
    run_round(loop, 0)
    tables = loop.audit.frames()
    metrics = {row["metric"]: row["value"] for row in loop.rows}
    panel, k = tables["panel"], 20
    agent, true = np.stack(panel.agent_top), np.stack(panel.true_top)
    recall = np.mean([len(set(a[:k]) & set(t[:k])) / k for a, t in zip(agent, true, strict=True)])
    assert recall == pytest.approx(metrics[f"true_recall@{k}"], abs=1e-9)
    held = tables["holdout"]
    lists, clicked = np.stack(held.candidate_top), np.stack(held.clicked)
    hits = [len(set(lst[:k]) & set(c[c >= 0])) / (c >= 0).sum() for lst, c in zip(lists, clicked, strict=True)]
    assert np.mean(hits) == pytest.approx(metrics[f"offline_holdout_recall@{k}"], abs=1e-9)
    ope = tables["ope"]
    assert len(ope) == metrics["ope_requests"]
    assert float(np.stack(ope.p_click).sum(1).mean()) == pytest.approx(metrics["true_clicks"], rel=1e-6)
    assert loop.copy().audit is None  # never copied or checkpointed


def test_save_truth_writes_the_audit_trail_per_round(tmp_path) -> None:
    sc = tiny_scenario(timeline={"rounds": 2})
    exp = make_experiment(sc, agent_names=["popular"], seeds=1, rounds=2, save_truth=True)
    metrics = run_experiment(exp, tmp_path / "run")
    folder = tmp_path / "run" / "truth" / "popular__seed0"
    assert sorted(p.name for p in folder.iterdir()) == ["holdout", "panel", "shared"]
    for r in (0, 1):
        panel = pd.read_parquet(folder / "panel" / f"round={r:05d}.parquet")
        agent, true = np.stack(panel.agent_top), np.stack(panel.true_top)
        recall = np.mean([len(set(a[:20]) & set(t[:20])) / 20 for a, t in zip(agent, true, strict=True)])
        want = metrics[(metrics["round"] == r) & (metrics.metric == "true_recall@20")].value.item()
        assert recall == pytest.approx(want, abs=1e-9)
