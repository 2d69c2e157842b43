"""The optional world features of issue 13 move the logs as intended (fixed seeds, tolerances from the sample size)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from scenarios.experiment import warm_started_loop
from simulator.config import ConfigError, scenario_from_dict
from simulator.types import ENTRY_BROWSE, ENTRY_PORTAL, ENTRY_SEARCH, MOTIVE_PORTAL
from simulator.world import features
from simulator.world.relevance import true_relevance
from simulator.world.state import generate_world
from simulator.world.traffic import sample_requests
from tests.conftest import TINY, tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")
BIG = {"requests_per_round": 3000}


def _warm_frames(**sections: dict) -> tuple[object, dict[str, pd.DataFrame]]:
    """The warm-start round's log and truth of a tiny scenario with ``sections`` replaced."""
    sc = tiny_scenario(**{"timeline": BIG, **sections})
    loop = warm_started_loop(sc, 0, torch.device("cpu"))
    r = loop.log.rounds()[0]
    frames = {t: loop.log.frame(t, r) for t in ("requests", "impressions", "sessions")}
    frames.update({t: loop.truth.frame(t, r) for t in ("truth_requests", "truth_impressions")})
    return loop, frames


def _within(observed: float, expected: float, p: float, n: int, z: float = 4.0) -> None:
    tol = z * math.sqrt(max(p * (1 - p), 1e-4) / max(n, 1))
    assert abs(observed - expected) <= tol, f"observed {observed:.4f}, expected {expected:.4f} +- {tol:.4f} (n={n})"


# --- sessions ---------------------------------------------------------------------------------------------------------


def test_sessions_share_a_user_and_keep_their_intent_with_the_stated_persistence() -> None:
    loop, f = _warm_frames(session={"enabled": True, "mean_length": 4.0, "intent_persistence": 0.7})
    req = f["requests"].merge(f["truth_requests"], on="request_id")
    head = req.set_index("request_id").loc[req.session_id]
    assert (head.user_id.to_numpy() == req.user_id.to_numpy()).all()
    cont = req.request_id != req.session_id
    # geometric lengths of mean 4 (truncated at slice ends): continuation share ~ 1 - 1/4
    _within(float(cont.mean()), 0.75, 0.75, len(req), z=6.0)
    # P(same intent as the head) = p + (1 - p) * pi_u(head intent): the fresh draw may hit it too
    c = req[cont]
    head_intent = torch.tensor(head.intent.to_numpy()[cont.to_numpy()])
    pi = loop.world.user_intents[torch.tensor(c.user_id.to_numpy()), head_intent]
    expected = float((0.7 + 0.3 * pi).mean())
    _within(float((c.intent.to_numpy() == head_intent.numpy()).mean()), expected, expected, len(c))


def test_sessions_off_make_every_request_its_own_session() -> None:
    _, f = _warm_frames()
    assert (f["requests"].session_id == f["requests"].request_id).all()
    assert f["requests"].scroll_depth.isna().all()
    assert f["truth_requests"].attended.all()
    assert not f["impressions"].converted.any()


# --- attention by entry point ------------------------------------------------------------------------------------------

ATT = {"enabled": True, "search_share": 0.5, "browse_attend_prob": 0.95, "search_attend_prob": 0.2, "portal_attend_prob": 0.6}


def test_entry_sets_attention_and_unattended_blocks_are_never_examined() -> None:
    _, f = _warm_frames(attention=ATT)
    req = f["requests"].merge(f["truth_requests"], on="request_id")
    for entry, p in ((ENTRY_BROWSE, 0.95), (ENTRY_SEARCH, 0.2), (ENTRY_PORTAL, 0.6)):
        sub = req[req.entry == entry]
        _within(float(sub.attended.mean()), p, p, len(sub))
    # search share among non-portal requests is the configured one
    non_portal = req[req.entry != ENTRY_PORTAL]
    _within(float((non_portal.entry == ENTRY_SEARCH).mean()), 0.5, 0.5, len(non_portal))
    imp = f["truth_impressions"].merge(req[["request_id", "attended"]], on="request_id")
    clicks = f["impressions"].merge(req[["request_id", "attended"]], on="request_id")
    assert not imp[~imp.attended].examined.any() and not clicks[~clicks.attended].clicked.any()
    assert (~imp.attended).mean() > 0.2  # a real share of exposures is unattended
    # the logged truth propensity is ex ante: the entry's attention probability times the slot's examination
    imp = imp.merge(req[["request_id", "entry"]], on="request_id")
    assert (imp[imp.entry == ENTRY_SEARCH].examine_prob <= 0.2 + 1e-6).all()
    assert (imp[imp.entry == ENTRY_BROWSE].examine_prob > 0.2 + 1e-6).any()


