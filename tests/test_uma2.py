"""UMA², its sampling strategies and YouTube-DNN (issue 4): spaces, losses, weights, NSDN heads, Eq. 2 reduction."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import agents.sampling_strategies  # noqa: F401  (registers the strategies)
import agents.uma2  # noqa: F401
import agents.youtube_dnn  # noqa: F401
from agents import check_agent, make_agent
from agents.backbone.spaces import build_spaces, sample_a, sample_b, sample_c, sample_random
from agents.sampling_strategies import gmm_loss
from agents.uma2 import nsdn_loss
from simulator.round import attach_agent, training_view
from scenarios.experiment import agent_factory, warm_started_loop
from simulator.cascade.serving import _mc_inclusion, gumbel_topk
from simulator.log.view import Candidates, Impressions, TrainingView
from simulator.timeline import run_round
from tests.agent_fixtures import FakeScorer, auc, click_prob, make_requests, tiny_catalogue, tiny_context, tiny_users, tiny_view
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILY = ("ss-a", "ss-ab", "ss-abc-random", "ss-abc-fixed", "youtube-dnn", "youtube-dnn-softmax", "uma2", "uma2-dat", "uma2-oracle-p")


@pytest.fixture(scope="module")
def stochastic_loop():
    """A tiny world with stochastic serving after warm start + round 0 served by bc: real logged spaces and propensities."""
    sc = tiny_scenario(cascade={"stochastic": True, "propensity_samples": 32, "expose_temperature": 0.3})
    loop = warm_started_loop(sc, 0, torch.device("cpu"))
    attach_agent(loop, agent_factory("bc", sc, 0, torch.device("cpu")), "bc")
    run_round(loop, 0)
    return loop


@pytest.fixture(scope="module")
def real_view(stochastic_loop) -> TrainingView:
    return training_view(stochastic_loop, 0)


def _keys(rows: torch.Tensor, items: torch.Tensor, n_items: int) -> torch.Tensor:
    return rows.long() * n_items + items.long()


# --- the space samplers ---------------------------------------------------------------------------


@pytest.mark.parametrize("c_tries", [4, 0])
def test_space_samplers_draw_each_space_exactly_as_logged(real_view, c_tries):
    """A: exposed & unclicked; B: recalled & never exposed; C: live and never recalled, all of that request.

    Checked against the raw log tables (not the padded layout the samplers use);
    ``c_tries = 0`` forces the exact (masked) fallback of the C sampler.
    """
    view, n = real_view, real_view.n_items
    cand, imp = view.candidates, view.impressions
    recalled = _keys(cand.row, cand.item_id, n)
    exposed_keys = _keys(imp.row, imp.item_id, n)
    unclicked_keys = exposed_keys[~imp.clicked]
    spaces = build_spaces(view, "clicked", torch.device("cpu"))
    assert len(spaces.pos_row) == int(imp.clicked.sum()) > 0
    rows = spaces.pos_row
    gen = torch.Generator().manual_seed(0)
    a, b = sample_a(spaces, rows, 30, gen), sample_b(spaces, rows, 30, gen)
    c = sample_c(spaces, rows, 30, gen, tries=c_tries)
    r = rows.unsqueeze(1).expand(-1, 30)
    assert bool(torch.isin(_keys(r[a.valid], a.items[a.valid], n), unclicked_keys).all())
    b_keys = _keys(r[b.valid], b.items[b.valid], n)
    assert bool(torch.isin(b_keys, recalled).all()) and not bool(torch.isin(b_keys, exposed_keys).any())
    assert bool(c.valid.all())
    assert not bool(torch.isin(_keys(r, c.items, n), recalled).any())
    assert bool(view.catalogue.live[c.items].all())
    # every request's B space is non-empty here (K_r > S), A is empty only when the whole slate was clicked
    assert bool(b.valid.all())
    all_clicked = torch.zeros(len(view.requests), dtype=torch.bool)
    n_unclicked = torch.bincount(imp.row[~imp.clicked], minlength=len(view.requests))
    all_clicked[:] = n_unclicked == 0
    assert torch.equal(~a.valid[:, 0], all_clicked[rows])
    # the draws are spread over the space, not stuck on its first slot
    assert float((b.items[:, 0] != b.items[:, 1]).float().mean()) > 0.8


def test_random_sampler_masks_only_accidental_hits(real_view):
    spaces = build_spaces(real_view, "clicked", torch.device("cpu"))
    d = sample_random(spaces, spaces.pos_item, 40, torch.Generator().manual_seed(1))
    assert torch.equal(~d.valid, d.items == spaces.pos_item.unsqueeze(1))
    assert bool(real_view.catalogue.live[d.items].all())


# --- the losses -----------------------------------------------------------------------------------


def test_gmm_loss_is_eq2_with_one_mean_per_space():
    torch.manual_seed(0)
    pos, neg = torch.randn(3), torch.randn(3, 5)
    space = torch.tensor([0, 1, 1, 2, 2])
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[1, 3] = False
    w = torch.rand(3, 5) + 0.5
    lam = torch.tensor([0.5, 2.0, 3.0])
    loss, means = gmm_loss(pos, neg, space, valid, lam, w)

    def bce0(x):
        return -torch.log(1 - torch.sigmoid(x))

    expected = -torch.log(torch.sigmoid(pos)).mean()
    for s in range(3):
        cells = [(i, j) for i in range(3) for j in range(5) if space[j] == s and valid[i, j]]
        mean_s = sum(w[i, j] * bce0(neg[i, j]) for i, j in cells) / len(cells)
        assert float(means[s]) == pytest.approx(float(mean_s), rel=1e-5)
        expected = expected + lam[s] * mean_s
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_youtube_dnn_lambda_n_is_the_per_positive_sum():
    torch.manual_seed(1)
    pos, neg = torch.randn(4), torch.randn(4, 25)
    loss, _ = gmm_loss(pos, neg, torch.zeros(25, dtype=torch.long), torch.ones(4, 25, dtype=torch.bool), torch.tensor([25.0]))
    per_positive = F.softplus(-pos) + F.softplus(neg).sum(1)
    assert float(loss) == pytest.approx(float(per_positive.mean()), rel=1e-5)


def test_nsdn_loss_averages_over_valid_entries_only():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    labels = torch.tensor([[True, False, True]])
    valid = torch.tensor([[True, True, False]])
    er, re = nsdn_loss(logits, labels, valid, logits, labels, torch.ones_like(valid))
    assert float(er) == pytest.approx(float((F.softplus(-logits[0, 0]) + F.softplus(logits[0, 1])) / 2), rel=1e-6)
    all_three = F.softplus(-logits[0, 0]) + F.softplus(logits[0, 1]) + F.softplus(-logits[0, 2])
    assert float(re) == pytest.approx(float(all_three / 3), rel=1e-6)


# --- UMA² -----------------------------------------------------------------------------------------


def _gmm_state(agent) -> dict[str, torch.Tensor]:
    return agent.retriever.state_dict()


def test_uma2_with_unit_propensities_is_ss_abc_fixed_bit_for_bit(stochastic_loop, real_view):
    ctx = stochastic_loop.learner.ctx
    one, fixed = make_agent("uma2", ctx, propensity="one"), make_agent("ss-abc-fixed", ctx)
    oracle = make_agent("uma2-oracle-p", ctx)
    for _ in range(2):
        one.fit(real_view), fixed.fit(real_view), oracle.fit(real_view)
    a, b, c = _gmm_state(one), _gmm_state(fixed), _gmm_state(oracle)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # control: the logged propensities of this stochastic log are not all 1, and they do change the model
    assert float(real_view.candidates.recall_prob.min()) < 0.5
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_weights_never_exceed_the_clip_and_are_logged(stochastic_loop, real_view):
    ctx = stochastic_loop.learner.ctx
    for name in ("uma2", "uma2-oracle-p"):
        agent = make_agent(name, ctx, min_propensity=0.25, epochs=2)
        diag = agent.fit(real_view)
        assert diag["clip_share_a"] > 0  # the clip is active, so the bound below is not vacuous
        for prefix in ("weight", "weight_a", "weight_b"):
            assert diag[f"{prefix}_max"] <= 4.0 + 1e-5
            assert diag[f"{prefix}_p50"] <= diag[f"{prefix}_p90"] <= diag[f"{prefix}_p99"] <= diag[f"{prefix}_max"]
    # without self-normalisation the raw clipped weights reach the cap exactly
    raw = make_agent("uma2-oracle-p", ctx, min_propensity=0.25, self_normalise=False).fit(real_view)
    assert raw["weight_max"] == pytest.approx(4.0)


# --- NSDN on a world with a known stochastic logging policy ---------------------------------------


def _known_policy_view(
    n_requests: int, seed: int, k_rec: int = 20, slate: int = 5, draws: int = 400, exact: bool = True
) -> tuple[TrainingView, torch.Tensor, torch.Tensor]:
    """A logged window from a known stochastic policy, with its exact (Monte-Carlo) inclusion probabilities.

    Recall: Gumbel-top-``k_rec`` over the whole catalogue on ``1.5·log(1+clicks_i) + <profile_u[:3], modality_i[0]>``;
    exposure: Gumbel-top-``slate`` of the recalled set on ``2·promoted_i + <profile_u[1:4], modality_i[1]>``;
    clicks by the toy rule of ``agent_fixtures``.

    Returns:
        ``(view, p1 [R, M], p2 [R, k_rec])``: P(recalled) of every item, P(exposed | recalled set) of each
        recalled slot (all 1, and logged as 1, when not ``exact``: NSDN never reads them).
    """
    ctx = tiny_context(n_users=200, n_items=300, n_categories=6, n_creators=30)
    world = torch.Generator().manual_seed(0)  # one world; ``seed`` draws its requests and the policy's samples
    cat = tiny_catalogue(ctx, world, dead_share=0.0)
    users = tiny_users(ctx, cat, world)
    gen = torch.Generator().manual_seed(seed + 1)
    req = make_requests(users, gen, n_requests, first_id=1000, round_idx=2)
    recall_score = 1.5 * torch.log1p(cat.clicks) + req.profile[:, :3] @ cat.modality[:, 0].T  # [R, M]
    recalled = gumbel_topk(recall_score, k_rec, 1.0, gen)
    p1 = _mc_inclusion(recall_score, k_rec, 1.0, draws, gen) if exact else torch.ones_like(recall_score)
    expose_score = (2.0 * cat.promoted.float() + req.profile[:, 1:4] @ cat.modality[:, 1].T).gather(1, recalled)
    shown_slot = gumbel_topk(expose_score, slate, 1.0, gen)
    p2 = _mc_inclusion(expose_score, slate, 1.0, draws, gen) if exact else torch.ones_like(expose_score)
    shown = recalled.gather(1, shown_slot)
    clicked = torch.rand(shown.shape, generator=gen) < click_prob(req, shown, cat)
    exposed = torch.zeros_like(recalled, dtype=torch.bool).scatter_(1, shown_slot, True)
    r = torch.arange(n_requests)
    flat_s, flat_k = r.repeat_interleave(slate), r.repeat_interleave(k_rec)
    pos = torch.arange(slate).repeat(n_requests)
    imp = Impressions(
        row=flat_s, item_id=shown.flatten(), position=pos, retrieval_rank=shown_slot.flatten(), retrieval_score=torch.zeros(len(flat_s)),
        ranking_score=torch.zeros(len(flat_s)), exposure_propensity=torch.ones(len(flat_s)), clicked=clicked.flatten(),
        finished=clicked.flatten(), watch_time=torch.zeros(len(flat_s)), dwell=torch.zeros(len(flat_s)),
        portal_only=torch.zeros(len(flat_s), dtype=torch.bool),
    )  # fmt: skip
    cands = Candidates(
        row=flat_k, item_id=recalled.flatten(), retrieval_rank=torch.arange(k_rec).repeat(n_requests),
        retrieval_score=torch.zeros(len(flat_k)), ranking_score=torch.zeros(len(flat_k)), exposed=exposed.flatten(),
        recall_prob=p1.gather(1, recalled).flatten(), expose_prob=p2.flatten(),
    )  # fmt: skip
    scorer = FakeScorer()
    view = TrainingView(
        round=2, first_round=2, requests=req, request_round=torch.full((n_requests,), 2), explore=torch.zeros(n_requests, dtype=torch.bool),
        ranker_version=torch.zeros(n_requests, dtype=torch.int64), impressions=imp, candidate_source=cands, catalogue=cat, users=users,
        ranker=scorer, rankers={0: scorer}, retrievers={}, n_users=ctx.n_users, n_items=ctx.n_items,
    )  # fmt: skip
    return view, p1, p2


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(pd.Series(x.double().numpy()).rank().corr(pd.Series(y.double().numpy()).rank()))


def test_nsdn_heads_recover_a_known_stochastic_policy():
    """Spec §7 sanity 1: held-out AUC > 0.8 and Spearman > 0.8 with the true propensities, for both heads."""
    train, _, _ = _known_policy_view(1500, seed=0, exact=False)
    test, p1_true, p2_true = _known_policy_view(300, seed=1)  # same world (catalogue, users), fresh requests
    assert torch.equal(train.catalogue.clicks, test.catalogue.clicks)
    ctx = tiny_context(n_users=200, n_items=300, n_categories=6, n_creators=30)
    # a small GMM and 64-1 heads keep this test fast; the default 128-64-1 heads measured AUC_RE 0.83, rho_RE 0.90
    agent = make_agent("uma2", ctx, epochs=8, batch_size=128, lr=0.003, hidden=(32,), head_hidden=(64,))
    agent.fit(train)
    # entire space: every item for every held-out request
    items = torch.arange(300).expand(len(test.requests), -1)
    p1, _ = agent.propensities(test.requests, test.catalogue, items)
    spaces = build_spaces(test, "clicked", torch.device("cpu"))
    was_recalled = torch.zeros(len(test.requests), 300, dtype=torch.bool).scatter_(1, spaces.recalled, True)
    auc_er = auc(p1.flatten(), was_recalled.flatten().float())
    rho_er = _spearman(p1.flatten(), p1_true.flatten())
    # recall space: the recalled slots of each held-out request
    _, p2 = agent.propensities(test.requests, test.catalogue, spaces.recalled)
    order = torch.argsort(test.candidates.row, stable=True)
    p2_slot_true = test.candidates.expose_prob[order].view(len(test.requests), -1)
    assert torch.equal(spaces.expose_prob, p2_slot_true)
    auc_re = auc(p2.flatten(), spaces.exposed.flatten().float())
    rho_re = _spearman(p2.flatten(), p2_true.flatten())
    print(f"NSDN held-out: AUC_ER {auc_er:.3f} rho_ER {rho_er:.3f} AUC_RE {auc_re:.3f} rho_RE {rho_re:.3f}")
    assert auc_er > 0.8 and rho_er > 0.8
    assert auc_re > 0.8 and rho_re > 0.8


def _subview(view: TrainingView, keep: torch.Tensor) -> TrainingView:
    """The requests ``keep [R] bool`` of ``view`` with their impressions and candidates (rows renumbered)."""
    rows = keep.nonzero().squeeze(1)
    new = torch.full((len(keep),), -1, dtype=torch.int64)
    new[rows] = torch.arange(len(rows))

    def part(table, cls):
        m = keep[table.row]
        return cls(**{f.name: new[table.row[m]] if f.name == "row" else getattr(table, f.name)[m] for f in dataclasses.fields(cls)})

    return dataclasses.replace(
        view, requests=view.requests.select(rows), request_round=view.request_round[rows], explore=view.explore[rows],
        ranker_version=view.ranker_version[rows], impressions=part(view.impressions, Impressions),
        candidate_source=part(view.candidates, Candidates),
    )  # fmt: skip


def test_nsdn_heads_separate_the_spaces_of_held_out_simulator_requests():
    """On the simulator's own stochastic log (served by bc, ranked by DeepFM): held-out AUC > 0.8 for both heads.

    Only recalled items carry a logged recall propensity, so the entire-space Spearman of the
    test above cannot be computed from this log; within the recalled set the rank correlation
    with the logged propensities is much weaker (see the issue report), and is not asserted.
    """
    cascade = {"stochastic": True, "propensity_samples": 32, "expose_temperature": 0.3}
    sc = tiny_scenario(cascade=cascade, timeline={"requests_per_round": 400})
    loop = warm_started_loop(sc, 0, torch.device("cpu"))
    attach_agent(loop, agent_factory("bc", sc, 0, torch.device("cpu")), "bc")
    run_round(loop, 0)
    run_round(loop, 1)
    view = training_view(loop, 1)
    train_rows = view.requests.request_id % 2 == 0
    train, test = _subview(view, train_rows), _subview(view, ~train_rows)
    agent = make_agent("uma2", loop.learner.ctx, epochs=5)
    agent.fit(train)
    spaces = build_spaces(test, "clicked", torch.device("cpu"))
    c = sample_c(spaces, torch.arange(len(test.requests)), 50, torch.Generator().manual_seed(1))
    items = torch.cat([spaces.recalled, c.items], 1)
    p1, p2 = agent.propensities(test.requests, test.catalogue, items)
    k = spaces.recalled.shape[1]
    recalled = torch.cat([spaces.recalled >= 0, torch.zeros_like(c.valid)], 1)
    valid = torch.cat([spaces.recalled >= 0, c.valid], 1)
    slots = spaces.recalled >= 0
    auc_er, auc_re = auc(p1[valid], recalled[valid].float()), auc(p2[:, :k][slots], spaces.exposed[slots].float())
    rho_er, rho_re = _spearman(p1[:, :k][slots], spaces.recall_prob[slots]), _spearman(p2[:, :k][slots], spaces.expose_prob[slots])
    print(f"NSDN on the simulator log: AUC_ER {auc_er:.3f} AUC_RE {auc_re:.3f}; within recalled: rho_ER {rho_er:.3f} rho_RE {rho_re:.3f}")
    assert auc_er > 0.8 and auc_re > 0.8


# --- the agent contract on a real stochastic view -------------------------------------------------


@pytest.mark.parametrize("name", FAMILY)
def test_contract_on_a_real_stochastic_view(name, stochastic_loop, real_view):
    ctx = stochastic_loop.learner.ctx
    batch = real_view.requests.select(torch.arange(16))
    check_agent(make_agent(name, ctx), real_view, batch, 20)


def test_the_family_shares_init_and_streams_but_not_negatives(stochastic_loop, real_view):
    """Common random numbers: same initial GMM for every strategy, different models after one fit."""
    ctx = stochastic_loop.learner.ctx
    built = {n: make_agent(n, ctx) for n in ("ss-a", "ss-ab", "ss-abc-random", "ss-abc-fixed", "uma2")}
    ref = _gmm_state(built["ss-a"])
    assert all(all(torch.equal(ref[k], _gmm_state(a)[k]) for k in ref) for a in built.values())
    for agent in built.values():
        agent.fit(real_view)
    after = [_gmm_state(a)["item_id.weight"] for a in built.values()]
    assert all(not torch.equal(after[0], x) for x in after[1:])


def test_uma2_rejects_other_spaces():
    ctx = tiny_context()
    with pytest.raises(ValueError, match="spaces"):
        make_agent("uma2", ctx, spaces=["A", "C"], ratio=[1, 20], space_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="ratio"):
        make_agent("ss-abc-fixed", ctx, ratio=[1, 4])
    assert make_agent("ss-abc-fixed", ctx).config.negatives.ratio == (1, 4, 20)


def test_fit_never_trains_on_a_single_example_batch():
    """BatchNorm cannot train on one example: a last minibatch of 1 would crash the closed loop."""
    from agents.backbone.gmm import batch_size_without_singletons

    assert batch_size_without_singletons(129, 64) == 65 and batch_size_without_singletons(128, 64) == 64
    ctx = tiny_context()
    view = tiny_view(ctx)
    n = int(view.impressions.clicked.sum())
    for name in ("ss-abc-fixed", "uma2"):
        diag = make_agent(name, ctx, batch_size=n - 1).fit(view)
        assert diag["examples"] == n
