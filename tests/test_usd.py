"""USD (algorithms.md §14, our reading): the losses and weak labels on hand-computed cases, the sampler's statistics,
the contract, determinism, and §14(f)'s sanity check against the oracle attended flag and click motive.

The oracle fields (``truth_requests.attended``, ``truth_impressions.motive``) are read here, in the test, only; the
agent sees the training view.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from agents import check_agent, make_agent
from agents.bc import BC
from agents.usd import USD, USDConfig, keep_negatives, sample_replacements, usd_examples, usd_loss
from agents.usd_heads import attention_data, head_loss, validity_data
from scenarios.experiment import agent_factory, warm_started_loop
from simulator.round import training_view
from simulator.types import ENTRY_BROWSE, ENTRY_PORTAL, ENTRY_SEARCH, MOTIVE_PORTAL
from tests.agent_fixtures import auc, tiny_context, tiny_view
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ("usd", "usd-no-sampler", "usd-no-exposure-debias", "usd-no-click-debias")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(seed=3)


@pytest.fixture(scope="module")
def view(ctx):
    return tiny_view(ctx, seed=3)


# --- the losses on hand-computed cases ---------------------------------------------------------------------------------


def test_usd_loss_is_the_weighted_mean_bce_plus_l2():
    logits, targets, weights = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.5, 1.0, 0.25])
    # BCE(σ(0), 1) = ln 2; BCE(σ(2), 0) = ln(1 + e^2); BCE(σ(-1), 0) = ln(1 + e^-1)
    expected = (0.5 * math.log(2) + math.log(1 + math.e**2) + 0.25 * math.log(1 + math.exp(-1))) / 3
    assert float(usd_loss(logits, targets, weights)) == pytest.approx(expected, rel=1e-6)
    assert float(usd_loss(logits, targets, weights, torch.tensor(4.0), 0.1)) == pytest.approx(expected + 0.4, rel=1e-6)
    # with unit weights (or None) it is BC's loss
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, targets))
    assert float(usd_loss(logits, targets, torch.ones(3))) == pytest.approx(bce) and float(usd_loss(logits, targets, None)) == bce


def test_usd_loss_sends_no_gradient_into_the_weights():
    w = torch.tensor([0.3, 0.9], requires_grad=True)
    logits = torch.tensor([1.0, -1.0], requires_grad=True)
    usd_loss(logits, torch.tensor([1.0, 0.0]), w).backward()
    assert w.grad is None and logits.grad is not None


def test_head_loss_is_bce_on_the_weak_label():
    assert float(head_loss(torch.tensor([0.0, math.log(3)]), torch.tensor([1.0, 0.0]))) == pytest.approx((math.log(2) + math.log(4)) / 2)


def hand_view(ctx):
    """Two requests x three slots with hand-set proxies (the rest of ``tiny_view`` is irrelevant here)."""
    v = tiny_view(ctx, seed=0, n_requests=2, slate=3)
    imp = dataclasses.replace(
        v.impressions,
        dwell=torch.tensor([1.0, 0.05, 0.0, 0.5, 0.5, 0.01]),
        clicked=torch.tensor([False, False, False, False, True, False]),
        other_clicks=torch.tensor([0, 0, 0, 1, 0, 1], dtype=torch.int32),
        scroll_depth=torch.tensor([1.0, 1.0, 1.0, 3.0, 3.0, 3.0]),
        engagement=torch.tensor([0.0, 0.0, 0.0, 0.0, 7.0, 0.0]),
    )
    req = dataclasses.replace(v.requests, entry=torch.tensor([ENTRY_SEARCH, ENTRY_BROWSE]), domain=torch.tensor([0, 1]))
    return dataclasses.replace(v, impressions=imp, requests=req)


def test_attention_weak_label_and_features_by_hand(ctx):
    data = attention_data(hand_view(ctx), dwell_threshold=0.2, device=CPU)
    # request 0: only slot 0 has dwell >= 0.2; request 1: other clicks on slots 0 and 2, slot 1 clicked itself
    assert data.y.tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    loo = (math.log(0.05 + 0.01) + math.log(0.0 + 0.01)) / 2 / 5.0  # slot 0: the mean log dwell of slots 1 and 2
    # entry one-hot (search), domain, slot / S, scroll / S, (scroll - slot - 1) / S, scroll logged, other slots' dwell
    assert data.x[0].tolist() == pytest.approx([0, 1, 0, 0, 0, 1 / 3, 0, 1, loo], abs=1e-6)
    assert data.x[5, :4].tolist() == [1, 0, 0, 1] and data.x[5, 4:7].tolist() == pytest.approx([2 / 3, 1, 0])


def test_attention_inputs_never_contain_the_rows_own_label_fields(ctx):
    """Leakage (§14(f)): a row's own dwell, click and other-clicks change its label, never its inputs."""
    v = hand_view(ctx)
    base = attention_data(v, 0.2, CPU)
    imp = dataclasses.replace(v.impressions, dwell=v.impressions.dwell.clone().index_fill_(0, torch.tensor([1]), 9.0))
    moved = attention_data(dataclasses.replace(v, impressions=imp), 0.2, CPU)
    assert torch.equal(moved.x[1], base.x[1]) and moved.y[1] == 1.0 and base.y[1] == 0.0
    assert not torch.equal(moved.x[0], base.x[0])  # the other rows of the request do see it