def test_attention_proxies_are_informative_but_noisy() -> None:
    _, f = _warm_frames(attention={**ATT, "dwell_noise": 1.2, "scroll_noise": 1.0})
    ses = f["sessions"].merge(f["truth_impressions"], on=["request_id", "position"])
    ex, un = ses[ses.examined].dwell, ses[~ses.examined].dwell
    # AUC of dwell for the examined flag: well above chance, short of perfect (the noise overlaps the two)
    auc = float((ex.to_numpy()[:, None] > un.sample(2000, random_state=0).to_numpy()[None, :]).mean())
    assert 0.75 < auc < 0.99
    # scroll depth: the deepest examined slot + N(0, 1), clamped to [0, S]: mean abs error ~ E|N(0,1)| = 0.80 at most
    deepest = ses.assign(d=(ses.position + 1) * ses.examined).groupby("request_id").d.max()
    err = (f["requests"].set_index("request_id").scroll_depth - deepest).abs()
    assert 0.3 < float(err.mean()) < 0.85


def test_other_clicks_in_the_session_match_a_pandas_reference() -> None:
    _, f = _warm_frames(session={"enabled": True}, attention=ATT)
    imp = f["impressions"].merge(f["requests"][["request_id", "session_id"]], on="request_id")
    per_session = imp.groupby("session_id").clicked.transform("sum")
    expected = (per_session - imp.clicked.astype(int)).to_numpy()
    ses = f["sessions"]
    assert (ses.request_id.to_numpy() == imp.request_id.to_numpy()).all()
    assert (ses.other_clicks.to_numpy() == expected).all()


# --- click motive -----------------------------------------------------------------------------------------------------

PROMO = {"promoted_share": 0.4}
UM = {"promo_click_prob": 0.5}


def test_click_motive_is_seen_only_through_a_noisy_engagement_signal() -> None:
    cm = {"enabled": True, "portal_glance_prob": 0.3, "bounce_prob": 0.2, "engagement_noise": 0.5}
    _, f = _warm_frames(world=PROMO, user_model=UM, click_motive=cm)
    d = f["sessions"].merge(f["truth_impressions"], on=["request_id", "position"]).merge(f["impressions"], on=["request_id", "position"])
    clicks = d[d.clicked]
    portal, finished = clicks[clicks.motive == MOTIVE_PORTAL], clicks[clicks.finished]
    unfinished = clicks[(clicks.motive != MOTIVE_PORTAL) & ~clicks.finished]
    _within(float(portal.portal_only.mean()), 0.7, 0.7, len(portal))  # 1 - glance
    _within(float(unfinished.portal_only.mean()), 0.2, 0.2, len(unfinished))  # bounce
    assert not finished.portal_only.any() and len(portal) > 200 and len(unfinished) > 200
    assert not d[~d.clicked].portal_only.any()
    # the noise: logged engagement differs from the time on the item page, mean ratio ~1 (lognormal of mean 1)
    pos = clicks[clicks.watch_time > 0]
    ratio = pos.engagement / pos.watch_time
    assert ratio.std() > 0.3 and abs(ratio.mean() - 1.0) < 4 * 0.53 / math.sqrt(len(pos))


def test_click_motive_off_keeps_the_exact_label() -> None:
    _, f = _warm_frames(world=PROMO, user_model=UM)
    d = f["sessions"].merge(f["truth_impressions"], on=["request_id", "position"]).merge(f["impressions"], on=["request_id", "position"])
    assert (d.portal_only == (d.motive == MOTIVE_PORTAL)).all()
    assert (d.engagement == d.watch_time).all()


# --- mini-app ---------------------------------------------------------------------------------------------------------


