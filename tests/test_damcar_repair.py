"""Issue 13 item 3: DAMCAR shown working before it is judged.

The gradient reversal on a hand case, the adversary removing a nuisance feature (and not without the
reversal), the §5(c) walk count, the label paths of the pseudo-labels and of the distillation teacher,
and the alignment diagnostics a fit reports.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agents import make_agent
from agents.backbone import label_teacher
from agents.backbone.adapt import DomainClassifier, domain_accuracy, probe_accuracy, projection_summary, standardised_gap
from agents.backbone.random_walk import exposure_graph, visit_counts
from agents.backbone.unexposed import TargetDomainConfig
from agents.damcar import DIAGNOSTICS, ada_loss
from tests.agent_fixtures import tiny_context, tiny_view
from tests.test_damcar import ConstantRanker, two_cluster_log, with_ranker

pytestmark = pytest.mark.usefixtures("one_thread")


def test_grl_hand_case_encoder_gradient_is_the_negated_classifier_path_gradient_times_lambda():
    """z = W x, d = <w, GRL(z)>, L = λ·BCE(d, 1), x = (1, 2), W = I, w = (0.5, -1), λ = 0.2, κ = 1.

    d = 0.5 - 2 = -1.5, σ(d) - 1 = -0.8175745; dL/dz without the GRL = λ(σ(d) - 1) w = (-0.0817574, 0.1635149);
    the encoder receives the negation; dL/dW = dL/dz ⊗ x; the classifier's own gradient λ(σ(d) - 1) z is unchanged.
    """
    x = torch.tensor([1.0, 2.0])
    weight = torch.eye(2, requires_grad=True)
    head = DomainClassifier(2, (), False, torch.Generator().manual_seed(0))
    with torch.no_grad():
        head.out.weight.copy_(torch.tensor([[0.5, -1.0]]))
    logit = head((weight @ x).unsqueeze(0))
    (0.2 * F.binary_cross_entropy_with_logits(logit, torch.ones(1))).backward()
    plain_dz = torch.tensor([-0.0817574, 0.1635149])
    assert torch.allclose(weight.grad, torch.outer(-plain_dz, x), atol=1e-6)
    assert torch.allclose(head.out.weight.grad, 0.2 * -0.8175745 * torch.tensor([[1.0, 2.0]]), atol=1e-6)


def _nuisance_game(kappa: float, seed: int, steps: int = 300) -> float:
    """DAMCAR's asymmetric ADA on a toy: the domains differ only in a nuisance input (+1 source, -1 target).

    Encoder E and g (source path only) as in the paper, the repaired Ψ (64 hidden, bias), AdaGrad lr 1e-2,
    λ2 = 1, no teacher. Returns the adversary's mean training accuracy over the last 100 steps.
    """
    gen = torch.Generator().manual_seed(seed)

    def sample(source: bool) -> tuple[torch.Tensor, torch.Tensor]:
        signal = torch.randn(256, 2, generator=gen)
        nuisance = torch.full((256, 1), 1.0 if source else -1.0) + 0.1 * torch.randn(256, 1, generator=gen)
        return torch.cat([signal, nuisance], 1), (signal[:, 0] > 0).float()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
        transform, label = nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 1, bias=False)
    psi = DomainClassifier(8, (64,), True, gen)
    psi.kappa = kappa
    params = [*enc.parameters(), *transform.parameters(), *label.parameters(), *psi.parameters()]
    opt = torch.optim.Adagrad(params, lr=1e-2)
    acc = []
    for _ in range(steps):
        (xs, ys), (xt, _) = sample(True), sample(False)
        hs, zt = transform(enc(xs)), enc(xt)
        ds, dt = psi(hs), psi(zt)
        acc.append(float(domain_accuracy(ds.detach(), dt.detach())))
        loss = ada_loss(label(hs).squeeze(-1), ys, label(zt).squeeze(-1), None, ds, dt, 0.0, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return sum(acc[-100:]) / 100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_adversary_hides_a_nuisance_feature_only_with_the_reversal(seed):
    """Without the reversal (κ = 0) the classifier separates the domains (> 0.95); with it, it is held near chance.

    Bound 0.7: confusion is 0.5, and the 100-step mean of 512-sample accuracies has a sampling error of
    about 0.002 there, but the adversarial game oscillates (single steps swing by ~0.1); 0.7 is well below
    the control's 1.0 and above every seed's value (0.52-0.58).
    """
    assert _nuisance_game(0.0, seed) > 0.95
    assert _nuisance_game(1.0, seed) < 0.7


def test_default_walk_is_50_walks_of_25_hops_per_user():
    cfg = TargetDomainConfig()
    assert (cfg.walk_mode, cfg.visits, cfg.radius) == ("code", 50, 25)
    users, items, watch, n_users, n_items = two_cluster_log(n_users=20, n_items=60)
    graph = exposure_graph(users, items, watch, n_users, n_items)
    u, _, t = visit_counts(graph, torch.arange(n_users), cfg.radius, cfg.visits, cfg.walk_mode, torch.Generator().manual_seed(1))
    per_user = torch.zeros(n_users, dtype=torch.int64).index_add_(0, u, t)
    assert (per_user == 50 * 13).all()  # 50 walks x 13 item landings (hops 1, 3, ..., 25) each
    assert make_agent("damcar", tiny_context()).config.target == TargetDomainConfig(sampler="walk")


@pytest.mark.parametrize("path", ["paper", "code"])
def test_target_pseudo_labels_follow_the_label_path(path):
    """``paper``: ŷ^t = Φ(z) on S_sam; ``code``: Φ(g(z)) for every sample. Source labels are Φ(g(z)) either way."""
    ctx = tiny_context(seed=4)
    view = tiny_view(ctx, seed=4)
    agent = make_agent("damcar", ctx, label_path=path, hidden=[16], encoder_hidden=[16, 8], transform_hidden=[8])
    from agents.backbone.training import exposure_data
    from agents.backbone.unexposed import target_domain

    src = exposure_data(view, "clicked", ctx.device)
    tgt, _ = target_domain(view, agent.config.target, torch.Generator().manual_seed(0), ctx.device)
    y_src, y_tgt = agent._pseudo_labels(src, tgt, view.catalogue)
    ada = agent.ada.eval()
    with torch.no_grad():
        req, items, _ = tgt.batch(torch.arange(len(tgt)))
        z = ada.encode(req, view.catalogue, items)
        expected = torch.sigmoid(ada.target_label(z) if path == "paper" else ada.source_label(z))
        s_req, s_items, _ = src.batch(torch.arange(len(src)))
        expected_src = torch.sigmoid(ada.source_label(ada.encode(s_req, view.catalogue, s_items)))
    assert len(tgt) > 0 and torch.allclose(y_tgt, expected) and torch.allclose(y_src, expected_src)


@pytest.mark.parametrize("name", ["kd", "tl", "muda", "damcar"])
def test_own_teacher_learns_the_agents_label_once_per_fit(name, monkeypatch):
    """The distillation teacher trains on the agent's label (finished here, which differs from clicked), once per fit."""
    ctx = tiny_context(seed=2)
    view = tiny_view(ctx, seed=2)
    imp = view.impressions
    assert imp.finished.sum() < imp.clicked.sum()
    seen: list[torch.Tensor] = []
    fits: list[int] = []
    original_bce, original_fit = label_teacher.F.binary_cross_entropy_with_logits, label_teacher.OwnTeacher.fit
    spy = SimpleNamespace(binary_cross_entropy_with_logits=lambda x, y, **kw: (seen.append(y), original_bce(x, y, **kw))[1])
    monkeypatch.setattr(label_teacher, "F", spy)  # the teacher module's reference only
    monkeypatch.setattr(label_teacher.OwnTeacher, "fit", lambda self, v, lab: (fits.append(1), original_fit(self, v, lab))[1])
    agent = make_agent(name, ctx, label="finished", hidden=[16])
    diag = agent.fit(view)
    labels = torch.cat(seen)
    assert len(fits) == 1 and len(labels) == len(imp)
    assert labels.sum() == imp.finished.sum()  # each impression once per epoch, with its finished flag
    assert math.isfinite(diag["teacher_loss"])