def test_validity_weak_label_and_leave_one_out_item_share_by_hand(ctx):
    v = tiny_view(ctx, seed=0, n_requests=2, slate=3)
    items = torch.tensor([7, 7, 7, 9, 9, 4])
    imp = dataclasses.replace(
        v.impressions, item_id=items, clicked=torch.tensor([True, True, True, True, False, False]),
        engagement=torch.tensor([5.0, 0.0, 2.0, 0.0, 0.0, 0.0]),
    )  # fmt: skip
    data = validity_data(dataclasses.replace(v, impressions=imp), CPU, prior_strength=2.0)
    assert data.rows.tolist() == [0, 1, 2, 3] and data.y.tolist() == [1.0, 0.0, 1.0, 0.0]
    prior = 0.5  # 2 engaged of 4 clicks
    # item 7, click 0: the other two clicks hold one engaged -> (1 + 2 * 0.5) / (2 + 2); item 9: no other click
    assert data.x[:, -3].tolist() == pytest.approx([(1 + 1) / 4, (2 + 1) / 4, (1 + 1) / 4, prior])
    assert data.x[:, -2].tolist() == pytest.approx([math.log(3) / 5] * 3 + [0.0])


# --- the sampler ---------------------------------------------------------------------------------------------------------


def test_keep_negatives_drops_the_lowest_attention_non_clicks_only():
    a = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    negative = torch.tensor([True, False, True, True, True, True, True, True, True, True])
    keep, threshold = keep_negatives(a, negative, 30.0)
    assert threshold == pytest.approx(0.3)  # the lower order statistic at 0.3 x 9 = 2.7 -> index 2
    assert keep.tolist() == [False, True] + [True] * 8  # the click at a = 0.2 stays


def test_replacements_come_from_the_requests_own_spaces_in_the_stated_proportion(view):
    """B with probability ``b_share`` (every tiny request has 5 B items), else C; 4 sigma of the binomial."""
    gen = torch.Generator().manual_seed(11)
    rows = torch.randint(0, len(view.requests), (4000,), generator=gen)
    items, valid, from_b = sample_replacements(view, rows, 0.3, gen, "clicked")
    assert bool(valid.all())
    n = len(rows)
    assert abs(float(from_b.float().mean()) - 0.3) <= 4 * math.sqrt(0.3 * 0.7 / n)
    cand = view.candidates
    recalled = torch.full((len(view.requests), 10), -1, dtype=torch.int64)
    recalled.view(-1)[:] = cand.item_id  # tiny_view lays candidates out request by request, 10 each
    exposed = cand.exposed.view(len(view.requests), 10)
    in_b = ((recalled[rows] == items.unsqueeze(1)) & ~exposed[rows]).any(1)
    in_recalled = (recalled[rows] == items.unsqueeze(1)).any(1)
    assert torch.equal(in_b, from_b) and not bool(in_recalled[~from_b].any())
    assert bool(view.catalogue.live[items].all())
    # C is uniform over the live items outside the recalled set: every live item is reachable, none dominates
    counts = torch.bincount(items[~from_b], minlength=view.n_items)[view.catalogue.live]
    expected = float((~from_b).sum()) / max(int(view.catalogue.live.sum()) - 10, 1)
    assert float(counts.max()) <= expected + 5 * math.sqrt(expected)


def test_examples_weight_and_replace_as_configured(view):
    e = len(view.impressions)
    gen = torch.Generator().manual_seed(2)
    a, c = torch.rand(e, generator=gen) * 0.9 + 0.1, torch.rand(e, generator=gen)
    clicked = view.impressions.clicked.bool()
    rows, diag = usd_examples(view, USDConfig(keep_percentile=50.0), a, c, torch.Generator().manual_seed(0), CPU)
    keep, _ = keep_negatives(a, ~clicked, 50.0)
    n_keep, n_drop = int(keep.sum()), int((~keep).sum())
    assert len(rows.data) == n_keep + n_drop and diag["replaced"] == n_drop
    expected = torch.where(clicked, c, a)[keep]
    assert torch.equal(rows.weights[:n_keep], expected) and bool((rows.weights[n_keep:] == 1).all())
    assert bool((rows.data.labels[n_keep:] == 0).all())
    ips, _ = usd_examples(view, USDConfig(positive_weight="ips", sampler=False), a, c, torch.Generator(), CPU)
    assert torch.allclose(ips.weights[clicked], (c / a.clamp_min(0.05))[clicked])
    off, _ = usd_examples(view, USDConfig(sampler=False, exposure_debias=False, click_debias=False), a, c, torch.Generator(), CPU)
    assert len(off.data) == e and bool((off.weights == 1).all())


# --- the agent ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_check_agent(ctx, view, name):
    check_agent(make_agent(name, ctx), view, view.requests.select(torch.arange(16)), 12)


