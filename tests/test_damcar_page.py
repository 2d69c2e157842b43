"""The DAMCAR page (``experiments/damcar_page.py``) on a hand-built sweep directory: numbers, Holm, verdicts, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import damcar_page as P  # noqa: E402
import damcar_page_text as T  # noqa: E402

SEEDS, ROUNDS, WINDOW = 5, 6, 3
HEAD = "true_recall@20"
# per-seed gains over bc, constant over rounds: the paired differences of the headline are these exactly
GAIN = {"damcar": [0.03, 0.04, 0.02, 0.05, 0.03], "kd": [-0.05, -0.06, -0.04, -0.05, -0.07], "muda": [0.05, 0.0, 0.04, 0.0, 0.03]}
METRICS = (HEAD, "true_recall@10", "ranked_true_ndcg@5", "logged_ctr", "logged_finish_rate", "slate_utility")


def results() -> pd.DataFrame:
    rows, rng = [], np.random.default_rng(0)
    for seed in range(SEEDS):
        world = rng.normal(0.1, 0.02)  # a seed's world moves every agent together (common random numbers)
        levels = {"oracle": 1.0, "random": 0.01, "popular": world / 2, "bc": world, **{a: world + g[seed] for a, g in GAIN.items()}}
        for agent, value in levels.items():
            for rnd in range(ROUNDS):
                early = -0.05 if rnd < ROUNDS - WINDOW else 0.0  # outside the averaged window: must not count
                for metric in METRICS:
                    rows.append({"scenario": "damcar-testbed", "agent": agent, "seed": seed, "round": rnd, "metric": metric,
                                 "value": value + early, "cell": f"{agent}-{seed}"})  # fmt: skip
            if agent == "damcar":
                rows += [{"scenario": "damcar-testbed", "agent": agent, "seed": seed, "round": r, "metric": m, "value": v,
                          "cell": f"{agent}-{seed}"} for r in range(ROUNDS)
                         for m, v in (("fit_domain_accuracy", 0.6), ("fit_domain_loss", 1.2), ("fit_target_share", 0.03))]  # fmt: skip
    return pd.DataFrame(rows)


def make_sweep(tmp: Path, frame: pd.DataFrame) -> Path:
    """A sweep directory as ``cascadesim sweep`` leaves it: manifest, merged results, cells and one part per cell."""
    from scenarios.presets import load_scenario
    from scenarios.sweep.cells import Cell, write_part

    sweep = tmp / "sweep"
    scenario = load_scenario("damcar-testbed").with_overrides(cascade={"k_retrieve": 20, "slate_size": 5},
                                                              metrics={"k_values": [10, 20], "rank_k_values": [5]})  # fmt: skip
    data = scenario.model_dump(mode="json")
    cells = []
    for (agent, seed), part in frame.groupby(["agent", "seed"]):
        cell = Cell(data, str(agent), str(agent), int(seed), "cpu", 1)
        write_part(part.drop(columns=["cell", "scenario"]), cell, sweep, 2.0)
        cells.append({"cell": cell.key, "agent": agent, "seed": seed, "status": "done", "wall_s": 2.0, "headline": 0.1, "error": ""})
    frame.to_parquet(sweep / "results.parquet", index=False)
    pd.DataFrame(cells).to_parquet(sweep / "cells.parquet", index=False)
    spec = {"sweep": {"scenario": "damcar-testbed", "metric": HEAD, "seeds": SEEDS}, "base": {}, "agents": sorted(set(frame.agent))}
    (sweep / "sweep.json").write_text(json.dumps({"metric": HEAD, "name": "damcar", "spec": spec, "threads": 1, "fields": []}))
    return sweep


def make_tune(tmp: Path) -> Path:
    tune = tmp / "tune"
    tune.mkdir()
    record = {"budget_trials_per_agent": 2, "sampler": "TPE(seed=0)", "metric": HEAD, "last_rounds": 3, "validation_seeds": [1000],
              "test_seeds": list(range(10)), "space": {"bc": ["lr: float [0.003, 0.05] log"]}, "fixed": {"bc": {"label": "finished"}},
              "best": {"bc": {"value": 0.1, "params": {"lr": 0.01}}}}  # fmt: skip
    (tune / "tune.json").write_text(json.dumps(record))
    pd.DataFrame({"agent": ["bc", "bc"], "trial": [0, 1], "value": [0.1, 0.09], "params": ["{}", "{}"], "cells": ["a", "b"]}).to_parquet(
        tune / "trials.parquet", index=False
    )
    return tune


def run_page(tmp: Path, frame: pd.DataFrame | None = None) -> Path:
    out = tmp / "docs"
    P.main([str(make_sweep(tmp, results() if frame is None else frame)), "--tune", str(make_tune(tmp)), "--window", str(WINDOW),
            "--out-dir", str(out)])  # fmt: skip
    return out


def test_paired_differences_are_the_per_seed_gains_over_the_last_rounds():
    avg = T.time_average(results(), WINDOW)
    assert T.paired(avg, "damcar", "bc", HEAD) == pytest.approx(GAIN["damcar"])
    comp = T.comparisons(avg, T.tests_of(["bc", "kd", "muda", "damcar"], HEAD, "ranked_true_ndcg@5"), HEAD)
    row = comp[(comp.a == "damcar") & (comp.b == "bc") & (comp.metric == HEAD)].iloc[0]
    d = np.array(GAIN["damcar"])
    assert row["diff"] == pytest.approx(d.mean()) and row.sd == pytest.approx(d.std(ddof=1))
    assert row.half == pytest.approx(2.776 * d.std(ddof=1) / np.sqrt(SEEDS), rel=1e-3)  # t_{.975, 4} = 2.776
    assert row.effect == pytest.approx(d.mean() / 0.99)  # the oracle - random gap is 1.0 - 0.01
    assert T.mde(row.sd, int(row.needed)) <= abs(row["diff"]) < T.mde(row.sd, int(row.needed) - 1)


def test_holm_runs_over_every_test_of_the_page_and_sets_the_verdicts():
    avg = T.time_average(results(), WINDOW)
    comp = T.comparisons(avg, T.tests_of(["bc", "kd", "muda", "damcar"], HEAD, "ranked_true_ndcg@5"), HEAD)
    finite = comp.p[np.isfinite(comp.p)]
    assert comp.holm.min() == pytest.approx(min(1.0, len(finite) * finite.min()))
    assert T.claim_verdict(comp, "i", True) == "**reproduced**"  # damcar > bc on both metrics, every seed
    assert T.claim_verdict(comp, "ii", True) == "**undecided at this power**"  # damcar - muda: +0.01 on average, noisy
    flipped = comp.assign(diff=-comp["diff"])
    assert T.claim_verdict(flipped, "i", False).startswith("**not reproduced**")


def test_page_is_written_and_its_numbers_are_read_from_its_parquet(tmp_path: Path):
    out = run_page(tmp_path)
    page = (out / "damcar.md").read_text()
    stored = pd.read_parquet(out / "damcar.parquet")
    avg = T.time_average(stored, WINDOW)
    d = T.paired(avg, "damcar", "bc", HEAD)
    _, half, _ = T.interval(d.tolist())
    line = next(x for x in page.splitlines() if x.startswith(f"| `damcar` − `bc` | {HEAD} |"))
    assert f"+{d.mean():.4f} ± {half:.4f}" in line and "higher (Holm)" in line
    assert "Closed-loop verdict: **reproduced**" in page and "2 trials per agent" in page
    assert (out / "damcar-rounds.svg").read_text().startswith("<svg") and json.loads((out / "damcar.json").read_text())["window"] == WINDOW
    assert set(stored.metric) >= set(METRICS) and "cell" not in stored


def test_page_regenerates_from_its_parquet(tmp_path: Path):
    out = run_page(tmp_path)
    first = (out / "damcar.md").read_text()
    P.main(["--from-parquet", str(out / "damcar.parquet"), "--out-dir", str(out)])
    again = (out / "damcar.md").read_text()
    strip = [x for x in first.splitlines() if "damcar_page.py" not in x]
    assert strip == [x for x in again.splitlines() if "damcar_page.py" not in x]


@pytest.mark.parametrize("case", ["missing directory", "missing metric", "missing agent"])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str):
    out = tmp_path / "docs"
    if case == "missing directory":
        argv = [str(tmp_path / "nope"), "--out-dir", str(out)]
    else:
        frame = results()
        frame = frame[frame.metric != "logged_ctr"] if case == "missing metric" else frame[frame.agent != "random"]
        argv = [str(make_sweep(tmp_path, frame)), "--out-dir", str(out), "--window", str(WINDOW)]
    with pytest.raises(SystemExit) as exc:
        P.main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert {"missing directory": "no such directory", "missing metric": "'logged_ctr'", "missing agent": "'random'"}[case] in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", ["damcar-full.toml", "damcar.toml"])
def test_sweep_specs_expand_to_the_designed_cells(tmp_path: Path, name: str):
    """Both specs load (the full one with the committed reduced tuning in place of its not-yet-run tune) and meet the standard."""
    from scenarios.sweep import load_spec

    text = (ROOT / "experiments" / name).read_text()
    text = text.replace('"../runs/damcar-tune-full/best.toml"', json.dumps(str(ROOT / "experiments" / "damcar-tuned.toml")))
    if not (ROOT / "experiments" / "damcar-tuned.toml").exists():
        pytest.skip("experiments/damcar-tuned.toml is written by the reduced tune")
    (tmp_path / name).write_text(
        text.replace('agents_from = "damcar-tuned.toml"', f"agents_from = {json.dumps(str(ROOT / 'experiments' / 'damcar-tuned.toml'))}")
    )
    spec = load_spec(tmp_path / name)
    sc = spec.scenarios[0]
    assert len(spec.cells(1)) == 10 * 10 and len(spec.seeds) >= 10 and sc.timeline.rounds >= (20 if "full" in name else 1)
    assert sc.world.n_items >= 100 * sc.cascade.k_retrieve and max(sc.metrics.k_values) <= 2 * sc.cascade.k_retrieve
    assert {"oracle", "random", "popular", "bc", "damcar"} <= {a.label for a in spec.agents}
    assert all(a.overrides.get("label") == "finished" for a in spec.agents if a.agent not in ("oracle", "random", "popular"))


def test_tune_specs_give_every_agent_the_same_budget_on_seeds_disjoint_from_the_test_seeds():
    from scenarios.tune import load_tune_spec

    full, reduced = (load_tune_spec(ROOT / "experiments" / n) for n in ("damcar-tune.toml", "damcar-tune-reduced.toml"))
    for spec in (full, reduced):
        assert not set(spec.validation_seeds) & set(range(10)) and all(a.fixed["label"] == "finished" for a in spec.agents)
        assert 1 <= min(len(a.space) for a in spec.agents) and max(len(a.space) for a in spec.agents) <= 3
    assert [(a.name, a.space) for a in full.agents] == [(a.name, a.space) for a in reduced.agents]  # the same search space


def test_seeds_needed_is_undefined_without_a_spread_and_infinite_without_an_effect():
    assert np.isnan(T.seeds_needed(float("nan"), 0.1)) and T.seeds_needed(0.1, 0.0) == float("inf")
    assert T.mde(0.02, int(T.seeds_needed(0.02, 0.01))) <= 0.01  # hand check: (2.0 + 0.85) * 0.02 / sqrt(n) <= 0.01 near n = 33
    assert 30 <= T.seeds_needed(0.02, 0.01) <= 36


def test_a_damcar_variant_whose_adversary_does_not_act_is_marked_not_working(tmp_path: Path):
    frame = results()
    twin = frame[frame.agent == "damcar"].assign(agent="damcar-linear-psi")
    twin.loc[twin.metric == "fit_domain_accuracy", "value"] = 0.99  # the classifier wins: alignment failed
    out = run_page(tmp_path, pd.concat([frame, twin], ignore_index=True))
    page = (out / "damcar.md").read_text()
    assert "`damcar-linear-psi`: domain accuracy 0.990" in page and "does NOT act" in page
    line = next(x for x in page.splitlines() if x.startswith("| `damcar-linear-psi` − `bc` |"))
    assert "`damcar-linear-psi` not working" in line
