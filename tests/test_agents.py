"""Agent tests: the contract checker over the registry, BC's loss and learning, the reference agents,
registry errors, and the import barrier of ``agents/``."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from agents import agent_config, check_agent, list_agents, make_agent
from agents.backbone.index import blocked_topk
from agents.bc import bc_loss
from agents.registry import agent_spec, flat_keys
from simulator.config import TrainingConfig
from tests.agent_fixtures import auc, click_prob, make_requests, random_slates, tiny_context, tiny_view

pytestmark = pytest.mark.usefixtures("one_thread")

AGENTS_DIR = Path(__file__).resolve().parents[1] / "agents"


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(seed=3)


@pytest.fixture(scope="module")
def view(ctx):
    return tiny_view(ctx, seed=3)


@pytest.fixture(scope="module")
def requests(view):
    return make_requests(view.users, torch.Generator().manual_seed(9), 16, first_id=5000, round_idx=3)


# --- contract ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(list_agents()))
def test_check_agent_passes_for_every_registered_agent(name, ctx, view, requests):
    check_agent(make_agent(name, ctx), view, requests, k=10)


def test_check_agent_passes_for_bc_variants(ctx, view, requests):
    for overrides in (
        {"similarity": "dot", "tau": 0.5},
        {"optimizer": "adagrad", "batch_norm": True, "label": "finished"},
        {"batch_norm": False, "input_norm": False, "weight_decay": 1e-3},
    ):
        check_agent(make_agent("bc", ctx, hidden=[16], **overrides), view, requests, k=7)


def test_check_agent_catches_a_broken_agent(ctx, view, requests):
    agent = make_agent("popular", ctx)
    agent.score = lambda req, ids: torch.zeros(ids.shape)  # disagrees with retrieve
    with pytest.raises(AssertionError, match=r"check_agent\[popular\]: score disagrees"):
        check_agent(agent, view, requests, k=5)


def test_list_agents_describes_each_in_one_line():
    described = list_agents()
    assert {"bc", "popular", "random"} <= set(described)
    assert all(d and "\n" not in d for d in described.values())


# --- BC --------------------------------------------------------------------------------------------


def test_bc_loss_matches_hand_computed_bce():
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    sig = [1 / (1 + math.exp(-x)) for x in (2.0, -1.0, 0.5)]
    expected = -(math.log(sig[0]) + math.log(1 - sig[1]) + math.log(sig[2])) / 3
    assert bc_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    l2_term = torch.tensor(4.0)
    assert bc_loss(logits, labels, l2_term, l2=0.1).item() == pytest.approx(expected + 0.4, rel=1e-6)


def test_bc_learns_the_toy_rule():
    training = TrainingConfig(epochs=3, batch_size=128, lr=0.01, embedding_dim=16)
    ctx = tiny_context(seed=1, training=training, n_users=100, n_items=80)
    view = tiny_view(ctx, seed=1, n_requests=600, slate=6)
    agent = make_agent("bc", ctx, hidden=[32])
    losses = [agent.fit(view)["loss"] for _ in range(3)]
    assert losses[-1] < losses[0], losses
    agent.index(view.catalogue)
    gen = torch.Generator().manual_seed(77)
    fresh = make_requests(view.users, gen, 3000, first_id=10_000, round_idx=3)
    items = random_slates(view.catalogue, len(fresh), 1, gen)
    labels = torch.rand(items.shape, generator=gen) < click_prob(fresh, items, view.catalogue)
    assert auc(agent.score(fresh, items).flatten(), labels.flatten()) > 0.7


def test_bc_standardises_dense_item_inputs(ctx, view):
    """Popularity features are raw log counts; after fitting, the tower sees them centred and unit-scaled."""
    agent = make_agent("bc", ctx)
    agent.fit(view)
    model = agent.retriever.model
    live = view.catalogue.live_ids()
    with torch.no_grad():
        model.eval()
        pop = model.item_features(view.catalogue, live)[:, -3:]
    raw = view.catalogue.popularity_features()[live]
    assert raw[:, 0].mean() > 0.5  # the raw log-click feature is far from centred
    # running statistics are exposure-weighted, so the live catalogue is only roughly standard
    assert pop.mean(0).abs().max() < 0.5 and ((pop.std(0) > 0.25) & (pop.std(0) < 4)).all(), (pop.mean(0), pop.std(0))


def test_bc_is_deterministic_and_leaves_the_global_rng_alone(ctx, view, requests):
    rng_state = torch.random.get_rng_state()
    outs = []
    for _ in range(2):
        agent = make_agent("bc", ctx)
        agent.fit(view)
        agent.index(view.catalogue)
        outs.append(agent.retrieve(requests, 10))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(rng_state, torch.random.get_rng_state())
    other = make_agent("bc", tiny_context(seed=4))
    other.fit(view)
    other.index(view.catalogue)
    assert not torch.equal(other.retrieve(requests, 10)[1], outs[0][1])


def test_bc_refuses_a_stale_index_and_scores_dead_items(ctx, view, requests):
    agent = make_agent("bc", ctx)
    agent.index(view.catalogue)
    dead = torch.nonzero(~view.catalogue.live).squeeze(1)[:3].expand(len(requests), 3)
    assert agent.score(requests, dead).shape == (len(requests), 3)
    agent.fit(view)
    with pytest.raises(RuntimeError, match="call index"):
        agent.retrieve(requests, 5)


def test_blocked_topk_equals_full_topk():
    scores = torch.randn(37, 50, generator=torch.Generator().manual_seed(0))
    cols, vals = blocked_topk(37, 6, 4, lambda a, b: scores[a:b], scores.device)
    full = scores.topk(6, dim=1)
    assert torch.equal(cols, full.indices) and torch.equal(vals, full.values)


# --- reference agents ------------------------------------------------------------------------------


def test_random_is_deterministic_in_the_request_ids(ctx, view, requests):
    a, b = make_agent("random", ctx), make_agent("random", ctx)
    for agent in (a, b):
        agent.index(view.catalogue)
    ids_a, sc_a = a.retrieve(requests, 8)
    shuffled = make_requests(view.users, torch.Generator().manual_seed(123), len(requests), first_id=5000)
    ids_b, sc_b = b.retrieve(shuffled, 8)  # other users, same request ids
    assert torch.equal(ids_a, ids_b) and torch.equal(sc_a, sc_b)
    later = make_requests(view.users, torch.Generator().manual_seed(9), len(requests), first_id=6000)
    assert not torch.equal(a.retrieve(later, 8)[0], ids_a)
    reseeded = make_agent("random", tiny_context(seed=4))
    reseeded.index(view.catalogue)
    assert not torch.equal(reseeded.retrieve(requests, 8)[0], ids_a)


def test_a_refitted_random_model_is_independent_of_the_one_that_served(ctx, view):
    """The offline candidate after a retrain must not rank a round's requests as the serving copy did."""
    server, learner = make_agent("random", ctx), make_agent("random", ctx)
    learner.fit(view)
    server.load_state_dict(learner.state_dict())  # deploy: the server now is the learner's model
    learner.fit(view)  # the retrain at the end of the round: the candidate
    for agent in (server, learner):
        agent.index(view.catalogue)
    n, k = 2000, 10
    reqs = make_requests(view.users, torch.Generator().manual_seed(11), n, first_id=0)
    served, fresh = server.retrieve(reqs, k)[0], learner.retrieve(reqs, k)[0]
    overlap = int((served.unsqueeze(2) == fresh.unsqueeze(1)).sum())
    live = len(view.catalogue.live_ids())
    mean = n * k * k / live  # hypergeometric: k of the live items, k of them drawn, per request
    assert abs(overlap - mean) < 6 * math.sqrt(mean), (overlap, mean)  # before the fix: overlap == n * k
    clone = make_agent("random", ctx)
    clone.load_state_dict(learner.state_dict())
    clone.index(view.catalogue)
    assert torch.equal(clone.retrieve(reqs, k)[0], fresh)  # the state dict carries the model


