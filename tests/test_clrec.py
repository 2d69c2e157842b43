"""CLRec, sampled softmax (± logQ), their queues and frequency estimators (algorithms.md §9, §10).

The centre is the tiny exact world of §10(f) (CLRec Theorem 1): one context, 30 items, a known
preference ``r`` and a Zipf exposure ``q``, clicks drawn ``∝ r·q``. A free logit vector trained with

- the full-softmax MLE stays at the biased click distribution ``p_data``;
- the contrastive loss (Eq. 3, the ``sampled-softmax`` / CLRec loss) with negatives drawn ``∝ q``
  reaches KL(r ‖ p_θ) < 0.05, with explicit sampling and with the FIFO-queue sampler;
- the same loss *with* logQ (Eq. 2, ``sampled-softmax-logq``) goes back to ``p_data``;
- a deduplicated queue (uniform negatives) also lands on ``p_data``: the duplicates are the sampler.
"""

from __future__ import annotations

import pytest
import torch

from agents import check_agent, make_agent
from agents.backbone.frequency import StreamingFrequency, unigram_q
from agents.backbone.queue import EmbeddingQueue, IdQueue
from agents.backbone.softmax import duplicate_mask
from agents.clrec import CLRec, contrastive_loss
from agents.sampled_softmax import SampledSoftmax, sampled_softmax_logq_loss
from tests.agent_fixtures import make_requests, tiny_context, tiny_view

pytestmark = pytest.mark.usefixtures("one_thread")

AGENTS = ("sampled-softmax", "sampled-softmax-logq", "clrec", "clrec-queue", "clrec-cached")
M, STEPS, BATCH = 30, 1500, 256
QUEUE, QUEUE_BATCH = 1280, 64  # the queue runs cost O(batch x queue) per step: a smaller batch keeps them fast


# --- the tiny exact world (Theorem 1) -------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(M, generator=g) + 0.05
    r = r / r.sum()
    q = torch.arange(1, M + 1).float().pow(-1.0)[torch.randperm(M, generator=g)]
    q = q / q.sum()
    p_data = r * q / (r * q).sum()
    return r, q, p_data


def kl(p: torch.Tensor, t: torch.Tensor) -> float:
    return float((p * (p / t).log()).sum())


