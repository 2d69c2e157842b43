"""The statistics behind the results pages: t-intervals and paired win/tie/loss calls."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from scenarios.study import compare, format_interval, interval, interval_table, t_quantile


def test_interval_matches_hand_computed_t_interval() -> None:
    mean, half = interval([1.0, 2.0, 3.0])  # sd 1, n 3, t_{0.975,2} = 4.303
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(interval([5.0])[1])
    assert t_quantile(100) == 1.96
    with pytest.raises(ValueError, match="df"):
        t_quantile(0)


def _frame(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"scenario": "s", "agent": a, "seed": s, "round": 0, "metric": "m", "value": v}
        for a, vs in values.items() for s, v in enumerate(vs)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_compare_is_paired_over_seeds() -> None:
    # seed effects are large, the paired difference is a constant +0.1: a clear win
    frame = _frame({"new": [0.6, 0.9, 0.3], "base": [0.5, 0.8, 0.2]})
    verdict, diff, _ = compare(frame, "m", 0, "new", "base")
    assert verdict == "wins" and diff == pytest.approx(0.1)
    noisy = _frame({"new": [0.6, 0.7, 0.3], "base": [0.5, 0.8, 0.2]})
    assert compare(noisy, "m", 0, "new", "base")[0] == "ties"
    assert compare(frame, "m", 0, "base", "new")[0] == "loses"


def test_interval_table_renders_every_agent_and_metric() -> None:
    table = interval_table(_frame({"a": [1.0, 2.0, 3.0], "b": [1.0, 1.0, 1.0]}), ["m"], 0, ["a", "b", "c"])
    assert "| a | 2.000 ± 2.484 |" in table
    assert "| b | 1.000 ± 0.000 |" in table
    assert "| c | – |" in table
    assert format_interval(0.5, math.nan) == "0.500"
