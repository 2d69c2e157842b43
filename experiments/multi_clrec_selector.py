"""Multi-CLRec's intent selector in a closed loop: does it collapse onto one intent, does it carry the true intent?

Runs one ``multi-clrec`` loop of a scenario (default ``weekend-shift`` with the page's tuned lr / rho) and prints, per
round, over that round's training window: the share of requests on the most-selected intent ``h*``, the share of
clicked targets on the most-used routed intent ``h+``, NMI(h*, true intent), NMI(h+, true intent), how often ``h*``
equals the target's ``h+``, and the same for the history-majority rule (the intent most of the history is routed to),
a selector that needs no training. The true intent of a request comes from the simulator's truth log::

    python experiments/multi_clrec_selector.py --seed 0 --rounds 12                     # the default (L_sel on)
    python experiments/multi_clrec_selector.py --seed 0 --rounds 12 --set lambda_select=0  # the paper's ST-only selector
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TUNED = {"lr": 0.01149900906436986, "rho": 0.08995713371512858}
"""experiments/clrec-tuned.toml's multi-clrec values (the weekend sweep's)."""


def nmi(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised mutual information (arithmetic-mean normalisation) of two label vectors; 0 when both are constant."""
    _, a = a.unique(return_inverse=True)
    _, b = b.unique(return_inverse=True)
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)
    ent = lambda q: float(-(q[q > 0] * q[q > 0].log()).sum())  # noqa: E731
    nz = p > 0
    mi = float((p[nz] * (p[nz] / (pa.unsqueeze(1) * pb.unsqueeze(0))[nz]).log()).sum())
    den = 0.5 * (ent(pa) + ent(pb))
    return mi / den if den > 0 else 0.0


def share(x: torch.Tensor) -> float:
    return float(torch.bincount(x).max()) / len(x) if len(x) else float("nan")


def round_stats(agent, view, truth: dict[int, int]) -> dict[str, float]:
    """The selector's statistics over one training window (see the module doc)."""
    from agents.backbone.two_tower import evaluating

    cat, imp = view.catalogue, view.impressions
    with evaluating(agent.model), torch.no_grad():
        out = agent.model.intents(view.requests, cat)
        rows, items = imp.row[imp.clicked], imp.item_id[imp.clicked]
        h_plus = agent.model.item_routing(cat, items).argmax(-1)
    hr = out["history_routing"].argmax(-1)
    majority = (torch.nn.functional.one_hot(hr, agent.config.intents) * out["valid"].unsqueeze(-1)).sum(1).argmax(-1)
    true = torch.tensor([truth.get(int(i), -1) for i in view.requests.request_id])
    known, known_t = true >= 0, true[rows] >= 0
    h_star = out["h_star"]
    return {
        "selected_share": share(h_star), "routed_share": share(h_plus),
        "nmi_selected_true": nmi(h_star[known], true[known]), "nmi_routed_true": nmi(h_plus[known_t], true[rows][known_t]),
        "selected_is_routed": float((h_star[rows] == h_plus).float().mean()),
        "majority_is_routed": float((majority[rows] == h_plus).float().mean()),
        "empty_histories": float((~out["valid"]).all(1).float().mean()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="weekend-shift")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--set", action="append", default=[], help="a multi-clrec override KEY=VALUE (Python literal), repeatable")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.exit(2, "error: --rounds: must be >= 1\n")
    overrides = dict(TUNED)
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            ap.exit(2, f"error: --set: {item!r} is not KEY=<Python literal>\n")
    torch.set_num_threads(1)
    from scenarios.experiment import agent_factory
    from scenarios.presets import load_scenario
    from simulator.round import attach_agent, training_view
    from simulator.timeline import run_round, warm_started_loop

    try:
        sc = load_scenario(args.scenario)
        sc = sc.model_copy(update={"agents": {**sc.agents, "multi-clrec": overrides}})
        loop = warm_started_loop(sc, args.seed)
        attach_agent(loop, agent_factory("multi-clrec", sc, args.seed, torch.device("cpu")), "multi-clrec")
    except (ValueError, KeyError) as err:
        ap.exit(2, f"error: {' '.join(str(err).split())}\n")
    truth: dict[int, int] = {}
    for r in range(min(args.rounds, sc.timeline.rounds)):
        run_round(loop, r)
        tr = loop.truth.concat("truth_requests", r, r)
        truth.update(zip(tr["request_id"].tolist(), tr["intent"].tolist(), strict=True))
        stats = round_stats(loop.learner, training_view(loop, r), truth)
        print(json.dumps({"round": r, **{k: round(v, 3) for k, v in stats.items()}}), flush=True)


if __name__ == "__main__":
    main()
