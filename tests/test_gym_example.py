"""The worked RL example runs end to end at a tiny size (stable-baselines3 is an optional extra)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ppo_small_cascade.py"


def test_ppo_example_trains_and_scores_both_policies() -> None:
    pytest.importorskip("stable_baselines3")
    spec = importlib.util.spec_from_file_location("ppo_small_cascade", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    threads = torch.get_num_threads()
    try:
        result = example.main(timesteps=64, eval_steps=40, seed=0, rounds=2, timeline={"requests_per_round": 24})
    finally:
        torch.set_num_threads(threads)
    assert set(result) == {"ppo", "random"}
    for scores in result.values():
        assert 0.0 <= scores["clicks_per_request"] <= 1.0 and 0.0 <= scores["true_relevance"] <= 1.0
        assert all(math.isfinite(v) for v in scores.values())