def test_random_covers_live_items_uniformly(ctx, view):
    agent = make_agent("random", ctx)
    agent.index(view.catalogue)
    n, k = 4000, 5
    reqs = make_requests(view.users, torch.Generator().manual_seed(5), n, first_id=0)
    ids, _ = agent.retrieve(reqs, k)
    live = view.catalogue.live_ids()
    counts = torch.bincount(ids.flatten(), minlength=view.catalogue.capacity)[live].double()
    expected = n * k / len(live)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = len(live) - 1
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)  # ~6 sd above the chi-square mean
    assert int(counts.min()) > 0


def test_popular_returns_the_most_clicked_live_items_in_order(ctx, view, requests):
    clicks = view.catalogue.clicks.clone()
    dead = torch.nonzero(~view.catalogue.live).squeeze(1)
    clicks[dead] = 1e6  # the most clicked items are dead
    live = view.catalogue.live_ids()
    clicks[live[:4]] = 500.0  # a four-way tie, broken by id
    catalogue = dataclasses.replace(view.catalogue, clicks=clicks)
    agent = make_agent("popular", ctx)
    agent.index(catalogue)
    ids, scores = agent.retrieve(requests, 10)
    expected = sorted(live.tolist(), key=lambda i: (-clicks[i].item(), i))[:10]
    assert ids.tolist() == [expected] * len(requests)
    assert expected[:4] == live[:4].tolist()
    assert bool(catalogue.live[ids].all())
    assert torch.allclose(scores[0], torch.log1p(clicks[torch.tensor(expected)]))


# --- registry --------------------------------------------------------------------------------------