def test_platform_teacher_source_uses_the_platform_snapshot():
    ctx = tiny_context(seed=2)
    view = with_ranker(tiny_view(ctx, seed=2), ConstantRanker(0.3))
    diag = make_agent("kd", ctx, label="finished", hidden=[16], teacher_source="platform").fit(view)
    assert diag["teacher_mean"] == pytest.approx(0.3) and math.isnan(diag["teacher_loss"])
    own = make_agent("kd", ctx, label="finished", hidden=[16]).fit(view)
    assert own["teacher_mean"] != pytest.approx(0.3)


def test_damcar_fit_reports_the_alignment_diagnostics():
    ctx = tiny_context(seed=3)
    view = tiny_view(ctx, seed=3)
    diag = make_agent("damcar", ctx, hidden=[16], encoder_hidden=[16, 8], transform_hidden=[8]).fit(view)
    assert set(DIAGNOSTICS) <= set(diag)
    assert all(math.isfinite(diag[k]) for k in DIAGNOSTICS)
    assert 0 <= diag["domain_accuracy"] <= 1 and 0 <= diag["probe_features"] <= 1
    assert 0 < diag["target_share"] < 1


def test_alignment_measures_on_hand_cases():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    # per-dimension |Δmean| / pooled sd: (1 / sqrt(2), 0) -> mean 0.35355
    assert standardised_gap(a, b) == pytest.approx(0.5 / math.sqrt(2.0))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=gen)
    shifted = x + torch.tensor([4.0, 0.0, 0.0])
    # 4 sd apart: the best rule scores Φ(2) = 0.977; on 200 held-out points its sd is 0.011, so > 0.94
    assert probe_accuracy(shifted[:200], x[200:]) > 0.94
    assert abs(probe_accuracy(x[:200], x[200:]) - 0.5) < 0.1  # same law: chance (sd of a 200-point accuracy ~0.035)
    proj = projection_summary(shifted[:200], x[200:])
    assert proj["pc1_source_mean"] - proj["pc1_target_mean"] == pytest.approx(4.0, abs=0.3)  # the shift is the main axis
