"""CPU and CUDA runs of one scenario and seed: the same world, the same metrics within a stated tolerance.

Torch's CUDA generators draw other numbers than its CPU generators, and CUDA kernels sum in another order, so
the traffic, the users' responses and the trained models differ by device: a CUDA run is another sample of the
same experiment, not a copy of the CPU run. What is drawn once per seed (the world, the evaluation panel, the
mini-app shift, the weekend categories) is drawn on the CPU and moved, so both devices start from the very same
world (checked exactly). The metrics then agree in distribution: for each metric, the paired difference
``d_s = cuda_s - cpu_s`` over seeds must satisfy ``|mean d| <= t_{0.9995, n-1} * sd(d) / sqrt(n) + 1e-6``
(a paired t-test at two-sided level 0.001: a real device bias of a few standard errors fails it, noise does not).
Skipped without a GPU; run on a GPU machine with ``python -m pytest tests/test_cuda_agreement.py``.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from scenarios.experiment import make_experiment, run_experiment
from simulator.world.state import generate_world
from tests.conftest import tiny_scenario

SEEDS = 8
METRICS = ("true_recall@50", "true_ndcg@20", "exposure_gini", "logged_ctr", "coverage", "offline_holdout_recall@50")
T_9995 = {7: 5.408}  # Student t quantile 0.9995 with n - 1 = 7 degrees of freedom

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _final_metrics(device: str) -> pd.DataFrame:
    sc = tiny_scenario(timeline={"rounds": 2})
    exp = make_experiment(sc, ["popular", "bc"], SEEDS, device=device)
    df = run_experiment(exp, None)
    last = df[(df["round"] == df["round"].max()) & df["metric"].isin(METRICS)]
    return last.pivot_table(index=["agent", "seed"], columns="metric", values="value")


def disagreements(cpu: pd.DataFrame, cuda: pd.DataFrame) -> list[str]:
    """The metrics whose paired device difference fails the t bound, as readable lines."""
    bad = []
    for agent in cpu.index.get_level_values("agent").unique():
        d = cuda.loc[agent] - cpu.loc[agent]
        for metric in d.columns:
            col = d[metric]
            bound = T_9995[len(col) - 1] * float(col.std(ddof=1)) / math.sqrt(len(col)) + 1e-6
            if abs(float(col.mean())) > bound:
                bad.append(f"{agent} {metric}: mean cuda-cpu {col.mean():+.4g} > bound {bound:.3g}")
    return bad


def test_the_bound_flags_a_device_bias_and_passes_noise() -> None:
    """The comparison itself, on made-up numbers: noise passes, a shift of 5 standard errors fails."""
    gen = torch.Generator().manual_seed(0)
    idx = pd.MultiIndex.from_product([["bc"], range(SEEDS)], names=["agent", "seed"])
    base = pd.DataFrame({"m": torch.rand(SEEDS, generator=gen).double().numpy()}, index=idx)
    noise = pd.DataFrame({"m": 0.01 * torch.randn(SEEDS, generator=gen).double().numpy()}, index=idx)
    assert disagreements(base, base + noise) == []
    assert disagreements(base, base + noise + 0.05) != []


@needs_cuda
def test_cuda_starts_from_the_cpu_world() -> None:
    sc = tiny_scenario()
    cpu, cuda = generate_world(sc, 3, "cpu"), generate_world(sc, 3, "cuda")
    for name, value in vars(cpu).items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(getattr(cuda, name).cpu(), value, rtol=0, atol=0, equal_nan=True, msg=name)


@needs_cuda
def test_cpu_and_cuda_metrics_agree_within_the_paired_bound() -> None:
    cpu, cuda = _final_metrics("cpu"), _final_metrics("cuda")
    assert cpu.shape == cuda.shape and cpu.notna().all().all() and cuda.notna().all().all()
    assert disagreements(cpu, cuda) == []
