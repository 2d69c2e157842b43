"""The regime page (``experiments/regimes_page.py``): its paired statistics and tables on hand-built sweep rows."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import regimes_page as R  # noqa: E402

BASE = {"world.n_items": 1000, "world.conformity_mean": 0.1, "user_model.position_bias": 0.7, "cascade.exploration_share": 0.0}
POINTS = [BASE, {**BASE, "world.n_items": 2000}, {**BASE, "world.conformity_mean": 0.4}]
SEEDS, ROUNDS = 4, 5
# per-seed offsets of ipw over bc at each point, constant over rounds: the paired differences are these exactly
IPW_GAIN = {0: [0.0, 0.01, -0.01, 0.0], 1: [0.05, 0.06, 0.04, 0.05], 2: [-0.02, -0.03, -0.02, -0.01]}


def frame() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for p, point in enumerate(POINTS):
        for seed in range(SEEDS):
            world = rng.normal(0.1, 0.02)  # a seed's world moves every agent together (common random numbers)
            levels = {"bc": world, "ipw": world + IPW_GAIN[p][seed], "oracle": 1.0, "random": 0.01, "popular": world / 2}
            for agent, value in levels.items():
                for rnd in range(ROUNDS):
                    early = -0.05 if rnd < ROUNDS - 3 else 0.0  # outside the window: must not count
                    for metric in ("true_recall@10", "logged_ctr", "logged_finish_rate", "slate_utility"):
                        rows.append({"point": p, **point, "scenario": "s", "agent": agent, "seed": seed, "round": rnd,
                                     "metric": metric, "value": value + early})  # fmt: skip
    return pd.DataFrame(rows)


def test_paired_difference_is_the_per_seed_gap_over_the_last_rounds():
    avg = R.time_average(frame(), 3)
    assert R.paired(avg, 1, "ipw", "true_recall@10") == pytest.approx(IPW_GAIN[1])
    comp = R.comparisons(avg, ["ipw"], [0, 1, 2], "true_recall@10")
    row = comp[comp.point == 1].iloc[0]
    d = np.array(IPW_GAIN[1])
    assert row["diff"] == pytest.approx(0.05) and row.sd == pytest.approx(d.std(ddof=1))
    assert row.half == pytest.approx(3.182 * d.std(ddof=1) / 2, rel=1e-3)  # t_{.975, 3} = 3.182
    assert row.gap == pytest.approx(1.0 - 0.01)


def test_holm_adjusts_over_every_method_and_regime():
    comp = R.comparisons(R.time_average(frame(), 3), ["ipw"], [0, 1, 2], "true_recall@10")
    raw = sorted(comp.p)
    # three comparisons: the smallest p is multiplied by 3, the next by 2 (monotone), the largest by 1
    assert sorted(comp.holm)[0] == pytest.approx(min(1.0, 3 * raw[0]))
    assert sorted(comp.holm)[-1] == pytest.approx(max(min(1.0, raw[2]), sorted(comp.holm)[1]))
    verdicts = dict(zip(comp.point, (R.verdict(r) for _, r in comp.iterrows()), strict=True))
    assert verdicts[1] == "pays" and verdicts[0].startswith("tie")


def test_regimes_are_named_by_the_axis_they_move():
    f = frame()
    regs = R.regimes(f, list(BASE), BASE)
    assert [r.label for r in regs] == ["base", "catalogue size = 2000", "conformity = 0.4"]
    bad = f.copy()
    bad.loc[bad.point == 2, "world.n_items"] = 2000
    with pytest.raises(SystemExit, match="one axis at a time"):
        R.regimes(bad, list(BASE), BASE)


def test_page_reads_its_numbers_from_the_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(R, "write_figures", lambda figs, out, name: [])
    meta = {"command": "sweep", "page_command": "page", "commit": "abc", "page_commit": "abc", "machine": "m", "threads": 1,
            "wall_min": 1.0, "cells": 60, "cell_min": 2.0, "workers": 2, "spec_file": "regimes.toml",
            "spec": {"sweep": {"scenario": "uma2-testbed"}}, "n_seeds": SEEDS, "seeds": list(range(SEEDS)), "rounds": ROUNDS,
            "window": 3, "full_hours": 1.0, "base_scenario": {"n_users": 500, "n_items": 1000, "k_retrieve": 20, "slate_size": 5,
            "requests_per_round": 600, "ranker_noise": 0.3}}  # fmt: skip
    page = R.build(frame(), meta, tmp_path, None)
    row = next(line for line in page.splitlines() if line.startswith("| catalogue size = 2000 | `ipw` |"))
    d = np.array(IPW_GAIN[1])
    assert f"+0.050 ± {3.182 * d.std(ddof=1) / 2:.3f}" in row and "| pays |" in row
    assert "reduced run" in page and "pays in 1 of 3 regimes" in page and "criterion) in 1" in page
    assert not math.isnan(meta["points"][1]["world.conformity_mean"])


def test_axis_trend_is_the_paired_change_of_the_difference_along_the_axis():
    f = frame()
    avg = R.time_average(f, 3)
    regs = R.regimes(f, list(BASE), BASE)
    trends = R.axis_trends(avg, regs, BASE, ["ipw"], "true_recall@10")
    cat = trends[trends.axis == "world.n_items"].iloc[0]
    # catalogue axis: 1000 (base) -> 2000; per seed (Δ at 2000) - (Δ at base)
    expected = np.array(IPW_GAIN[1]) - np.array(IPW_GAIN[0])
    assert (cat.lo, cat.hi) == ("base", "catalogue size = 2000")
    assert cat["diff"] == pytest.approx(expected.mean()) and cat.n == SEEDS
    comp = R.comparisons(avg, ["ipw"], [0, 1, 2], "true_recall@10")
    joint_c, joint_t = R.joint_holm(comp, trends)
    family = np.isfinite(comp.p).sum() + np.isfinite(trends.p).sum()
    assert joint_c.holm.min() == pytest.approx(min(1.0, family * min(comp.p.min(), trends.p.min())))
    assert (joint_c.holm.to_numpy() >= comp.holm.to_numpy() - 1e-12).all()  # a larger family never adjusts less


@pytest.mark.parametrize("name", ["regimes.toml", "regimes-full.toml"])
def test_specs_load_and_move_one_axis_at_a_time(name: str):
    from scenarios.sweep import load_spec

    spec = load_spec(ROOT / "experiments" / name)
    base = spec.points[0]
    assert all(sum(p[f] != base[f] for f in base) <= 1 for p in spec.points)
    assert {f for p in spec.points for f in p if p[f] != base[f]} == set(R.AXES)
    assert all(sc.metrics.k_values == (10,) and sc.cascade.k_retrieve == 20 for sc in spec.scenarios)  # K below K_r
    if name == "regimes-full.toml":  # the power standard of studies.md §3
        assert len(spec.seeds) >= 10 and all(sc.timeline.rounds >= 20 for sc in spec.scenarios)
        assert all(sc.world.n_items >= 100 * sc.cascade.k_retrieve for sc in spec.scenarios)
