"""The three sanity checks of algorithms.md §13(f) on the toy world (clicks = p*·m(pos)·k(pop)), for the CP2Rec page.

For each seed: ``bc``, ``cp2rec`` (served at γ = 0, 0.5 and 1 from one trained state), ``cp2rec-no-orth`` and
``cp2rec-cos`` are fitted twice on the toy world of ``tests/cp2rec_world.py``; the script records the leakage
probe (``probe_r2``, exposure-weighted, cross-fitted), the mean per-user Kendall-τ between the serving score
and p* (120 random items per user) and the observed-click AUC of the serving score on the logged exposures.
Writes ``docs/results/cp2rec-toy.json``, which ``experiments/cp2rec_study.py`` turns into a table::

    OMP_NUM_THREADS=1 .venv/bin/python experiments/cp2rec_toy_checks.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import make_agent  # noqa: E402
from tests.agent_fixtures import auc  # noqa: E402
from tests.cp2rec_world import tw_view  # noqa: E402

OUT = ROOT / "docs" / "results" / "cp2rec-toy.json"


def kendall(scores: torch.Tensor, truth: torch.Tensor, n_items: int = 120) -> float:
    """Mean over rows of Kendall's τ between ``scores`` and ``truth`` on ``n_items`` fixed random columns."""
    idx = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(0))[:n_items]
    a, b = scores[:, idx], truth[:, idx]
    sa, sb = (a.unsqueeze(2) - a.unsqueeze(1)).sign(), (b.unsqueeze(2) - b.unsqueeze(1)).sign()
    return float((sa * sb).sum((1, 2)).div(n_items * (n_items - 1)).mean())


def one_seed(seed: int) -> list[dict]:
    ctx, view, pstar = tw_view(seed)
    trained = {}
    for name in ("bc", "cp2rec", "cp2rec-no-orth", "cp2rec-cos"):
        agent = make_agent(name, ctx)
        for _ in range(2):
            info = agent.fit(view)
        trained[name] = (agent, info.get("probe_r2", float("nan")))
    served = {"bc": trained["bc"][0], "cp2rec γ=0.5": trained["cp2rec"][0]}
    for name, label in (("cp2rec-g0", "cp2rec γ=0"), ("cp2rec-g1", "cp2rec γ=1")):
        served[label] = make_agent(name, ctx)
        served[label].load_state_dict(trained["cp2rec"][0].state_dict())
    first = torch.stack([(view.requests.user_id == u).nonzero()[0, 0] for u in view.requests.user_id.unique()])
    req = view.requests.select(first)
    imp = view.impressions
    rows = [{"seed": seed, "model": n, "probe_r2": trained[n][1]} for n in ("cp2rec", "cp2rec-no-orth", "cp2rec-cos")]
    for label, agent in served.items():
        agent.index(view.catalogue)
        scores = agent.score(req, torch.arange(ctx.n_items).expand(len(req), -1))
        obs = agent.score(view.requests.select(imp.row), imp.item_id.unsqueeze(1)).squeeze(1)
        rows.append({"seed": seed, "model": label, "kendall_tau": kendall(scores, pstar[req.user_id]), "click_auc": auc(obs, imp.clicked)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [r for s in range(args.seeds) for r in one_seed(s)]
    OUT.write_text(json.dumps({"command": "python experiments/cp2rec_toy_checks.py " + " ".join(sys.argv[1:]), "rows": rows}, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
