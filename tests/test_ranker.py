"""Tests of the platform ranker (DeepFM / DCN) on a tiny hand-built training view."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from simulator.cascade import ranker_models
from simulator.cascade.ranker import FrozenRanker, PlatformRanker, RankerFeatures, make_ranker
from simulator.cascade.ranker_models import DCN, N_FIELDS, FieldEmbedding, FieldSizes, fm_second_order
from simulator.config import Scenario
from simulator.log.view import Candidates, Impressions, TrainingView
from simulator.types import Catalogue, RequestBatch, UserTable

N_USERS, N_ITEMS, N_CAT, N_CREATORS, D_P, D_M, L, K = 200, 60, 2, 6, 4, 3, 5, 5
TRAIN_USERS = 150  # users >= TRAIN_USERS are held out


class _StubScorer:
    version = 0

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(item_ids.shape)


def _world(seed: int = 0) -> tuple[Catalogue, UserTable]:
    g = torch.Generator().manual_seed(seed)
    catalogue = Catalogue(
        live=torch.ones(N_ITEMS, dtype=torch.bool), category=torch.arange(N_ITEMS) % N_CAT,
        creator=torch.arange(N_ITEMS) % N_CREATORS, domain=torch.zeros(N_ITEMS, dtype=torch.long),
        promoted=torch.arange(N_ITEMS) % 17 == 0, modality=torch.randn(N_ITEMS, 3, D_M, generator=g),
        clicks=torch.randint(0, 50, (N_ITEMS,), generator=g).float(),
        exposures=torch.randint(50, 500, (N_ITEMS,), generator=g).float(),
        born_round=torch.randint(-1, 3, (N_ITEMS,), generator=g),
    )
    history = torch.randint(0, N_ITEMS, (N_USERS, L), generator=g)
    history[:, : L // 2] = -1
    users = UserTable(alive=torch.ones(N_USERS, dtype=torch.bool), profile=torch.randn(N_USERS, D_P, generator=g), history=history)
    return catalogue, users


def _requests(users: UserTable, user_id: torch.Tensor, rnd: int, g: torch.Generator) -> RequestBatch:
    r = user_id.shape[0]
    return RequestBatch(
        request_id=torch.arange(r), user_id=user_id, domain=torch.zeros(r, dtype=torch.long),
        entry=torch.randint(0, 3, (r,), generator=g), hour=torch.rand(r, generator=g) * 168,
        profile=users.profile[user_id], history=users.history[user_id], round=rnd,
    )


def _labels(catalogue: Catalogue, users: UserTable, user_id: torch.Tensor, items: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Clicked iff the item's category equals the sign bucket of profile[0], with 5% label noise."""
    rule = catalogue.category[items] == (users.profile[user_id, 0] > 0).long().unsqueeze(-1)
    flip = torch.rand(rule.shape, generator=g) < 0.05
    return rule ^ flip


def _view(catalogue: Catalogue, users: UserTable, n_requests: int = 1500, rnd: int = 2, seed: int = 1) -> TrainingView:
    g = torch.Generator().manual_seed(seed)
    user_id = torch.randint(0, TRAIN_USERS, (n_requests,), generator=g)
    requests = _requests(users, user_id, rnd, g)
    items = torch.randint(0, N_ITEMS, (n_requests, K), generator=g)
    clicked = _labels(catalogue, users, user_id, items, g).flatten()
    e = clicked.numel()
    row = torch.arange(n_requests).repeat_interleave(K)
    z, zl = torch.zeros(e), torch.zeros(e, dtype=torch.long)
    imp = Impressions(
        row=row, item_id=items.flatten(), position=torch.arange(K).repeat(n_requests), retrieval_rank=zl,
        retrieval_score=z, ranking_score=z, exposure_propensity=torch.ones(e), clicked=clicked,
        finished=clicked, watch_time=z, dwell=z, portal_only=torch.zeros(e, dtype=torch.bool),
    )
    cand = Candidates(row=row, item_id=items.flatten(), retrieval_rank=zl, retrieval_score=z, ranking_score=z,
                      exposed=torch.ones(e, dtype=torch.bool), recall_prob=torch.ones(e), expose_prob=torch.ones(e))
    return TrainingView(
        round=rnd, first_round=0, requests=requests, request_round=torch.randint(0, rnd + 1, (n_requests,), generator=g),
        explore=torch.zeros(n_requests, dtype=torch.bool), ranker_version=torch.zeros(n_requests, dtype=torch.long),
        impressions=imp, candidate_source=cand, catalogue=catalogue, users=users, ranker=_StubScorer(), rankers={}, retrievers={},
        n_users=N_USERS, n_items=N_ITEMS,
    )


