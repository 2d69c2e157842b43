"""The phenomena the simulator exists to show, on the presets, over several seeds (slow: run with -m slow)."""

from __future__ import annotations

import pytest

from scenarios.experiment import make_experiment, run_experiment

ROUNDS = 10


@pytest.fixture(scope="module")
def trap():
    exp = make_experiment("popularity-trap", ["oracle", "random", "bc"], seeds=3, rounds=ROUNDS)
    return exp, run_experiment(exp)


def _by_round(frame, metric):
    return frame[frame.metric == metric].pivot_table(index="round", columns="agent", values="value", aggfunc="mean")


@pytest.mark.slow
def test_bc_exposure_concentrates_and_ends_above_the_oracle(trap) -> None:
    _, frame = trap
    gini = _by_round(frame, "exposure_gini")
    first, last = gini["bc"].iloc[:3].mean(), gini["bc"].iloc[-3:].mean()
    assert last > first, f"bc's exposure Gini did not rise: first rounds {first:.4f}, last rounds {last:.4f}"
    assert gini["bc"].iloc[-1] > gini["oracle"].iloc[-1]


@pytest.mark.slow
def test_references_sit_where_theory_puts_them(trap) -> None:
    exp, frame = trap
    live = _by_round(frame, "live_items")["random"].iloc[-1]
    n = exp.scenario.metrics.panel_size * 3  # panel users x seeds
    for k in exp.scenario.eval_ks:
        recall = _by_round(frame, f"true_recall@{k}")
        assert recall["oracle"].min() == pytest.approx(1.0)  # the ceiling, every round
        p = k / live
        assert recall["random"].iloc[-1] == pytest.approx(p, abs=4 * (p * (1 - p) / k / n) ** 0.5 + 1e-3)