def train_logits(world, kind: str, seed: int = 1) -> torch.Tensor:
    """Fit a free logit vector on clicks ~ p_data with one of the losses; return softmax(θ)."""
    _, q, p_data = world
    theta = torch.zeros(M, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    queue = IdQueue(QUEUE)
    queue.fill_random(torch.arange(M), gen)  # official-code initialisation: uniformly random ids
    log_q = q.log()
    for _ in range(STEPS):
        y = torch.multinomial(p_data, BATCH, replacement=True, generator=gen)
        if kind == "mle":
            loss = -torch.log_softmax(theta, 0)[y].mean()
        elif kind in ("contrastive", "contrastive-masked", "logq"):
            negs = torch.multinomial(q, 256, replacement=True, generator=gen)
            lq = (log_q[y], log_q[negs]) if kind == "logq" else (None, None)
            mask = duplicate_mask(y, negs) if kind == "contrastive-masked" else None  # accidental hits dropped
            loss = sampled_softmax_logq_loss(theta[y], theta[negs], *lq, mask)
        elif kind in ("queue", "dedup-queue"):
            # the FIFO holds the last 10 steps' exposures (|Q| = 10 x batch, as in the paper)
            queue.enqueue(torch.multinomial(q, QUEUE // 10, replacement=True, generator=gen))
            ids = queue.ids if kind == "queue" else torch.unique(queue.ids)
            y = y[:QUEUE_BATCH]
            cand = torch.cat([y, ids])  # each row's positive is its own column, the queue follows
            logits = theta[cand].expand(len(y), -1)
            # other rows' positives are not negatives here: drop the first columns except the target
            drop = torch.zeros(len(y), len(cand), dtype=torch.bool)
            drop[:, : len(y)] = True
            loss = contrastive_loss(logits, torch.arange(len(y)), drop)
        else:
            raise ValueError(kind)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(theta.detach(), 0)


def test_tiny_world_is_biased_enough_to_matter(world) -> None:
    r, _, p_data = world
    assert kl(r, p_data) > 0.3


def test_full_softmax_mle_stays_at_the_biased_data_distribution(world) -> None:
    r, _, p_data = world
    p = train_logits(world, "mle")
    assert kl(p_data, p) < 0.02
    assert abs(kl(r, p) - kl(r, p_data)) < 0.05 and kl(r, p) > 0.3


@pytest.mark.parametrize("kind", ["contrastive", "contrastive-masked"])
def test_contrastive_loss_with_negatives_drawn_from_exposure_recovers_preference(world, kind) -> None:
    r, _, _ = world
    assert kl(r, train_logits(world, kind)) < 0.05  # Eq. 3 as written, and with accidental hits masked


def test_logq_correction_brings_back_the_bias(world) -> None:
    r, _, p_data = world
    p = train_logits(world, "logq")
    assert kl(p_data, p) < 0.05 and kl(r, p) > 0.3


def test_queue_sampler_recovers_preference_and_dedup_would_not(world) -> None:
    r, _, _ = world
    assert kl(r, train_logits(world, "queue")) < 0.05
    assert kl(r, train_logits(world, "dedup-queue")) > 0.3  # uniform negatives = MLE, i.e. p_data


# --- queues ---------------------------------------------------------------------------------------


def test_id_queue_is_fifo_and_keeps_duplicates() -> None:
    q = IdQueue(5)
    assert len(q) == 0
    assert q.enqueue(torch.tensor([1, 2, 2])).numel() == 0
    out = q.enqueue(torch.tensor([3, 2, 2]))
    assert q.ids.tolist() == [2, 2, 3, 2, 2] and out.tolist() == [1]  # oldest first, duplicates kept
    out = q.enqueue(torch.tensor([7, 8, 9, 10, 11, 12]))
    assert q.ids.tolist() == [8, 9, 10, 11, 12] and out.tolist() == [2, 2, 3, 2, 2, 7]
    state = q.state_dict()
    q.enqueue(torch.tensor([0]))
    q.load_state_dict(state)
    assert q.ids.tolist() == [8, 9, 10, 11, 12]


def test_id_queue_random_fill_is_seeded_uniform_and_oldest() -> None:
    a, b = IdQueue(4000), IdQueue(4000)
    a.enqueue(torch.tensor([99]))
    a.fill_random(torch.arange(10), torch.Generator().manual_seed(0))
    b.enqueue(torch.tensor([99]))
    b.fill_random(torch.arange(10), torch.Generator().manual_seed(0))
    assert torch.equal(a.ids, b.ids) and len(a) == 4000 and a.ids[-1] == 99
    counts = torch.bincount(a.ids[:-1], minlength=10).float()
    assert counts.min() > 330 and counts.max() < 470  # ~400 each


def test_embedding_queue_caches_detached_vectors() -> None:
    q = EmbeddingQueue(3, 2)
    x = torch.ones(2, 2, requires_grad=True)
    q.enqueue(torch.tensor([4, 5]), x * 2)
    out = q.enqueue(torch.tensor([6, 4]), x * 3)
    assert q.ids.tolist() == [5, 6, 4] and out.tolist() == [4]
    assert not q.embeddings.requires_grad and q.embeddings[0].tolist() == [2.0, 2.0]


# --- losses ---------------------------------------------------------------------------------------


def test_contrastive_loss_is_cross_entropy_on_the_target_column_with_masking() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, generator=g)
    target = torch.tensor([0, 2, 5, 1])
    ref = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(contrastive_loss(logits, target), ref, atol=1e-6)
    drop = torch.zeros(4, 6, dtype=torch.bool)
    drop[0, 3] = True
    drop[1, 2] = True  # dropping the target itself is ignored
    masked = logits.clone()
    masked[0, 3] = -torch.inf
    assert torch.allclose(contrastive_loss(logits, target, drop), torch.nn.functional.cross_entropy(masked, target), atol=1e-6)


def test_uniform_q_makes_logq_and_plain_losses_coincide() -> None:
    g = torch.Generator().manual_seed(4)
    pos = torch.randn(8, generator=g, requires_grad=True)
    neg = torch.randn(8, 20, generator=g, requires_grad=True)
    lq = torch.full((8,), -3.4)
    a = sampled_softmax_logq_loss(pos, neg, lq, lq.unsqueeze(1).expand(8, 20))
    b = sampled_softmax_logq_loss(pos, neg, None, None)
    ga = torch.autograd.grad(a, (pos, neg))
    gb = torch.autograd.grad(b, (pos, neg))
    assert torch.allclose(a, b) and all(torch.allclose(x, y, atol=1e-7) for x, y in zip(ga, gb))
    nonuniform = torch.randn(8, generator=g)
    c = sampled_softmax_logq_loss(pos, neg, nonuniform, torch.randn(8, 20, generator=g))
    assert not torch.allclose(b, c)


@pytest.mark.parametrize("negatives", ["shared", "in-batch"])
def test_uniform_q_makes_the_two_agents_identical(negatives) -> None:
    ctx = tiny_context(seed=2)
    view = tiny_view(ctx, seed=2)
    plain = make_agent("sampled-softmax", ctx, q="uniform", negatives=negatives)
    corrected = make_agent("sampled-softmax-logq", ctx, q="uniform", negatives=negatives)
    assert not plain.config.logq and corrected.config.logq
    corrected.retriever.load_state_dict(plain.retriever.state_dict())  # same start and random streams
    corrected.name = plain.name
    plain.fit(view)
    corrected.fit(view)
    for (k, a), (_, b) in zip(plain.retriever.state_dict().items(), corrected.retriever.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), k
    unigram = make_agent("sampled-softmax-logq", ctx, negatives=negatives)
    unigram.retriever.load_state_dict(make_agent("sampled-softmax", ctx).retriever.state_dict())
    unigram.name = plain.name
    unigram.fit(view)
    pairs = zip(plain.retriever.state_dict().values(), unigram.retriever.state_dict().values())
    diff = [not torch.allclose(a, b, atol=1e-5) for a, b in pairs]
    assert any(diff)


# --- frequency estimators -------------------------------------------------------------------------


def test_unigram_q_is_add_one_smoothed_over_the_support() -> None:
    live = torch.tensor([True, True, False, True])
    q = unigram_q(torch.tensor([0, 0, 0, 1, 2]), 4, live)
    # counts over live: 3, 1, -, 0 -> (4, 2, 0, 1) / 7; the dead item's click is ignored
    assert torch.allclose(q, torch.tensor([4 / 7, 2 / 7, 0.0, 1 / 7]))


def test_streaming_estimator_tracks_per_step_frequency() -> None:
    est = StreamingFrequency(size=1024, n_hashes=2, rate=0.05, init_gap=100.0)
    for step in range(1, 601):
        ids = [1, 1]  # item 1: every step (twice: counts once per step)
        if step % 4 == 0:
            ids.append(2)  # item 2: every 4th step
        if step % 20 == 0:
            ids.append(3)
        est.update(torch.tensor(ids))
    p = est.probability(torch.tensor([1, 2, 3, 4]))
    assert abs(float(p[0]) - 1.0) < 0.02 and abs(float(p[1]) - 0.25) < 0.02 and abs(float(p[2]) - 0.05) < 0.01
    assert abs(float(p[3]) - 0.01) < 1e-6  # never seen: 1 / init_gap
    state = est.state_dict()
    est2 = StreamingFrequency(size=1024, n_hashes=2, rate=0.05)
    est2.load_state_dict(state)
    assert torch.equal(est2.probability(torch.tensor([1, 2, 3])), p[:3]) and est2.step == 600


# --- the agents -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(seed=3)


@pytest.fixture(scope="module")
def view(ctx):
    return tiny_view(ctx, seed=3)


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("sampled-softmax", {"negatives": "in-batch"}),
        ("sampled-softmax-logq", {"negatives": "in-batch", "q": "streaming"}),
        ("clrec-queue", {"enqueue_first": False}),
        ("clrec-queue", {"mask_accidental_hits": False}),
        ("clrec-cached", {"enqueue_first": False}),
    ],
)
def test_variants_honour_the_contract(name, overrides, ctx, view) -> None:
    requests = make_requests(view.users, torch.Generator().manual_seed(9), 16, first_id=5000, round_idx=3)
    check_agent(make_agent(name, ctx, **overrides), view, requests, k=10)


