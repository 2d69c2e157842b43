"""The UMA² page (``experiments/uma2_page.py``) on a hand-built sweep table, and the study's sweep / tune specs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import uma2_page as P  # noqa: E402

SEEDS, ROUNDS = 4, 8
AGENTS = ("oracle", "random", "popular", "bc", *P.STUDY)
# per-seed offsets over ss-a, constant over rounds: the paired differences of claim A are these exactly
GAIN = {"ss-ab": [0.05, 0.06, 0.04, 0.05], "uma2": [0.0, 0.01, -0.01, 0.0]}
METRICS = ("true_recall@10", "true_recall@20", "unbiased_recall@10", "unbiased_recall@20", "onpolicy_replay_recall@10", *P.USER_FACING)


def results() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for seed in range(SEEDS):
        world = rng.normal(0.2, 0.03)  # a seed's world moves every agent together (common random numbers)
        for agent in AGENTS:
            value = {"oracle": 1.0, "random": 0.01}.get(agent, world + GAIN.get(agent, [0.0] * SEEDS)[seed])
            for rnd in range(ROUNDS):
                early = -0.1 if rnd < ROUNDS - 5 else 0.0  # outside the 5-round window: must not count
                rows += [{"scenario": "s", "agent": agent, "seed": seed, "round": rnd, "metric": m, "value": value + early, "cell": "c"}
                         for m in METRICS]  # fmt: skip
    return pd.DataFrame(rows)


def make_dirs(tmp: Path, frame: pd.DataFrame) -> tuple[Path, Path]:
    sweep, tune = tmp / "sweep", tmp / "tune"
    (sweep / "parts").mkdir(parents=True)
    (tune / "parts").mkdir(parents=True)
    frame.to_parquet(sweep / "results.parquet")
    (sweep / "sweep.json").write_text(json.dumps({"threads": 1, "fields": [], "name": "uma2"}))
    record = {"budget_trials_per_agent": 4, "sampler": "TPE(seed=0)", "metric": "true_recall@10", "last_rounds": 3,
              "validation_seeds": [1000], "space": {"uma2": ["lr: float [0.001, 0.03] log"]},
              "best": {"uma2": {"value": 0.2, "params": {"lr": 0.01}}}}  # fmt: skip
    (tune / "tune.json").write_text(json.dumps(record))
    return sweep, tune


@pytest.fixture(autouse=True)
def no_figures(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(P, "write_figures", lambda figs, out, name: [])


def run_page(tmp: Path, frame: pd.DataFrame) -> Path:
    sweep, tune = make_dirs(tmp, frame)
    out = tmp / "out"
    P.main([str(sweep), "--tune", str(tune), "--out-dir", str(out)])
    return out


def test_paired_difference_is_the_per_seed_gap_over_the_last_rounds():
    avg = P.time_average(results(), 5)
    assert P.paired(avg, "ss-ab", "ss-a", "true_recall@10") == pytest.approx(GAIN["ss-ab"])
    comp = P.comparisons(avg, 10, 20)
    row = comp[(comp.agent == "ss-ab") & (comp.base == "ss-a") & (comp.metric == "true_recall@10")].iloc[0]
    d = np.array(GAIN["ss-ab"])
    assert row["diff"] == pytest.approx(0.05) and row.sd == pytest.approx(d.std(ddof=1))
    assert row.half == pytest.approx(3.182 * d.std(ddof=1) / 2, rel=1e-3)  # t_{.975, 3} = 3.182
    assert row.gap == pytest.approx(0.99)
    # Holm over the whole page: the smallest p is multiplied by the number of finite tests
    finite = comp.p[np.isfinite(comp.p)]
    assert comp.holm.min() == pytest.approx(min(1.0, len(finite) * finite.min()))
    assert P.verdict(row) == "reproduced"


def test_verdicts_reversed_excluded_and_undecided():
    base = {"holm": 0.5, "diff": 0.001, "half": 0.002, "base_level": 0.2, "paper": np.nan}
    assert P.verdict(pd.Series({**base, "holm": 0.01, "diff": -0.02})) == "reversed"
    assert P.verdict(pd.Series(base)) == "undecided at this power"
    # the paper's +94.7% lift: an interval ending at +1.5% relative excludes it
    assert P.verdict(pd.Series({**base, "paper": 0.947})).startswith("not reproduced")
    assert P.seeds_needed(0.01, 0.01) == pytest.approx(10, abs=2)  # (2.26 + 0.88)^2 ~ 9.9 paired seeds


def test_page_numbers_equal_those_recomputed_from_its_parquet(tmp_path: Path):
    out = run_page(tmp_path, results())
    page = (out / "uma2.md").read_text()
    stored = pd.read_parquet(out / "uma2.parquet")
    window = json.loads((out / "uma2.json").read_text())["window"]
    assert window == 3  # the default: the tune objective's last rounds
    comp = P.comparisons(P.time_average(stored, window), 10, 20)
    for _, c in comp[comp.metric == "true_recall@10"].iterrows():
        line = next(x for x in page.splitlines() if x.startswith(f"| {c.claim} | `{c.agent}` - `{c.base}` | true_recall@10 |"))
        assert P.fmt(c["diff"], c.half, 4) in line
    line = next(x for x in page.splitlines() if x.startswith("| A | `ss-ab` - `ss-a` | true_recall@10 |"))
    assert "+0.0500 ±" in line and "| reproduced |" in line
    assert "**4 optuna TPE trials per agent**" in page and json.loads((out / "uma2.json").read_text())["n_seeds"] == SEEDS
    assert "| `oracle` | 1.0000 ± 0.0000 |" in page  # reference rows in the levels table


def test_regenerating_from_the_parquet_gives_the_same_numbers(tmp_path: Path):
    out = run_page(tmp_path, results())
    first = (out / "uma2.md").read_text()
    P.main(["--from-parquet", str(out / "uma2.parquet"), "--out-dir", str(out)])
    second = (out / "uma2.md").read_text()
    table = re.compile(r"^\| [ABSC] \|")
    assert [x for x in first.splitlines() if table.match(x)] == [x for x in second.splitlines() if table.match(x)]


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        ("missing_dir", "error: sweep: no such directory"),
        ("missing_metric", "error: results: metric(s) logged_ctr missing"),
        ("missing_tune", "error: tune: no tune.json"),
    ],
)
def test_bad_input_is_one_line_and_no_page(tmp_path: Path, capsys: pytest.CaptureFixture[str], break_it: str, message: str):
    frame = results()
    if break_it == "missing_metric":
        frame = frame[frame.metric != "logged_ctr"]
    sweep, tune = make_dirs(tmp_path, frame)
    if break_it == "missing_dir":
        sweep = tmp_path / "nowhere"
    if break_it == "missing_tune":
        (tune / "tune.json").unlink()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        P.main([str(sweep), "--tune", str(tune), "--out-dir", str(out)])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)
    assert not out.exists() or not any(out.iterdir())  # no partial page, parquet or json


def stub_agents_from(spec: Path, tmp: Path) -> Path:
    """The spec with agents_from pointing at a stub best.toml (the tuned one lives in runs/, not in git)."""
    (tmp / "best.toml").write_text("[agents.uma2]\nlr = 0.005\n")
    text = re.sub(r'agents_from = "[^"]*"', 'agents_from = "best.toml"', spec.read_text())
    (tmp / spec.name).write_text(text)
    return tmp / spec.name


REDUCED_OUT = {"youtube-dnn-softmax", "uma2-dat"}  # full design only: the reduced run could not afford them


@pytest.mark.parametrize(("name", "agents", "rounds"), [("uma2.toml", 11, 10), ("uma2-full.toml", 13, 20)])
def test_sweep_specs_load_and_meet_the_standard(tmp_path: Path, name: str, agents: int, rounds: int):
    from scenarios.sweep import load_spec

    spec = load_spec(stub_agents_from(ROOT / "experiments" / name, tmp_path))
    assert len(spec.cells(1)) == agents * 10  # 4 references + the study's agents, x 10 paired seeds
    expected = set(AGENTS) - (REDUCED_OUT if agents == 11 else set())
    assert {a.label for a in spec.agents} == expected and spec.seeds == tuple(range(10))
    sc = spec.scenarios[0]
    assert sc.world.n_items >= 100 * sc.cascade.k_retrieve and sc.timeline.rounds == rounds
    assert sc.metrics.k_values == (sc.cascade.k_retrieve, 2 * sc.cascade.k_retrieve)  # the paper's @100/@200, scaled
    assert dict(spec.agents[[a.label for a in spec.agents].index("uma2")].overrides) == {"lr": 0.005}


@pytest.mark.parametrize(("reduced", "full"), [("uma2-tune.toml", "uma2-full-tune.toml")])
def test_tune_specs_give_every_agent_the_same_budget_on_disjoint_seeds(reduced: str, full: str):
    from scenarios.tune import load_tune_spec

    specs = [load_tune_spec(ROOT / "experiments" / n) for n in (reduced, full)]
    assert {a.name for a in specs[1].agents} == {"bc", *P.STUDY}
    assert {a.name for a in specs[0].agents} == {"bc", *P.STUDY} - REDUCED_OUT
    for spec in specs:
        assert not set(spec.validation_seeds) & set(range(10))
    spaces = [{a.name: [p.describe() for p in a.space] for a in s.agents} for s in specs]
    assert all(spaces[1][a] == space for a, space in spaces[0].items())  # the full design's space, a smaller budget
    assert specs[1].trials > specs[0].trials
