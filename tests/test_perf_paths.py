"""The fast paths of issue 18 agree exactly with the paths they replace; CPU and CUDA agree (skipped without a GPU)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from simulator.cascade.ranker_models import FieldEmbedding, FieldSizes, RankerFeatures
from simulator.metrics import formulas as F
from simulator.metrics.measure import _unique_hits
from simulator.types import Catalogue, RequestBatch
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")


def test_unique_hits_hand_case() -> None:
    retrieved = torch.tensor([[5, 3, 9, 3], [1, 2, 4, 8]])
    relevant = torch.tensor([[3, 7, 9], [0, 6, 7]])  # row 0: 3 and 9 found (3 twice in retrieved: counts once)
    assert _unique_hits(retrieved, relevant).tolist() == [2.0, 0.0]


def test_unique_hits_equals_hits_at_k_on_distinct_rows() -> None:
    g = torch.Generator().manual_seed(0)
    retrieved = torch.randint(0, 60, (300, 40), generator=g)  # duplicates allowed, as an agent's top-K could hold
    relevant = torch.rand(300, 60, generator=g).argsort(dim=1)[:, :25]  # distinct per row, like a true top-K
    fast = _unique_hits(retrieved, relevant[:, :25])
    assert torch.equal(fast, F.hits_at_k(retrieved, relevant))
    assert fast.dtype == torch.float64


def _inputs(n: int = 30, m: int = 50, k: int = 7) -> tuple[FieldEmbedding, RequestBatch, torch.Tensor, Catalogue]:
    g = torch.Generator().manual_seed(1)
    cat = Catalogue(
        live=torch.ones(m, dtype=torch.bool), category=torch.arange(m) % 3, creator=torch.arange(m) % 5,
        domain=torch.zeros(m, dtype=torch.long), promoted=torch.arange(m) % 7 == 0, modality=torch.randn(m, 3, 4, generator=g),
        clicks=torch.randint(0, 50, (m,), generator=g).float(), exposures=torch.randint(50, 500, (m,), generator=g).float(),
        born_round=torch.randint(-1, 3, (m,), generator=g),
    )
    req = RequestBatch(
        request_id=torch.arange(n), user_id=torch.randint(0, 40, (n,), generator=g), domain=torch.zeros(n, dtype=torch.long),
        entry=torch.randint(0, 3, (n,), generator=g), hour=torch.zeros(n), profile=torch.randn(n, 6, generator=g),
        history=torch.randint(-1, m, (n, 5), generator=g), round=2, time=torch.zeros(n, dtype=torch.float64),
    )
    emb = FieldEmbedding(FieldSizes(40, m, 3, 5, 6, 4, 8))
    return emb, req, torch.randint(-1, m, (n, k), generator=g), cat


def test_scoring_fields_equal_training_fields() -> None:
    emb, req, ids, cat = _inputs()
    feats = RankerFeatures.build(req, ids, cat)
    assert torch.equal(RankerFeatures.build(req, ids, cat, popularity=cat.popularity_features()).popularity, feats.popularity)
    with torch.no_grad():
        scoring = emb(feats)  # the preallocated path
    assert torch.equal(scoring, emb(feats).detach())  # the stack + cat path used in training


def test_popularity_features_of_some_rows_equal_the_full_table_rows() -> None:
    """A two-tower training step computes the popularity features of its minibatch's items only: same bits."""
    _, _, ids, cat = _inputs()
    rows = ids.clamp_min(0).flatten()
    assert torch.equal(cat.popularity_features(rows), cat.popularity_features()[rows])
    clicks, exposures = cat.clicks[3].item(), cat.exposures[3].item()
    expected = torch.tensor([math.log1p(clicks), math.log1p(exposures), (clicks + 1.0) / (exposures + 10.0)])
    assert torch.allclose(cat.popularity_features(torch.tensor([3]))[0], expected)