def _ranker(kind: str = "deepfm", seed: int = 7, **kw) -> PlatformRanker:
    args = dict(kind=kind, n_users=N_USERS, n_items=N_ITEMS, n_categories=N_CAT, n_creators=N_CREATORS, profile_dim=D_P,
                modality_dim=D_M, dim=8, lr=0.01, batch_size=256, epochs=2, seed=seed, device="cpu")
    return PlatformRanker(**{**args, **kw})


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    pos, neg = scores[labels], scores[~labels]
    diff = pos.unsqueeze(1) - neg.unsqueeze(0)
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


@pytest.fixture(scope="module")
def data() -> tuple[Catalogue, UserTable, TrainingView]:
    catalogue, users = _world()
    return catalogue, users, _view(catalogue, users)


def _held_out(catalogue: Catalogue, users: UserTable) -> tuple[RequestBatch, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    user_id = torch.randint(TRAIN_USERS, N_USERS, (300,), generator=g)
    items = torch.randint(0, N_ITEMS, (300, K), generator=g)
    return _requests(users, user_id, 3, g), items, _labels(catalogue, users, user_id, items, g)


@pytest.mark.parametrize("kind", ["deepfm", "dcn"])
def test_learns_rule_and_loss_falls(data, kind: str) -> None:
    catalogue, users, view = data
    ranker = _ranker(kind)
    losses = [ranker.fit(view)["ranker_loss"] for _ in range(3)]
    assert losses[-1] < losses[0]
    assert ranker.version == 3
    ranker.set_catalogue(catalogue)
    requests, items, labels = _held_out(catalogue, users)
    scores = ranker.score(requests, items)
    assert _auc(scores.flatten(), labels.flatten()) > 0.75


def test_fm_second_order_equals_pairwise_sum() -> None:
    e = torch.randn(3, 4, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = e.shape[-2]
    explicit = sum((e[..., i, :] * e[..., j, :]).sum(-1) for i in range(f) for j in range(i + 1, f))
    torch.testing.assert_close(fm_second_order(e), explicit)


def test_dcn_cross_layers_follow_the_formula() -> None:
    model = DCN(FieldSizes(N_USERS, N_ITEMS, N_CAT, N_CREATORS, D_P, D_M, 4)).double()
    x0 = torch.randn(3, 2, model.flat_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x0
    for w, b in zip(model.cross_w, model.cross_b):
        x = x0 * (x @ w).unsqueeze(-1) + b + x
    torch.testing.assert_close(model.cross(x0), x)


def test_field_embedding_shape(data) -> None:
    catalogue, users, view = data
    emb = FieldEmbedding(FieldSizes(N_USERS, N_ITEMS, N_CAT, N_CREATORS, D_P, D_M, 8))
    feats = RankerFeatures.build(view.requests.select(torch.arange(4)), torch.randint(0, N_ITEMS, (4, 7)), catalogue)
    assert emb(feats).shape == (4, 7, N_FIELDS, 8)
    assert feats.item_sparse[..., 5].max() <= 15 and feats.item_sparse[..., 6].min() >= 0


@pytest.mark.parametrize("kind", ["deepfm", "dcn"])
def test_score_shape_range_and_blocks(data, kind: str) -> None:
    catalogue, users, view = data
    ranker = _ranker(kind)
    ranker.fit(view)
    ranker.set_catalogue(catalogue)
    requests = view.requests.select(torch.arange(23))
    items = torch.randint(0, N_ITEMS, (23, 11), generator=torch.Generator().manual_seed(3))
    one_shot = ranker.score(requests, items)
    assert one_shot.shape == (23, 11) and one_shot.dtype == torch.float32
    assert bool(((one_shot > 0) & (one_shot < 1)).all())
    ranker.block_pairs = 25  # 2 requests per block, last block partial
    torch.testing.assert_close(ranker.score(requests, items), one_shot, rtol=1e-6, atol=1e-7)
    padded = items.clone()
    padded[:, -1] = -1
    assert bool((ranker.score(requests, padded)[:, -1] == 0).all())


def test_score_needs_catalogue(data) -> None:
    _, _, view = data
    with pytest.raises(RuntimeError, match="set_catalogue"):
        _ranker().score(view.requests.select(torch.arange(2)), torch.zeros(2, 3, dtype=torch.long))


def test_state_round_trip_is_exact(data) -> None:
    catalogue, _, view = data
    a, b = _ranker(), _ranker()
    a.fit(view)
    b.load_state_dict(a.state_dict())
    assert b.version == a.version == 1
    for r in (a, b):
        r.set_catalogue(catalogue)
    requests, items = view.requests.select(torch.arange(30)), torch.arange(N_ITEMS)[:20].expand(30, 20)
    assert torch.equal(a.score(requests, items), b.score(requests, items))
    a.fit(view)
    b.fit(view)  # optimiser state travelled too
    assert torch.equal(a.score(requests, items), b.score(requests, items))


def test_state_dict_is_independent(data) -> None:
    _, _, view = data
    ranker = _ranker()
    state = ranker.state_dict()
    before = {k: v.clone() for k, v in state["module"].items()}
    ranker.fit(view)
    assert all(torch.equal(before[k], state["module"][k]) for k in before)


def test_frozen_copy_unaffected_by_later_fits(data) -> None:
    catalogue, _, view = data
    ranker = _ranker("dcn")
    ranker.set_catalogue(catalogue)
    ranker.fit(view)
    frozen = ranker.frozen()
    assert isinstance(frozen, FrozenRanker) and frozen.version == 1
    requests, items = view.requests.select(torch.arange(10)), torch.arange(N_ITEMS)[:8].expand(10, 8)
    before = frozen.score(requests, items)
    ranker.fit(view)
    assert torch.equal(frozen.score(requests, items), before)
    assert not torch.equal(ranker.score(requests, items), before)
    assert frozen.version == 1 and not frozen.module.training
    assert not any(p.requires_grad for p in frozen.module.parameters())


def test_determinism_and_global_rng_untouched(data) -> None:
    catalogue, _, view = data
    state = torch.get_rng_state()
    rankers = [_ranker(seed=s) for s in (7, 7, 8)]
    requests, items = view.requests.select(torch.arange(10)), torch.arange(N_ITEMS)[:8].expand(10, 8)
    scores = []
    for r in rankers:
        r.fit(view)
        r.set_catalogue(catalogue)
        scores.append(r.score(requests, items))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(scores[0], scores[1])
    assert not torch.equal(scores[0], scores[2])


def test_make_ranker_from_scenario() -> None:
    sc = Scenario()
    ranker = make_ranker("dcn", sc, seed=0)
    assert ranker.kind == "dcn" and ranker.epochs == sc.cascade.ranker_epochs
    assert ranker.module.fields.tables["item"].num_embeddings == sc.item_capacity
    assert ranker.module.fields.tables["user"].num_embeddings == sc.user_capacity
    with pytest.raises(ValueError, match="noisy-oracle"):
        make_ranker("noisy-oracle", sc, seed=0)


def test_ranker_reads_no_truth() -> None:
    for path in (Path(ranker_models.__file__), Path(ranker_models.__file__).with_name("ranker.py")):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(m.startswith(("simulator.world", "simulator.metrics")) for m in names), path