def test_queue_of_batch_size_in_paper_order_is_exactly_in_batch(ctx, view) -> None:
    n = int(view.impressions.clicked.sum())
    a = make_agent("clrec", ctx, batch_size=n, epochs=2)
    b = make_agent("clrec-queue", ctx, batch_size=n, queue_size=n, epochs=2)
    b.retriever.load_state_dict(a.retriever.state_dict())  # same start and shuffles (streams are named)
    b.name = a.name
    da, db = a.fit(view), b.fit(view)
    assert abs(da["loss"] - db["loss"]) < 1e-5
    for x, y in zip(a.retriever.state_dict().values(), b.retriever.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6)


def test_queue_fills_with_clicks_keeps_duplicates_and_resumes(ctx, view) -> None:
    agent: CLRec = make_agent("clrec-queue", ctx, queue_size=300)
    info = agent.fit(view)
    clicked = view.impressions.item_id[view.impressions.clicked.bool()]
    assert len(agent.queue) == 300 and info["queue_distinct_share"] < 1.0
    assert set(agent.queue.ids.tolist()) <= set(clicked.tolist()) | set(view.catalogue.live_ids().tolist())
    assert info["negatives"] == pytest.approx(299.0)
    assert 0.0 < info["masked_share"] < 1.0
    state = agent.state_dict()
    other: CLRec = make_agent("clrec-queue", ctx, queue_size=300)
    other.load_state_dict(state)
    assert torch.equal(other.queue.ids, agent.queue.ids)


