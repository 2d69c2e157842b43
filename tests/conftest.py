"""Shared fixtures: a tiny scenario and warm-started loops built from it."""

from __future__ import annotations

import os

import pytest
import torch

from simulator.config import Scenario, scenario_from_dict

TINY = {
    "name": "tiny",
    "world": {"n_users": 300, "n_items": 400, "n_creators": 40, "n_categories": 8},
    "dynamics": {"new_items_per_round": 5, "new_users_per_round": 3},
    "cascade": {"k_retrieve": 50, "slate_size": 5},
    "metrics": {"panel_size": 80, "k_values": [20, 50], "gap_negatives": 30, "homogenisation_users": 40},
    "training": {"window_rounds": 2, "epochs": 1, "batch_size": 512},
    "timeline": {"rounds": 3, "requests_per_round": 240},
}


def tiny_scenario(**sections: dict) -> Scenario:
    """The tiny scenario with some section fields replaced."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return scenario_from_dict(data)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``) each worker gets its share of the cores, and so do the
    commands it starts (they read OMP_NUM_THREADS): N workers never oversubscribe the machine."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def tiny() -> Scenario:
    return tiny_scenario()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP hand-offs that cost milliseconds on a busy machine.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