def _metrics(device: str) -> dict[tuple[int, str], float]:
    from scenarios.experiment import make_experiment, run_experiment

    exp = make_experiment(tiny_scenario(), agent_names=["bc"], seeds=1, rounds=3, device=device)
    frame = run_experiment(exp)
    return {(int(r), str(m)): float(v) for r, m, v in zip(frame["round"], frame["metric"], frame["value"], strict=True)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree() -> None:
    """Same seed on CPU and CUDA. Random streams differ by device (torch generators), so the runs are two draws of
    the same process: the logged CTR of a round (240 requests x 5 slots = 1,200 impressions, p <= 0.5, sd <= 0.0144 per
    run) must agree within 5 sd of a difference (5 * sqrt(2) * 0.0144 = 0.10); a deterministic function of the same
    inputs (ranker scores) must agree to float tolerance."""
    cpu, cuda = _metrics("cpu"), _metrics("cuda")
    assert cpu.keys() == cuda.keys()
    for r in range(3):
        assert abs(cpu[(r, "logged_ctr")] - cuda[(r, "logged_ctr")]) <= 0.10
    emb, req, ids, cat = _inputs()
    with torch.no_grad():
        on_cpu = emb(RankerFeatures.build(req, ids, cat))
        gpu = copy.deepcopy(emb).cuda()
        on_gpu = gpu(RankerFeatures.build(req.to("cuda"), ids.cuda(), cat.to("cuda")))
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-5, atol=1e-6)


def test_settle_heap_freezes_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from simulator.memory import settle_heap

    gc.unfreeze()
    try:
        monkeypatch.setenv("CASCADESIM_KEEP_GC", "1")
        settle_heap()
        assert gc.get_freeze_count() == 0
        monkeypatch.delenv("CASCADESIM_KEEP_GC")
        settle_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_loop_fits_the_allocator_to_its_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loop sets glibc's thresholds for its size before building its world: the 1 MiB mmap pin only for large
    catalogues (memory), heap reuse below (time); ``CASCADESIM_KEEP_MALLOC=1`` leaves the allocator alone."""
    import sys

    from simulator import memory
    from simulator.loop import ClosedLoop

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(memory, "_mallopt", lambda param, value: calls.append((param, value)) or True)
    assert memory.fit_malloc_to(memory.LARGE_CATALOGUE)
    assert calls == [(memory._M_MMAP_THRESHOLD, 1 << 20), (memory._M_TRIM_THRESHOLD, memory.DEFAULT_TRIM)]
    calls.clear()
    assert memory.fit_malloc_to(memory.LARGE_CATALOGUE - 1)
    assert calls == [(memory._M_MMAP_THRESHOLD, memory.SMALL_MMAP), (memory._M_TRIM_THRESHOLD, memory.SMALL_TRIM)]
    seen: list[int] = []
    monkeypatch.setattr("simulator.loop.fit_malloc_to", seen.append)
    sc = tiny_scenario()
    ClosedLoop(sc, 0)
    assert seen == [sc.world.n_items]
    monkeypatch.undo()
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("CASCADESIM_KEEP_MALLOC", "1")
        assert not memory.fit_malloc_to(10) and not memory.pin_mmap_threshold()
        monkeypatch.delenv("CASCADESIM_KEEP_MALLOC")
        assert memory.fit_malloc_to(10)  # glibc accepts both values


def test_heap_reuse_lifts_the_pin_only_while_a_fit_runs(monkeypatch) -> None:
    """Pinned (large catalogue): inside ``heap_reuse`` blocks up to 32 MiB come from the heap; after it, the pin is back and
    the heap is trimmed, also when the fit raises. Not pinned: nothing is touched."""
    from simulator import memory

    calls: list[tuple[int, int]] = []
    trims: list[bool] = []
    monkeypatch.setattr(memory, "_mallopt", lambda param, value: calls.append((param, value)) or True)
    monkeypatch.setattr(memory, "_trim_heap", lambda: trims.append(True))
    mmap, trim = memory._M_MMAP_THRESHOLD, memory._M_TRIM_THRESHOLD
    memory.fit_malloc_to(memory.LARGE_CATALOGUE - 1)
    calls.clear()
    with memory.heap_reuse():
        pass
    assert calls == [] and trims == []
    memory.fit_malloc_to(memory.LARGE_CATALOGUE)
    calls.clear()
    with pytest.raises(RuntimeError, match="diverged"), memory.heap_reuse():
        assert calls == [(mmap, memory.SMALL_MMAP), (trim, memory.SMALL_TRIM)]
        raise RuntimeError("diverged")
    assert calls[2:] == [(mmap, memory.PIN), (trim, memory.DEFAULT_TRIM)] and trims == [True]
    memory.fit_malloc_to(memory.LARGE_CATALOGUE - 1)  # leave the module as the small worlds of the other tests want it
