"""The mini-app truth metrics grade the panel as mini-app requests, against the relevance those requests respond to."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from simulator.metrics.mini_app import mini_app_relevance_all, mini_app_truth_metrics
from simulator.round import metric_input
from simulator.timeline import warm_started_loop
from simulator.world import features
from simulator.world.relevance import true_relevance_all
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")


class RelevanceOracle:
    """Retrieves the true top-k of a relevance function of (users, intents); learns the intents via ``set_intents``."""

    def __init__(self, relevance):
        self.relevance, self.intents = relevance, None

    def set_intents(self, request_ids, intents):
        self.intents = intents

    def retrieve(self, requests, k):
        top = self.relevance(requests.user_id, self.intents).topk(k, dim=1)
        return top.indices, top.values


@pytest.fixture(scope="module")
def shifted():
    sc = tiny_scenario(world={"mini_app_share": 0.3}, mini_app={"preference_shift": 2.0, "domain_affinity": 0.5})
    loop = warm_started_loop(sc, 0, torch.device("cpu"))
    return loop, metric_input(loop, loop.log.rounds()[-1])


def _with(inp, oracle):
    return replace(inp, retriever=oracle, set_intents=oracle.set_intents)


def test_relevance_is_the_world_s_domain_relevance_for_mini_app_requests(shifted):
    loop, inp = shifted
    users, intents = torch.tensor([0, 5, 9]), torch.tensor([1, 0, 2])
    got = mini_app_relevance_all(inp, users, intents)
    w = loop.world
    base = true_relevance_all(w, loop.sc, users, intents)
    shift = features.category_shift(loop.sc, loop.seed, w.device)[w.item_category]
    want = torch.sigmoid(torch.logit(base.clamp(1e-6, 1 - 1e-6)) + shift + 0.5 * (w.item_domain == 1))
    live = w.item_live
    assert torch.allclose(got[:, live], want[:, live], atol=1e-5) and (got[:, ~live] == -1).all()


def test_an_oracle_of_the_mini_app_relevance_scores_one_and_a_main_feed_oracle_less(shifted):
    loop, inp = shifted
    mini = RelevanceOracle(lambda u, i: mini_app_relevance_all(inp, u, i))
    main = RelevanceOracle(lambda u, i: true_relevance_all(loop.world, loop.sc, u, i))
    m_mini, m_main = mini_app_truth_metrics(_with(inp, mini)), mini_app_truth_metrics(_with(inp, main))
    assert m_mini["mini_app_true_recall@20"] == pytest.approx(1.0) and m_mini["mini_app_true_ndcg@20"] == pytest.approx(1.0)
    assert m_main["mini_app_true_recall@20"] < 0.9  # a shift of std 2 in logits reorders the top-20
    assert m_mini["mini_app_retrieval_slate_regret"] == pytest.approx(0.0, abs=1e-9)
    assert m_main["mini_app_retrieval_slate_regret"] > 0


def test_off_without_mini_app_traffic():
    sc = tiny_scenario()
    loop = warm_started_loop(sc, 0, torch.device("cpu"))
    assert mini_app_truth_metrics(metric_input(loop, loop.log.rounds()[-1])) == {}