def test_domain_relevance_shifts_mini_app_requests_by_category_hand_checked() -> None:
    sc = tiny_scenario(mini_app={"preference_shift": 1.5, "domain_affinity": 0.5})
    shift = features.category_shift(sc, 3, torch.device("cpu"))
    assert shift.shape == (8,) and 0.5 < float(shift.std()) < 3.0
    rel = torch.tensor([[0.2, 0.5], [0.2, 0.5]])
    cat, dom = torch.tensor([[1, 2], [1, 2]]), torch.tensor([[0, 1], [0, 1]])
    out = features.domain_relevance(sc, 3, cat, dom, torch.tensor([0, 1]), rel)
    logit = torch.logit(rel)
    expect = torch.sigmoid(torch.stack([logit[0] + torch.tensor([0.5, 0.0]), logit[1] + shift[[1, 2]] + torch.tensor([0.0, 0.5])]))
    assert torch.allclose(out, expect, atol=1e-6)
    off = tiny_scenario()
    assert features.domain_relevance(off, 3, cat, dom, torch.tensor([0, 1]), rel) is rel


def test_mini_app_traffic_shift_and_conversions_in_the_log() -> None:
    loop, f = _warm_frames(world={"mini_app_share": 0.4}, mini_app={"preference_shift": 2.0, "conversion_prob": 0.5})
    req = f["requests"]
    _within(float((req.domain == 1).mean()), 0.4, 0.4, len(req))
    d = f["impressions"].merge(f["truth_impressions"], on=["request_id", "position", "item_id", "user_id"]).merge(
        req[["request_id", "domain"]].rename(columns={"domain": "req_domain"}), on="request_id")
    # logged truth relevance = main-feed relevance shifted by the category's offset in mini-app requests only
    w = loop.world
    users, items = torch.tensor(d.user_id.to_numpy()), torch.tensor(d.item_id.to_numpy())
    intents = torch.tensor(d.merge(f["truth_requests"], on="request_id").intent.to_numpy())
    base = true_relevance(w, loop.sc, users, items.unsqueeze(1), intents).squeeze(1)
    # the world drifted through the round (boredom, drift): compare main-feed rows loosely, the shift exactly by sign
    mini = torch.tensor((d.req_domain == 1).to_numpy())
    gap = torch.logit(torch.tensor(d.relevance.to_numpy())) - torch.logit(base)
    shift = features.category_shift(loop.sc, 0, torch.device("cpu"))[w.item_category[items]]
    assert float((gap[mini] - shift[mini]).abs().median()) < 0.3 < float(shift[mini].abs().median())
    assert float(gap[~mini].abs().median()) < 0.3
    conv = d[d.converted]
    assert conv.finished.all() and (conv.req_domain == 1).all()
    fin = d[d.finished & (d.req_domain == 1)]
    p = float((0.5 * fin.relevance).mean())
    _within(float(fin.converted.mean()), p, p, len(fin))


# --- weekend segment ---------------------------------------------------------------------------------------------------


def _weekend_gap(corr: float) -> tuple[float, float, int]:
    """Share of request intents on weekend categories on weekend minus weekday slices, its SE, and n per side."""
    sc = tiny_scenario(world={"weekend_segment_share": 0.3}, weekend={"intent_correlation": corr}, dynamics={"weekend_shift": 4.0})
    world = generate_world(sc, seed=5)
    wk_cat = features.weekend_categories(sc, 5, torch.device("cpu"))
    shares = {}
    for weekend, hour in ((False, 30.0), (True, 5 * 24 + 6.0)):
        _, intents = sample_requests(world, sc, 5, 0, 0, hour, 0, 20_000)
        shares[weekend] = float(wk_cat[intents].float().mean())
    p = (shares[True] + shares[False]) / 2
    return shares[True] - shares[False], math.sqrt(2 * p * (1 - p) / 20_000), 20_000


def test_weekend_segment_follows_intents_so_weekend_traffic_shifts() -> None:
    gap, se, _ = _weekend_gap(0.9)
    assert gap > 6 * se and gap > 0.05
    gap_off, se_off, _ = _weekend_gap(0.0)
    assert abs(gap_off) < 4 * se_off + 0.02  # off: the segment is independent of intents (users weigh in, hence + 0.02)


def test_weekend_segment_keeps_its_share_and_off_keeps_the_world_draw() -> None:
    sc = tiny_scenario(world={"weekend_segment_share": 0.3}, weekend={"intent_correlation": 0.5})
    world = generate_world(sc, seed=2)
    assert int(world.user_segment.sum()) == round(0.3 * sc.user_capacity)
    base, off = generate_world(tiny_scenario(world={"weekend_segment_share": 0.3}), seed=2), world
    assert torch.equal(base.user_latent, off.user_latent) and torch.equal(base.item_latent, off.item_latent)


