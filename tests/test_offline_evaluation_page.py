"""The results page of ``experiments/offline_evaluation.py``: its statistics and tables on hand-built data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import offline_evaluation as runner  # noqa: E402
import offline_evaluation_page as P  # noqa: E402


def test_t_quantiles_match_the_printed_table():
    assert P.t_quantile(0.975, 9) == pytest.approx(2.262, abs=1e-3)
    assert P.t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert P.t_quantile(0.8, 9) == pytest.approx(0.883, abs=1e-3)


def test_paired_p_against_the_closed_form_for_two_degrees_of_freedom():
    # diffs 1, 2, 3: t = 2 / (1 / sqrt 3); for df = 2, F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    t = 2 * math.sqrt(3)
    expected = 2 * (1 - (0.5 + t / (2 * math.sqrt(2 + t * t))))
    assert P.paired_p([1.0, 2.0, 3.0]) == pytest.approx(expected, abs=1e-6)


def test_holm_is_step_down_and_monotone():
    out = P.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    assert out["a"] == pytest.approx(0.03) and out["c"] == pytest.approx(0.06) and out["b"] == pytest.approx(0.06)
    assert math.isnan(out["d"])


def _metrics() -> pd.DataFrame:
    """Two seeds, one round, three agents; the hold-out estimate inverts popular and bc."""
    rows = []
    truth = {"oracle": 0.6, "popular": 0.2, "bc": 0.3, "random": 0.1}
    est = {"oracle": 0.7, "popular": 0.5, "bc": 0.4, "random": 0.1}
    for seed in (0, 1):
        for agent in truth:
            rows.append(("s", agent, seed, 0, "offline_holdout_recall@5", est[agent] + 0.01 * seed))
            rows.append(("s", agent, seed, 0, "true_holdout_recall@5", truth[agent]))
    return pd.DataFrame(rows, columns=["scenario", "agent", "seed", "round", "metric", "value"])


def test_bias_frame_gap_and_swaps_on_a_hand_built_round():
    b = P.bias_frame(_metrics(), 5)
    assert set(b.protocol) == {"holdout"}
    bc = b[(b.agent == "bc") & (b.seed == 0)].iloc[0]
    assert bc.bias == pytest.approx(0.1)
    assert P.gap(b, 1)["holdout"] == pytest.approx(0.5)
    assert P.swaps(b, 1)["holdout"] == "bc/popular (100%)"  # pivot columns sort by name


def test_top1_is_masked_where_tau_is_undefined():
    board = pd.DataFrame(
        [("s", 0, 0, "leaderboard_tau_shared", math.nan, 4), ("s", 0, 0, "leaderboard_top1_shared", 0.0, 4),
         ("s", 1, 0, "leaderboard_tau_shared", 0.5, 4), ("s", 1, 0, "leaderboard_top1_shared", 1.0, 4)],
        columns=["scenario", "seed", "round", "metric", "value", "n_agents"],
    )  # fmt: skip
    out = P.mask_top1(board)
    top = out[out.metric == "leaderboard_top1_shared"].set_index("seed").value
    assert math.isnan(top[0]) and top[1] == 1.0


def test_scale_keeps_the_catalogue_to_k_ratio_and_share_zero_is_the_preset():
    cfgs = runner.configs(["default"], [0.0, 0.2], rounds=2, scale=0.25)
    assert [c.label for c in cfgs] == ["default", "default+explore0.2"]
    sc = cfgs[0].scenario
    assert (sc.world.n_users, sc.world.n_items, sc.cascade.k_retrieve) == (500, 500, 25)
    assert sc.metrics.k_values == (12, 25, 50) and sc.timeline.rounds == 2
    assert cfgs[1].scenario.cascade.exploration_share == 0.2 and cfgs[1].scenario.name == "default+explore0.2"


@pytest.mark.parametrize("argv, field", [(["--seeds", "1"], "seeds"), (["--scale", "2"], "scale"), (["--agents", "bc,random"], "agents"),
                                         (["--from-run", "/nonexistent/run"], "from-run")])  # fmt: skip
def test_bad_flags_are_one_line_errors(argv, field, capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith(f"error: {field}:") and "\n" not in err


def test_interval_ignores_nans():
    mean, half, sd = P.interval([1.0, np.nan, 3.0])
    assert mean == 2.0 and sd == pytest.approx(math.sqrt(2)) and half == pytest.approx(12.706 * 1.0, abs=1e-2)


def test_the_stochastic_serving_preset_feeds_the_estimators_monte_carlo_propensities():
    from scenarios.presets import list_scenarios, load_scenario
    from simulator.evaluation_config import active_estimators, ope_rows

    sc = load_scenario("stochastic-serving")
    assert sc.name == "stochastic-serving" and "stochastic-serving" in list_scenarios() and len(sc.description) > 80
    assert sc.cascade.stochastic and 0 < sc.cascade.exploration_share <= 0.1
    assert ope_rows(sc) == "stochastic" and active_estimators(sc) == ("ips", "snips", "dr", "dm")  # ips_pos needs the uniform slice


def test_t_cdf_stays_a_probability_for_huge_statistics() -> None:
    """Differences constant up to rounding give t ~ 1e15: the p-value must be ~0, never negative."""
    from experiments.offline_evaluation_page import paired_p, t_cdf

    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-9)  # Cauchy: 1/2 + atan(1)/pi
    assert t_cdf(1e12, 3) == 1.0 and t_cdf(-1e12, 3) == 0.0
    assert 0.0 <= paired_p([1.0, 1.0 + 1e-15, 1.0 - 1e-15]) < 1e-9
