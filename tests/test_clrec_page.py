"""The CLRec page (``experiments/clrec.py``): hand-built sweep tables in, paired statistics and a page out."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import clrec as C  # noqa: E402
import clrec_text as T  # noqa: E402
from offline_evaluation_page import mde  # noqa: E402

SEEDS = 4
LONG_ROUNDS, WEEK_ROUNDS, WINDOW = 12, 14, 3
# per-seed gain of clrec-queue over sampled-softmax-logq in aggregate diversity, constant over the averaged rounds
DIVERSITY_GAIN = [100.0, 120.0, 90.0, 110.0]
# per-seed weekend bump (weekend-test day minus weekday-test days) of each agent's HitRate@50
WEEKEND_BUMP = {"clrec-queue": [0.0, 0.01, -0.01, 0.0], "multi-clrec": [0.03, 0.05, 0.04, 0.04]}
LEVEL = {"oracle": 0.9, "random": 0.1, "popular": 0.3, "bc": 0.4, "sampled-softmax-logq": 0.5, "clrec-queue": 0.5, "multi-clrec": 0.5}


def long_rows() -> list[dict]:
    rows, rng = [], np.random.default_rng(0)
    for seed in range(SEEDS):
        world = rng.normal(0.0, 0.05)  # common random numbers: a seed moves every agent together
        for agent in ("oracle", "random", "popular", "bc", "sampled-softmax-logq", "clrec-queue"):
            for rnd in range(LONG_ROUNDS):
                early = 50.0 if rnd < LONG_ROUNDS - WINDOW else 0.0  # outside the window: must not count
                for metric in C.LONG_METRICS:
                    value = LEVEL[agent] + world
                    if metric == "aggregate_diversity":
                        value = 400.0 + 100 * world + early + (DIVERSITY_GAIN[seed] if agent == "clrec-queue" else 0.0)
                    rows.append({"scenario": "clrec-testbed", "agent": agent, "seed": seed, "round": rnd, "metric": metric,
                                 "value": value, "cell": f"{agent}-{seed}"})  # fmt: skip
    return rows


def week_rows() -> list[dict]:
    rows = []
    for seed in range(SEEDS):
        for agent in ("oracle", "random", "popular", "bc", "clrec-queue", "multi-clrec"):
            for rnd in range(WEEK_ROUNDS):
                bump = WEEKEND_BUMP.get(agent, [0.0] * SEEDS)[seed] if rnd % 7 == 5 else 0.0
                burn = 0.2 if rnd < 7 else 0.0  # week 0 is burn-in: must not count
                for metric in C.WEEK_METRICS:
                    rows.append({"scenario": "weekend-shift", "agent": agent, "seed": seed, "round": rnd, "metric": metric,
                                 "value": LEVEL[agent] + 0.01 * seed + bump + burn, "cell": f"{agent}-{seed}"})  # fmt: skip
    return rows


def write_sweep(path: Path, rows: list[dict], name: str, scenario: str) -> Path:
    path.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(path / "results.parquet", index=False)
    (path / "sweep.json").write_text(json.dumps({"name": name, "threads": 1, "spec": {"sweep": {"scenario": scenario}, "base": {}}}))
    return path


@pytest.fixture()
def sweeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    monkeypatch.setattr(T, "write_figures", lambda figs, out, name: [])  # no Chromium in a unit test
    long = write_sweep(tmp_path / "long", long_rows(), "clrec", "clrec-testbed")
    week = write_sweep(tmp_path / "weekend", week_rows(), "clrec-weekend", "weekend-shift")
    return long, week, tmp_path / "docs"


def run_page(long: Path, week: Path, out: Path, *extra: str) -> None:
    C.main([str(long), str(week), "--window", str(WINDOW), "--out-dir", str(out), *extra])


def test_page_numbers_are_the_hand_computed_paired_differences(sweeps):
    long, week, out = sweeps
    run_page(long, week, out)
    page = (out / "clrec.md").read_text()
    d = np.array(DIVERSITY_GAIN)
    half = 3.182446 * d.std(ddof=1) / 2  # t_{.975, 3} = 3.182446
    row = next(line for line in page.splitlines() if line.startswith("| aggregate_diversity | last |"))
    assert f"+105.0000 ± {half:.4f}" in row
    b = np.array(WEEKEND_BUMP["multi-clrec"]) - np.array(WEEKEND_BUMP["clrec-queue"])
    row = next(
        line for line in page.splitlines() if line.startswith("| onpolicy_replay_hitrate@50 | change | `multi-clrec` - `clrec-queue`")
    )
    assert f"{b.mean():+.4f} ± {3.182446 * b.std(ddof=1) / 2:.4f}" in row
    assert "| Table 1: aggregate diversity |" in page and "**reproduced**" in page


def test_page_numbers_equal_those_recomputed_from_its_parquet(sweeps):
    long, week, out = sweeps
    run_page(long, week, out)
    frame = pd.read_parquet(out / "clrec.parquet")
    last = frame[(frame.part == "long") & (frame["round"] >= LONG_ROUNDS - WINDOW) & (frame.metric == "aggregate_diversity")]
    per_seed = last.groupby(["agent", "seed"]).value.mean().unstack("agent")
    d = per_seed["clrec-queue"] - per_seed["sampled-softmax-logq"]
    comp = C.compare(C.summaries(frame, WINDOW))
    row = comp[(comp.metric == "aggregate_diversity") & (comp.part == "long")].iloc[0]
    assert row["diff"] == pytest.approx(d.mean()) and row.sd == pytest.approx(d.std(ddof=1)) and row.n == SEEDS
    assert row.holm >= row.p and comp.holm.max() <= 1.0
    regen = out / "again"
    C.main(["--from-parquet", str(out / "clrec.parquet"), "--out-dir", str(regen)])
    strip = lambda text: [line for line in text.splitlines() if "Commit:" not in line and not line.startswith("    python")]  # noqa: E731
    assert strip((regen / "clrec.md").read_text()) == strip((out / "clrec.md").read_text())


def test_seeds_needed_is_the_first_count_whose_mde_reaches_the_difference():
    n = int(C.seeds_needed(0.5, 1.0))
    assert mde(1.0, n) <= 0.5 < mde(1.0, n - 1)
    assert np.isnan(C.seeds_needed(0.0, 1.0))


def test_weekend_summaries_skip_the_burn_in_week():
    frame = pd.DataFrame(week_rows()).assign(part="weekend")
    summ = C.summaries(frame, WINDOW)
    change = C.values(summ, "weekend", "change", "onpolicy_replay_hitrate@50", "multi-clrec")
    assert change.to_numpy() == pytest.approx(WEEKEND_BUMP["multi-clrec"])
    weekday = C.values(summ, "weekend", "weekday", "onpolicy_replay_hitrate@50", "bc")
    assert weekday.to_numpy() == pytest.approx([0.4 + 0.01 * s for s in range(SEEDS)])  # the burn-in +0.2 is left out


def test_reuse_long_keeps_the_stored_long_part_and_tune_and_takes_a_new_weekend_sweep(sweeps, tmp_path: Path):
    long, week, out = sweeps
    run_page(long, week, out)
    first = pd.read_parquet(out / "clrec.parquet")
    rows = [{**r, "value": r["value"] + (0.02 if r["agent"] == "multi-clrec" else 0.0)} for r in week_rows()]
    new_week = write_sweep(tmp_path / "weekend2", rows, "clrec-weekend", "weekend-shift")
    again = tmp_path / "docs2"
    C.main([str(new_week), "--reuse-long", str(out / "clrec.parquet"), "--window", str(WINDOW), "--out-dir", str(again)])
    second = pd.read_parquet(again / "clrec.parquet")
    pd.testing.assert_frame_equal(second[second.part == "long"].reset_index(drop=True), first[first.part == "long"].reset_index(drop=True))
    gained = lambda f: f[(f.part == "weekend") & (f.agent == "multi-clrec")].value.to_numpy()  # noqa: E731
    assert gained(second) == pytest.approx(gained(first) + 0.02)
    meta, meta0 = json.loads((again / "clrec.json").read_text()), json.loads((out / "clrec.json").read_text())
    assert meta["long"] == meta0["long"] and meta["tune"] == meta0["tune"] and meta["weekend"]["dir"] == str(new_week)
    with pytest.raises(SystemExit) as exit_info:  # a long directory as well is refused
        C.main([str(long), str(new_week), "--reuse-long", str(out / "clrec.parquet"), "--out-dir", str(again)])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("what", ["missing directory", "missing metric", "missing agent"])
def test_bad_input_is_one_line_and_exit_2_without_a_page(sweeps, capsys, what: str):
    long, week, out = sweeps
    if what == "missing directory":
        shutil.rmtree(week)
    elif what == "missing metric":
        frame = pd.read_parquet(long / "results.parquet")
        frame[frame.metric != "logged_ctr"].to_parquet(long / "results.parquet", index=False)
    else:
        frame = pd.read_parquet(week / "results.parquet")
        frame[frame.agent != "multi-clrec"].to_parquet(week / "results.parquet", index=False)
    with pytest.raises(SystemExit) as exit_info:
        run_page(long, week, out)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not (out / "clrec.md").exists() and not (out / "clrec.parquet").exists()


def test_sweep_specs_load_and_have_the_power_asked(tmp_path: Path):
    from scenarios.sweep import load_spec

    for name, rounds in (("clrec.toml", 20), ("clrec-weekend.toml", 20)):
        spec = load_spec(ROOT / "experiments" / name)
        assert len(spec.seeds) == 10 and spec.scenarios[0].timeline.rounds >= rounds
        assert {"oracle", "random", "popular", "bc"} <= {a.label for a in spec.agents} and len(spec.cells(1)) == 60
    for name in ("clrec-full.toml", "clrec-weekend-full.toml"):
        text = (
            (ROOT / "experiments" / name)
            .read_text()
            .replace("../runs/clrec-tune-full/best.toml", str(ROOT / "experiments" / "clrec-tuned.toml"))
        )
        (tmp_path / name).write_text(text)
        spec = load_spec(tmp_path / name)
        sc = spec.scenarios[0]
        assert len(spec.seeds) >= 10 and sc.world.n_items >= 100 * sc.cascade.k_retrieve and len(spec.cells(1)) == 120
        assert sc.timeline.rounds >= (100 if name == "clrec-full.toml" else 28)


def test_tune_specs_give_every_method_the_same_budget_and_space():
    from scenarios.tune import load_tune_spec

    full, reduced = (
        load_tune_spec(ROOT / "experiments" / "clrec-tune.toml"),
        load_tune_spec(ROOT / "experiments" / "clrec-tune-reduced.toml"),
    )
    for spec in (full, reduced):
        assert not set(spec.validation_seeds) & set(range(20))
        assert [a.name for a in spec.agents] == ["sampled-softmax-logq", "clrec-queue", "multi-clrec"]
    describe = lambda s: [[p.describe() for p in a.space] for a in s.agents]  # noqa: E731
    assert describe(full) == describe(reduced)


def test_a_collapsed_selector_makes_table_4_not_testable():
    frame = pd.DataFrame(week_rows()).assign(part="weekend")
    collapsed = frame[(frame.agent == "multi-clrec") & (frame.metric == "logged_ctr")].assign(metric="fit_selection_share_max", value=0.95)
    summ = C.summaries(pd.concat([frame, collapsed]), WINDOW)
    failing = T.broken(summ)
    assert set(failing) == {"multi-clrec"} and "95%" in failing["multi-clrec"]
    comp = C.compare(summ, tuple(c for c in C.COMPARISONS if c.part == "weekend"))
    table4 = next(c for c in T.CLAIMS if c.name == "Table 4: weekend HitRate@50")
    assert T.verdict(table4, comp)[0] == "reproduced"  # the synthetic multi-clrec gains on weekends...
    assert T.verdict(table4, comp, failing)[0].startswith("not testable")  # ...but a collapsed selector is not working
    healthy = C.summaries(pd.concat([frame, collapsed.assign(value=0.3)]), WINDOW)
    assert T.broken(healthy) == {}