def test_everything_off_is_bc_bit_for_bit(ctx, view):
    """Same data, streams and loss."""
    off = USD(ctx, USDConfig(sampler=False, exposure_debias=False, click_debias=False), name="bc")
    bc = BC(ctx, name="bc")
    d_off, d_bc = off.fit(view), bc.fit(view)
    assert d_off["loss"] == pytest.approx(d_bc["loss"], rel=1e-6)
    for agent in (off, bc):
        agent.index(view.catalogue)
    req = view.requests.select(torch.arange(30))
    assert d_off["loss"] == d_bc["loss"]
    assert all(torch.equal(x, y) for x, y in zip(off.retrieve(req, 10), bc.retrieve(req, 10), strict=True))


def test_same_seed_same_result_other_seed_differs(view):
    def run(seed: int):
        agent = make_agent("usd", tiny_context(seed=seed))
        diag = agent.fit(view)
        agent.index(view.catalogue)
        return diag, agent.retrieve(view.requests.select(torch.arange(20)), 10)

    (d1, (i1, s1)), (d2, (i2, s2)), (_, (_, s3)) = run(4), run(4), run(5)
    assert d1 == pytest.approx(d2, nan_ok=True) and torch.equal(i1, i2) and torch.equal(s1, s2)
    assert not torch.equal(s1, s3)


def test_bad_config_fails_with_one_line_naming_the_field(ctx):
    with pytest.raises(ValueError, match=r"^agents\.usd\.keep_percentile: must be in \[0, 100\)"):
        make_agent("usd", ctx, keep_percentile=100.0)
    with pytest.raises(ValueError, match=r"^agents\.usd\.positive_weight: must be one of"):
        make_agent("usd", ctx, positive_weight="raw")


# --- §14(f) sanity: the heads against the oracle ---------------------------------------------------------------------------

HOMEPAGE_LIKE = {
    "world": {"promoted_share": 0.2},
    "user_model": {"promo_click_prob": 0.3, "portal_entry_share": 0.15},
    "session": {"enabled": True, "mean_length": 3.0, "intent_persistence": 0.8},
    "attention": {"enabled": True, "search_share": 0.5, "browse_attend_prob": 1.0, "search_attend_prob": 0.2, "portal_attend_prob": 0.6},
    "click_motive": {"enabled": True},
    "cascade": {"slate_size": 10},
    "timeline": {"requests_per_round": 1500},
}


@pytest.fixture(scope="module")
def fitted():
    """USD fitted on the warm-start log of a tiny world with the homepage preset's attention and motive settings."""
    sc = tiny_scenario(**HOMEPAGE_LIKE)
    loop = warm_started_loop(sc, 0, CPU)
    view = training_view(loop, -1)
    agent = agent_factory("usd", sc, 0, CPU)(loop)
    agent.fit(view)
    rounds = loop.log.rounds()
    truth_req = pd.concat([loop.truth.frame("truth_requests", r) for r in rounds]).set_index("request_id")
    truth_imp = pd.concat([loop.truth.frame("truth_impressions", r) for r in rounds]).set_index(["request_id", "position"])
    return agent, view, truth_req, truth_imp


def test_the_attention_filter_finds_the_unattended_exposures(fitted):
    """Precision and recall of "kept as a negative" against the oracle attended flag, on the unclicked exposures."""
    agent, view, truth_req, _ = fitted
    imp = view.impressions
    attended = torch.tensor(truth_req.loc[view.requests.request_id[imp.row].numpy()].attended.to_numpy())
    a = agent.attention.predict(attention_data(view, agent.config.dwell_threshold, CPU).x)
    negative = ~imp.clicked.bool()
    keep, _ = keep_negatives(a, negative, agent.config.keep_percentile)
    kept, att = keep[negative], attended[negative]
    assert 0.3 < 1 - float(att.float().mean()) < 0.55  # the world has its share of pseudo-negatives (≈ 40 %)
    n = int(negative.sum())
    precision, recall = float((kept & att).sum() / kept.sum()), float((kept & att).sum() / att.sum())
    tol = 4 * math.sqrt(0.25 / n)
    assert precision > 0.7 + tol and recall > 0.7 + tol
    assert precision > float(att.float().mean()) + 0.1  # better than keeping everything


def test_the_click_validity_ranks_genuine_clicks_above_portal_clicks(fitted):
    agent, view, _, truth_imp = fitted
    data = validity_data(view, CPU)
    imp = view.impressions
    keys = list(zip(view.requests.request_id[imp.row[data.rows]].tolist(), imp.position[data.rows].tolist(), strict=True))
    genuine = torch.tensor(truth_imp.loc[keys].motive.to_numpy() != MOTIVE_PORTAL)
    assert 0.1 < 1 - float(genuine.float().mean()) < 0.4 and len(genuine) > 500
    c = agent.validity.predict(data.x)
    assert auc(c, genuine) > 0.75
    assert float(c[genuine].mean()) > float(c[~genuine].mean()) + 0.2
    assert ENTRY_PORTAL == 2  # the entry one-hot's order (browse, search, portal) is the simulator's
