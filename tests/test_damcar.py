"""DAMCAR and its baselines (KD, TL, AR, MUDA): the shared GRL / EMA parts, the target-domain walk,
and each method's defining behaviour (algorithms.md §3-§5). The contract (check_agent, exact resume)
runs on every registered name in tests/test_agents.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agents import make_agent
from agents.backbone.adapt import DomainClassifier, EMATeacher, dann_kappa, domain_loss, grad_reverse
from agents.backbone.random_walk import exposure_graph, hard_unexposed, uniform_unexposed, visit_counts
from agents.backbone.unexposed import exposed_keys, target_domain
from agents.damcar import ada_loss, hybrid_loss, modified_pseudo_labels
from agents.muda import pseudo_labels
from agents.tl import ITEM_SIDE
from simulator.config import TrainingConfig
from tests.agent_fixtures import auc, click_prob, make_requests, random_slates, tiny_context, tiny_view

pytestmark = pytest.mark.usefixtures("one_thread")


class ToyRuleRanker:
    """A frozen 'ranker' that knows the toy rule, with a small item-dependent offset (no ties)."""

    version = 0

    def __init__(self, catalogue):
        self.catalogue = catalogue

    def score(self, requests, item_ids):
        jitter = torch.frac(item_ids.double() * 0.6180339887).float() * 0.04
        return click_prob(requests, item_ids, self.catalogue) * 0.95 + jitter


class ConstantRanker:
    version = 0

    def __init__(self, value):
        self.value = value

    def score(self, requests, item_ids):
        return torch.full(item_ids.shape, self.value)


def with_ranker(view, ranker):
    from dataclasses import replace

    return replace(view, ranker=ranker, rankers={0: ranker})


def held_out_auc(agent, view, n=3000, seed=77):
    agent.index(view.catalogue)
    gen = torch.Generator().manual_seed(seed)
    fresh = make_requests(view.users, gen, n, first_id=10_000, round_idx=3)
    items = random_slates(view.catalogue, len(fresh), 1, gen)
    labels = torch.rand(items.shape, generator=gen) < click_prob(fresh, items, view.catalogue)
    return auc(agent.score(fresh, items).flatten(), labels.flatten())


@pytest.fixture(scope="module")
def learn_world():
    training = TrainingConfig(epochs=3, batch_size=128, lr=0.01, embedding_dim=16)
    ctx = tiny_context(seed=1, training=training, n_users=100, n_items=80)
    return ctx, tiny_view(ctx, seed=1, n_requests=600, slate=6)


# --- GRL and EMA ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [1.0, 0.3])
def test_grl_is_identity_forward_and_scales_the_gradient_by_minus_kappa(kappa):
    x = torch.randn(5, 3, requires_grad=True, generator=torch.Generator().manual_seed(0))
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    y = grad_reverse(x, kappa)
    assert torch.equal(y, x)
    (w * y).sum().backward()
    assert torch.allclose(x.grad, -kappa * w)


def test_encoder_gradient_of_the_domain_loss_is_minus_kappa_lambda_times_the_plain_one():
    """§5(f): the encoder gradient from λ2·L_dom through the GRL equals −κ·λ2 × the gradient without it."""
    gen = torch.Generator().manual_seed(2)
    disc = DomainClassifier(4, (6,), True, gen)
    z_s, z_t = torch.randn(8, 4, generator=gen), torch.randn(7, 4, generator=gen)
    lam, kappa = 0.2, 0.7

    def grads(k):
        a, b = z_s.clone().requires_grad_(True), z_t.clone().requires_grad_(True)
        disc.kappa = k
        (lam * domain_loss(disc(a), disc(b))).backward()
        return a.grad, b.grad

    plain = grads(-1.0)  # -(-1) = identity: the gradient without reversal
    plain = tuple(g / lam for g in plain)
    reversed_ = grads(kappa)
    for g_plain, g_rev in zip(plain, reversed_):
        assert g_plain.abs().sum() > 0
        assert torch.allclose(g_rev, -kappa * lam * g_plain, atol=1e-6)


def test_code_compat_domain_loss_has_the_same_value_but_no_target_gradient():
    d_s, d_t = torch.randn(5, requires_grad=True), torch.randn(6, requires_grad=True)
    assert torch.allclose(domain_loss(d_s, d_t), domain_loss(d_s, d_t, target_grad=False))
    domain_loss(d_s, d_t, target_grad=False).backward()
    assert d_t.grad is None and d_s.grad.abs().sum() > 0
    expected = -(torch.log(torch.sigmoid(d_s)).mean() + torch.log(1 - torch.sigmoid(d_t)).mean())
    assert domain_loss(d_s, d_t).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dann_kappa_warms_up_from_zero_to_one():
    values = [dann_kappa(p / 10) for p in range(11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(1.0, abs=1e-4)
    assert all(a < b for a, b in zip(values, values[1:]))


def _bn_net(seed):
    torch.manual_seed(seed)  # test-only module construction
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))


def _train_step(net, opt, gen):
    net.train()
    x = torch.randn(16, 3, generator=gen) * 3 + 1
    opt.zero_grad()
    net(x).pow(2).mean().backward()
    opt.step()


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
def test_ema_teacher_follows_the_student_by_alpha_including_batchnorm_buffers(alpha):
    student = _bn_net(0)
    teacher = EMATeacher(student, alpha)
    init = {k: v.clone() for k, v in student.state_dict().items()}
    assert all(torch.equal(v, init[k]) for k, v in teacher.module.state_dict().items())
    assert not teacher.module.training and not any(p.requires_grad for p in teacher.module.parameters())
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    _train_step(student, opt, torch.Generator().manual_seed(3))
    teacher.update(student)
    now = student.state_dict()
    assert not torch.equal(now["1.running_mean"], init["1.running_mean"])  # the buffers did move
    for k, v in teacher.module.state_dict().items():
        if alpha == 0.0:
            assert torch.equal(v, now[k]), k  # teacher = student
        elif alpha == 1.0:
            assert torch.equal(v, init[k]), k  # frozen at the copy
        elif v.dtype.is_floating_point:
            assert torch.allclose(v, 0.5 * init[k] + 0.5 * now[k], atol=1e-6), k
    teacher.reset(student)
    assert all(torch.equal(v, now[k]) for k, v in teacher.module.state_dict().items())


# --- target-domain generation ---------------------------------------------------------------------


def two_cluster_log(seed=0, n_users=200, n_items=400):
    """Users of cluster k (= id parity) engage only with cluster-k items (parity), exposed at random in
    the cluster; each also saw 4 cross-cluster items, watched one briefly (a weak cross edge) and skipped
    three (v = 0: exposures, not edges)."""
    gen = torch.Generator().manual_seed(seed)
    users, items, watch = [], [], []
    for u in range(n_users):
        own = torch.randperm(n_items // 2, generator=gen)[:12] * 2 + u % 2
        other = torch.randperm(n_items // 2, generator=gen)[:4] * 2 + (1 - u % 2)
        users += [u] * 16
        items += own.tolist() + other.tolist()
        watch += (torch.rand(12, generator=gen) * 50 + 1).tolist() + [2.0] + [0.0] * 3  # one stray, briefly watched
    return torch.tensor(users), torch.tensor(items), torch.tensor(watch), n_users, n_items


def test_random_walk_target_domain_is_mostly_in_cluster_where_uniform_gives_about_half():
    users, items, watch, n_users, n_items = two_cluster_log()
    graph = exposure_graph(users, items, watch, n_users, n_items)
    keys = torch.unique(users * n_items + items)
    live = torch.ones(n_items, dtype=torch.bool)
    gen = torch.Generator().manual_seed(5)
    u, i, t = visit_counts(graph, torch.arange(n_users), radius=25, visits=50, mode="paper", gen=gen)  # paper (WeChat)
    su, si = hard_unexposed(u, i, t, keys, live, n_items)
    assert len(torch.unique(su)) > n_users // 2  # most users get hard negatives
    assert not torch.isin(su * n_items + si, keys).any()  # no logged exposure, engaged or not
    walk_share = (si % 2 == su % 2).float().mean().item()
    ru, ri = uniform_unexposed(torch.bincount(su, minlength=n_users), keys, live, gen)
    uniform_share = (ri % 2 == ru % 2).float().mean().item()
    assert torch.equal(torch.bincount(ru, minlength=n_users), torch.bincount(su, minlength=n_users))
    assert not torch.isin(ru * n_items + ri, keys).any()
    print(f"in-cluster share: walk {walk_share:.3f}, uniform {uniform_share:.3f}")
    assert walk_share > 0.8, walk_share
    assert 0.4 < uniform_share < 0.6, uniform_share


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_walk_length_follows_the_paper_or_the_code(mode):
    users, items, watch, n_users, n_items = two_cluster_log(n_users=20, n_items=60)
    graph = exposure_graph(users, items, watch, n_users, n_items)
    radius, visits = 4, 10
    u, _, t = visit_counts(graph, torch.arange(n_users), radius, visits, mode, torch.Generator().manual_seed(1))
    per_user = torch.zeros(n_users, dtype=torch.int64).index_add_(0, u, t)
    hops = visits if mode == "paper" else visits * radius  # paper: restart every R hops until H; code: H walks x R hops
    item_visits = sum(1 for h in range(hops) if (h % radius) % 2 == 0)
    assert (per_user == item_visits).all()


def test_walk_follows_engagement_weights():
    """One user, two items with watch time 1 and 9: the first hop picks them about 1:9."""
    users, items, watch = torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([1.0, 9.0])
    graph = exposure_graph(users, items, watch, 1, 2)
    _, i, t = visit_counts(graph, torch.zeros(4000, dtype=torch.int64), 1, 1, "paper", torch.Generator().manual_seed(0))
    # the 4000 starts are the same user: counts are pooled
    share = (t[i == 1].sum() / t.sum()).item()
    assert abs(share - 0.9) < 0.03, share


@pytest.mark.parametrize("sampler", ["walk", "uniform"])
def test_target_domain_of_a_view_excludes_every_logged_exposure(sampler):
    ctx = tiny_context(seed=3)
    view = tiny_view(ctx, seed=3)
    assert (view.impressions.watch_time == 0).any()  # unengaged exposures exist and must be excluded too
    cfg = make_agent("damcar", ctx, sampler=sampler).config
    pairs, info = target_domain(view, cfg.target, torch.Generator().manual_seed(0), ctx.device)
    assert info["target_pairs"] == len(pairs) > 0
    keys = view.requests.user_id[pairs.row] * view.n_items + pairs.item_ids
    assert not torch.isin(keys, exposed_keys(view)).any()
    assert view.catalogue.live[pairs.item_ids].all()


# --- baselines ------------------------------------------------------------------------------------


def test_kd_with_a_constant_teacher_collapses_to_chance_and_learns_with_an_informed_one(learn_world):
    ctx, view = learn_world
    constant = make_agent("kd", ctx, hidden=[32], teacher_source="platform")
    informed = make_agent("kd", ctx, hidden=[32], teacher_source="platform")
    for _ in range(3):
        diag = constant.fit(with_ranker(view, ConstantRanker(0.5)))
        informed.fit(with_ranker(view, ToyRuleRanker(view.catalogue)))
    assert diag["teacher_mean"] == pytest.approx(0.5)
    assert abs(held_out_auc(constant, view) - 0.5) < 0.08
    assert held_out_auc(informed, view) > 0.75


def test_kd_b_adds_recalled_unexposed_pairs(learn_world):
    ctx, view = learn_world
    diag = make_agent("kd+b", ctx, hidden=[16], b_per_request=3).fit(view)
    assert diag["b_pairs"] == 3 * len(view.requests)
    assert diag["examples"] == len(view.impressions) + diag["b_pairs"]


def test_tl_fine_tuning_leaves_the_user_tower_bit_identical(learn_world):
    ctx, view = learn_world
    agent = make_agent("tl", ctx, hidden=[16], epochs=0, finetune_epochs=2, teacher_source="platform")  # stage 2 only
    agent.fit(view)  # round 1 (stage 1 off): everything before stage 2 of the next fit is the reference
    model = agent.retriever.model
    user_side = {f"{n}.{k}": v.clone() for n, m in model.named_children() if n not in ITEM_SIDE for k, v in m.state_dict().items()}
    item_side = {f"{n}.{k}": v.clone() for n, m in model.named_children() if n in ITEM_SIDE for k, v in m.state_dict().items()}
    requests = view.requests.select(torch.arange(32))
    f_before = model.user_queries(requests)
    diag = agent.fit(with_ranker(view, ToyRuleRanker(view.catalogue)))
    assert diag["target_pairs"] > 0 and math.isfinite(diag["finetune_loss"])
    now = {f"{n}.{k}": v for n, m in model.named_children() for k, v in m.state_dict().items()}
    assert all(torch.equal(v, now[k]) for k, v in user_side.items())
    assert any(not torch.equal(v, now[k]) for k, v in item_side.items())
    assert torch.equal(model.user_queries(requests), f_before)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again for the next stage 1


def test_muda_logs_its_pseudo_positive_rate_matched_to_the_label_rate(learn_world):
    ctx, view = learn_world
    view = with_ranker(view, ToyRuleRanker(view.catalogue))
    diag = make_agent("muda", ctx, hidden=[16], teacher_source="platform").fit(view)
    label_rate = view.impressions.clicked.float().mean().item()
    assert 0 < diag["pseudo_positive_rate"] < 1
    assert diag["pseudo_positive_rate"] == pytest.approx(label_rate, abs=0.02)
    fixed = make_agent("muda", ctx, hidden=[16], threshold=0.5, teacher_source="platform").fit(with_ranker(view, ConstantRanker(0.4)))
    assert fixed["pseudo_positive_rate"] == 0.0 and fixed["threshold"] == 0.5
    only_t = make_agent("muda-t", ctx, hidden=[16], teacher_source="platform").fit(view)
    assert only_t["examples"] == only_t["target_pairs"]


def test_muda_threshold_quantile():
    rank = torch.linspace(0, 1, 101)
    y, kappa = pseudo_labels(rank, None, 0.2)
    assert kappa == pytest.approx(0.8) and y.mean().item() == pytest.approx(21 / 101)
    y, kappa = pseudo_labels(rank, 0.5, 0.2)
    assert kappa == 0.5 and y.sum() == 51


def test_ar_logs_domain_accuracy(learn_world):
    ctx, view = learn_world
    diag = make_agent("ar", ctx, hidden=[16]).fit(view)
    assert 0.0 <= diag["domain_accuracy"] <= 1.0 and diag["target_pairs"] > 0


# --- DAMCAR ---------------------------------------------------------------------------------------


def test_modified_pseudo_labels_keep_exposed_positives_at_one():
    pseudo = torch.tensor([0.2, 0.7, 0.1, 0.9])
    pos = torch.tensor([True, False, True, False])
    assert torch.equal(modified_pseudo_labels(pseudo, pos), torch.tensor([1.0, 0.7, 1.0, 0.9]))
    assert torch.equal(modified_pseudo_labels(pseudo, pos, enabled=False), pseudo)


@pytest.mark.parametrize("name", ["damcar", "damcar-no-mpl"])
def test_damcar_trains_on_mpl_targets(name, learn_world, monkeypatch):
    """The hybrid targets: exposed positives at 1 (soft ADA labels on exposed negatives); raw ADA labels without MPL."""
    import agents.damcar as damcar

    ctx, view = learn_world
    seen = {}
    original = damcar.modified_pseudo_labels

    def spy(pseudo, positive, enabled=True):
        out = original(pseudo, positive, enabled)
        seen.update(pseudo=pseudo, positive=positive, out=out)
        return out

    monkeypatch.setattr(damcar, "modified_pseudo_labels", spy)
    diag = make_agent(name, ctx, hidden=[16], encoder_hidden=[16, 8], transform_hidden=[8]).fit(view)
    pos = seen["positive"]
    assert pos.any() and (~pos).any()
    assert torch.equal(pos, view.impressions.clicked.bool())
    soft_neg = seen["out"][~pos]
    assert ((soft_neg > 0) & (soft_neg < 1)).all()  # exposed negatives get soft labels, not 0
    if name == "damcar":
        assert (seen["out"][pos] == 1).all()
    else:
        assert torch.equal(seen["out"], seen["pseudo"]) and (seen["out"][pos] < 1).all()
    assert 0 < diag["pseudo_label_target"] < 1 and 0 <= diag["domain_accuracy"] <= 1


def test_ada_and_hybrid_losses_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    y_s, lab = torch.randn(6, generator=g), (torch.rand(6, generator=g) > 0.5).float()
    y_t, tea = torch.randn(5, generator=g), torch.rand(5, generator=g)
    d_s, d_t = torch.randn(6, generator=g), torch.randn(5, generator=g)
    bce = F.binary_cross_entropy_with_logits
    expected = bce(y_s, lab) + 0.6 * bce(y_t, tea) + 0.2 * (bce(d_s, torch.ones(6)) + bce(d_t, torch.zeros(5)))
    assert ada_loss(y_s, lab, y_t, tea, d_s, d_t, 0.6, 0.2).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ada_loss(y_s, lab, y_t, None, d_s, d_t, 0.6, 0.2).item() == pytest.approx((expected - 0.6 * bce(y_t, tea)).item(), rel=1e-6)
    logits, y_mpl, rank = torch.randn(4, generator=g), torch.rand(4, generator=g), torch.rand(4, generator=g)
    expected = bce(logits, y_mpl) + 0.3 * ((rank - torch.sigmoid(logits)) ** 2).mean()
    assert hybrid_loss(logits, y_mpl, rank, 0.3).item() == pytest.approx(expected.item(), rel=1e-6)


def test_damcar_ablation_switches_and_global_rng(learn_world):
    ctx, view = learn_world
    assert make_agent("damcar-no-ema", ctx).teacher is None and make_agent("damcar", ctx).teacher is not None
    assert make_agent("damcar-no-tdg", ctx).config.target.sampler == "uniform"
    assert make_agent("damcar-no-mpl", ctx).config.mpl is False
    small = {"hidden": [16], "encoder_hidden": [16, 8], "transform_hidden": [8]}
    agent = make_agent("damcar", ctx, label_path="code", code_compat_domain_loss=True, **small)
    state = torch.get_rng_state()
    diag = agent.fit(view)
    assert torch.equal(torch.get_rng_state(), state)  # randomness only from the seeded fit generator
    assert math.isfinite(diag["loss"]) and math.isfinite(diag["ada_loss"])