def test_queue_negatives_get_gradient_and_cached_ones_do_not(ctx, view) -> None:
    catalogue = view.catalogue
    for name, expect in (("clrec-queue", True), ("clrec-cached", False)):
        agent: CLRec = make_agent(name, ctx, queue_size=64, enqueue_first=False)
        agent._init_queue(view)
        queued = set(agent.queue.ids.tolist())
        items = torch.tensor([i for i in catalogue.live_ids().tolist() if i not in queued][:4])
        only_queue = torch.tensor(sorted(queued - set(items.tolist())))
        requests = view.requests.select(torch.arange(4))
        model = agent.model
        f = model.user_embedding(requests, catalogue).detach()  # histories may hold queued items too
        g_pos = model.item_embedding(catalogue, items)
        ids, emb, target = agent._pool(catalogue, items, g_pos)
        contrastive_loss(model.logits(f, emb), target).backward()
        grad = model.item_encoder.item_id.weight.grad[only_queue].abs().sum()
        assert (float(grad) > 0) == expect, name


def test_fit_diagnostics_and_registered_names(ctx, view) -> None:
    for name in AGENTS:
        agent = make_agent(name, ctx)
        assert agent.name == name
        info = agent.fit(view)
        assert info["examples"] == float(view.impressions.clicked.sum())
        assert 0.0 <= info["click_impression_tv"] <= 1.0
    assert isinstance(make_agent("sampled-softmax", ctx), SampledSoftmax)
    with pytest.raises(ValueError, match="streaming"):
        make_agent("sampled-softmax", ctx, q="streaming")


def test_logq_stays_finite_when_a_clicked_item_has_retired(ctx, view) -> None:
    from dataclasses import replace

    clicked = view.impressions.item_id[view.impressions.clicked.bool()]
    live = view.catalogue.live.clone()
    live[clicked[:5]] = False  # retired since they were clicked
    retired = replace(view, catalogue=replace(view.catalogue, live=live))
    for negatives in ("shared", "in-batch"):
        info = make_agent("sampled-softmax-logq", ctx, negatives=negatives).fit(retired)
        assert info["loss"] == info["loss"] and abs(info["loss"]) < 1e6, negatives
