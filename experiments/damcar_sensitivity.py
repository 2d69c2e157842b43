"""DAMCAR's sensitivity to the walk length and the label path, offline on the warm-start logs (issue 13 item 3).

For each seed, the ``damcar-testbed`` world after its warm start gives one training view; each cell (walk mode,
radius R, walks/hops H, label path) fits a fresh DAMCAR on it ``--fits`` times (the preset's pretraining is 2)
and records, beside the fit's own diagnostics, what only the simulator knows: the mean true relevance of the
target domain ``S_sam`` and of as many uniform never-exposed pairs, the rank correlation of the target
pseudo-labels ``ŷ^t`` with the true relevance, and the retriever's true recall@100 on the users' latest requests.
The closed loop is not run (2 shared cores could not afford it); the page says so.

    .venv/bin/python experiments/damcar_sensitivity.py [--seeds 3] [--fits 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import make_agent  # noqa: E402
from agents.backbone.random_walk import uniform_unexposed  # noqa: E402
from agents.backbone.unexposed import exposed_keys, latest_rows, target_domain  # noqa: E402
from scenarios.experiment import warm_started_loop  # noqa: E402
from scenarios.presets import load_scenario  # noqa: E402
from simulator.agent_api import AgentContext  # noqa: E402
from simulator.round import training_view  # noqa: E402
from simulator.world.relevance import true_relevance, true_relevance_all  # noqa: E402

CELLS = {
    "walk code R25 H50, path paper [default]": {},
    "walk code R25 H50, path code": {"label_path": "code"},
    "walk paper R25 H50, path paper": {"walk_mode": "paper"},
    "walk paper R25 H50, path code": {"walk_mode": "paper", "label_path": "code"},
    "walk code R11 H50, path paper": {"radius": 11},
    "walk code R25 H10, path paper": {"visits": 10},
}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (ties broken by position; NaN below 3 pairs)."""
    if len(a) < 3:
        return float("nan")
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def truth_of(loop, view, tgt) -> tuple[dict[str, float], torch.Tensor]:
    """Mean true relevance of S_sam and of uniform never-exposed pairs with the same per-user counts."""
    users = view.requests.user_id[tgt.row]
    rel = true_relevance(loop.world, loop.sc, users, tgt.item_ids.unsqueeze(1)).squeeze(1)
    per_user = torch.bincount(users, minlength=view.n_users)
    uu, ui = uniform_unexposed(per_user, exposed_keys(view), view.catalogue.live, torch.Generator().manual_seed(0))
    rel_u = true_relevance(loop.world, loop.sc, uu, ui.unsqueeze(1)).squeeze(1)
    return {"true_rel_target": float(rel.mean()), "true_rel_uniform": float(rel_u.mean())}, rel


def true_recall(loop, view, agent, k: int = 100) -> float:
    """Mean over the window's users of |retrieved top-k ∩ true top-k| / k, each user at its latest request."""
    rows = latest_rows(view)
    rows = rows[rows >= 0]
    requests = view.requests.select(rows)
    agent.index(view.catalogue)
    got, _ = agent.retrieve(requests, k)
    truth = true_relevance_all(loop.world, loop.sc, requests.user_id).topk(k, dim=1).indices
    hits = (got.unsqueeze(2) == truth.unsqueeze(1)).any(2).float().sum(1) / k
    return float(hits.mean())


def run_cell(loop, view, sc, seed: int, overrides: dict, fits: int) -> dict[str, float]:
    base = {k: v for k, v in sc.agents.get("damcar", {}).items()}
    agent = make_agent("damcar", AgentContext.from_scenario(sc, seed), **{**base, **overrides})
    for _ in range(fits):
        info = agent.fit(view)
    gen = torch.Generator().manual_seed(0)
    tgt, _ = target_domain(view, agent.config.target, gen, torch.device("cpu"))
    truth, rel = truth_of(loop, view, tgt)
    _, y_tgt = agent._pseudo_labels(*_pairs(view, tgt, agent), view.catalogue)
    return {**{f"fit_{k}": v for k, v in info.items()}, **truth, "pseudo_label_truth_spearman": spearman(y_tgt, rel),
            "true_recall@100": true_recall(loop, view, agent)}  # fmt: skip


def _pairs(view, tgt, agent):
    from agents.backbone.training import exposure_data

    return exposure_data(view, agent.config.label, torch.device("cpu")), tgt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fits", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "damcar-sensitivity.parquet"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sc = load_scenario("damcar-testbed")
    rows = []
    for seed in range(args.seeds):
        loop = warm_started_loop(sc, seed)
        view = training_view(loop, -1)
        for cell, overrides in CELLS.items():
            values = run_cell(loop, view, sc, seed, overrides, args.fits)
            rows += [
                {"cell": cell, "agent": "damcar", "seed": seed, "round": -1, "metric": k, "value": float(v)} for k, v in values.items()
            ]
            print(seed, cell, {k: round(values[k], 3) for k in ("fit_target_pairs", "fit_domain_accuracy", "true_recall@100")}, flush=True)
    pd.DataFrame(rows).to_parquet(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