# --- ranker registry --------------------------------------------------------------------------------------------------


def test_ranker_registry_validates_and_builds_registered_kinds() -> None:
    from simulator.cascade import ranker_registry
    from simulator.cascade.ranker import make_ranker, register_ranker

    with pytest.raises(ConfigError, match=r"^cascade.ranker: must be one of deepfm, dcn, noisy-oracle"):
        scenario_from_dict({**TINY, "cascade": {**TINY["cascade"], "ranker": "toy-ctr"}})
    built = []
    register_ranker("toy-ctr", lambda sc, seed, device: built.append((sc.name, seed, str(device))) or "a ranker")
    try:
        sc = scenario_from_dict({**TINY, "cascade": {**TINY["cascade"], "ranker": "toy-ctr"}})
        assert make_ranker(sc.cascade.ranker, sc, 7) == "a ranker" and built == [("tiny", 7, "cpu")]
        with pytest.raises(ValueError, match="built in"):
            register_ranker("deepfm", lambda *a: None)
    finally:
        ranker_registry._REGISTRY.pop("toy-ctr", None)


# --- what agents see, and the preset -----------------------------------------------------------------------------------


def test_training_view_carries_the_observable_proxies() -> None:
    from simulator.round import training_view

    loop, f = _warm_frames(session={"enabled": True}, attention=ATT, click_motive={"enabled": True}, mini_app={"conversion_prob": 0.5})
    view = training_view(loop, loop.log.rounds()[0])
    imp = view.impressions
    assert torch.equal(imp.other_clicks.long(), torch.tensor(f["sessions"].other_clicks.to_numpy()).long())
    assert torch.equal(imp.engagement, torch.tensor(f["sessions"].engagement.to_numpy()))
    assert torch.equal(imp.converted, torch.tensor(f["impressions"].converted.to_numpy()))
    scroll = f["requests"].set_index("request_id").scroll_depth.loc[f["impressions"].request_id].to_numpy()
    assert torch.equal(imp.scroll_depth, torch.tensor(scroll))
    assert torch.equal(view.requests.session_id, torch.tensor(f["requests"].session_id.to_numpy()))


def test_homepage_preset_switches_every_feature_on_and_defaults_leave_them_off() -> None:
    from scenarios.presets import list_scenarios, load_scenario

    sc = load_scenario("homepage")
    assert sc.session.enabled and sc.attention.enabled and sc.click_motive.enabled
    assert sc.world.mini_app_share > 0 and sc.mini_app.preference_shift > 0 and sc.weekend.intent_correlation > 0
    for name in list_scenarios():
        if name != "homepage":
            other = load_scenario(name)
            assert not (other.session.enabled or other.attention.enabled or other.click_motive.enabled), name
            assert other.mini_app.preference_shift == other.mini_app.conversion_prob == other.weekend.intent_correlation == 0, name


class _CountingRanker:
    """A ranking-stage method standing in as the platform ranker: a DCN that counts its fits."""

    def __init__(self, sc, seed, device) -> None:
        from simulator.cascade.ranker import make_ranker

        self.inner, self.fits = make_ranker("dcn", sc, seed, device), 0

    def __getattr__(self, name):  # version, score, set_catalogue, frozen, state_dict... of the inner ranker
        return getattr(self.inner, name)

    def fit(self, view):
        self.fits += 1
        return self.inner.fit(view)


def test_a_registered_ranker_serves_and_retrains_in_the_loop() -> None:
    from scenarios.experiment import agent_factory
    from simulator.cascade import ranker_registry
    from simulator.cascade.ranker import register_ranker
    from simulator.round import attach_agent
    from simulator.timeline import run_round

    register_ranker("counting-dcn", _CountingRanker)
    try:
        sc = tiny_scenario(cascade={"ranker": "counting-dcn"})
        loop = warm_started_loop(sc, 0, torch.device("cpu"))
        attach_agent(loop, agent_factory("random", sc, 0, torch.device("cpu")), "random")
        run_round(loop, 0)
        assert isinstance(loop.ranker_learner, _CountingRanker) and loop.ranker_learner.fits >= 2  # warm start + round 0
        assert loop.serving_ranker.version >= 1 and len(loop.log.frame("impressions", 0)) > 0
    finally:
        ranker_registry._REGISTRY.pop("counting-dcn", None)