def test_registry_errors_are_one_line_and_name_the_field(ctx):
    with pytest.raises(ValueError) as err:
        make_agent("nope", ctx)
    assert str(err.value) == "agent: unknown name 'nope'; allowed: " + ", ".join(sorted(list_agents()))
    cases = {
        "agents.bc.gama: unknown option; allowed: label,": {"gama": 1.0},
        "agents.bc.gamma: must be float, got 'x'": {"gamma": "x"},
        "agents.bc.gamma: must be > 0, got -1.0": {"gamma": -1},
        "agents.bc.label: must be one of 'clicked', 'finished', got 'liked'": {"label": "liked"},
        "agents.bc.epochs: must be int or None, got True": {"epochs": True},
        "agents.bc.hidden: must be a list of int": {"hidden": [8, "x"]},
    }
    for prefix, overrides in cases.items():
        with pytest.raises(ValueError) as err:
            make_agent("bc", ctx, **overrides)
        assert str(err.value).startswith(prefix) and "\n" not in str(err.value), str(err.value)


def test_registry_coerces_toml_values(ctx):
    agent = make_agent("bc", ctx, hidden=[16, 8], gamma=5, epochs=None)
    tower = agent.config.tower
    assert tower.hidden == (16, 8) and tower.gamma == 5.0 and isinstance(tower.gamma, float) and agent.config.train.epochs is None


@pytest.mark.parametrize("name", sorted(list_agents()))
def test_every_flat_key_reaches_its_field(name):
    """Each override key (top level or inside an embedded group) lands in its field; the rest stays the preset."""
    preset = agent_spec(name).preset
    for key, (group, _) in flat_keys(agent_spec(name).config_cls).items():
        owner = preset if group is None else getattr(preset, group)
        value = getattr(owner, key)
        assert agent_config(name, {key: value}) == preset, key  # the preset's own value: nothing changes


def test_variants_are_presets_of_one_class(ctx):
    """An ablation is its method's class with another preset; overrides apply on top of the preset."""
    assert type(make_agent("kd+b", ctx)) is type(make_agent("kd", ctx))
    assert agent_config("kd+b").b_per_request == 20 and agent_config("kd").b_per_request == 0
    assert agent_config("kd+b", {"b_per_request": 5, "hidden": [8]}).b_per_request == 5
    assert agent_config("damcar-no-tdg", {"radius": 3}).target.sampler == "uniform"
    assert make_agent("kd+b", ctx).name == "kd+b"  # the name seeds the agent's random streams
    assert agent_config("ss-a").negatives.spaces == ("A",) and agent_config("youtube-dnn-softmax").negatives.loss == "softmax"


@dataclasses.dataclass(frozen=True)
class _Group:
    lr: float = 1.0


@dataclasses.dataclass(frozen=True)
class _Clash:
    lr: float = 1.0
    group: _Group = _Group()


def test_ambiguous_flat_key_is_refused():
    with pytest.raises(TypeError, match="ambiguous"):
        flat_keys(_Clash)


def test_backbone_imports_no_method():
    """agents/backbone/ is self-contained: no import of agents.<method> (only agents.backbone.*)."""
    for path in (AGENTS_DIR / "backbone").glob("*.py"):
        for mod in _imported_modules(ast.parse(path.read_text())):
            if mod.startswith("agents"):
                assert mod.startswith("agents.backbone"), f"{path.name} imports {mod}"


# --- import barrier --------------------------------------------------------------------------------

ALLOWED_SIMULATOR = {
    "simulator.types", "simulator.config", "simulator.rng", "simulator.nn",
    "simulator.log.view", "simulator.log.schema", "simulator.agent_api",
    "simulator.cascade.ranker_models",  # the click models on observable features: the distilling agents' own teacher
}  # fmt: skip
FORBIDDEN = ("simulator.world", "simulator.metrics", "simulator.log.store", "simulator.oracle")


def _imported_modules(tree: ast.AST) -> list[str]:
    mods = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods += [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "simulator"]
    return mods


def test_agents_do_not_import_truth_or_private_modules():
    files = sorted(AGENTS_DIR.rglob("*.py"))
    assert files
    for path in files:
        for mod in _imported_modules(ast.parse(path.read_text())):
            where = f"{path.relative_to(AGENTS_DIR.parent)} imports {mod}"
            assert not mod.startswith(FORBIDDEN), where
            if mod.startswith("simulator.") and mod.count(".") >= 1:
                assert mod in ALLOWED_SIMULATOR, where
            assert mod != "simulator.log", where


def test_minibatches_never_end_with_a_single_example():
    """BatchNorm cannot train on one example: a trailing singleton joins the previous minibatch."""
    from simulator.nn import minibatches

    gen = torch.Generator().manual_seed(0)
    sizes = [b.numel() for b in minibatches(129, 64, gen, torch.device("cpu"))]
    assert sizes == [64, 65]
    batches = minibatches(130, 64, gen, torch.device("cpu"))
    assert [b.numel() for b in batches] == [64, 64, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(130))
    assert [b.numel() for b in minibatches(1, 64, gen, torch.device("cpu"))] == [1]
