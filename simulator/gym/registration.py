"""The ``cascadesim/`` environment ids, registered with gymnasium without importing the simulator.

:func:`register_envs` is what ``import simulator.gym`` runs, and the function
to name in a package's ``gymnasium.envs`` plugin entry point. It only records
``"module:Class"`` strings, so registering costs nothing until an environment
is made.
"""

from __future__ import annotations

from typing import Any

import gymnasium

SMALL: dict[str, Any] = {
    "name": "small",
    "description": "A 20-item catalogue, one candidate per request: the action is the exposed item (RL-sized).",
    "world": {"n_users": 100, "n_items": 20, "n_creators": 10, "n_categories": 4, "quality_std": 1.0},
    "dynamics": {"new_items_per_round": 0, "drift_rate": 0.0, "boredom_rate": 0.0},
    "cascade": {"k_retrieve": 1, "slate_size": 1, "ranker": "noisy-oracle"},
    "metrics": {"panel_size": 50, "k_values": [5, 10], "gap_negatives": 10, "homogenisation_users": 50},
    "training": {"window_rounds": 1, "epochs": 1, "batch_size": 256, "pretrain_fits": 1},
    "timeline": {"rounds": 50, "requests_per_round": 240},
}
"""The ``cascadesim/CascadeSmall-v0`` world: small enough for an off-the-shelf RL agent to learn in a minute."""

LEARN: dict[str, Any] = {
    "name": "learn",
    "description": "300 users, 200 items (+10 a round), 20 candidates, slate of 5: the learnable (feature-based) environments' world.",
    "world": {"n_users": 300, "n_items": 200, "n_creators": 20, "n_categories": 8},
    "features": {"modality_dim": 4},
    "dynamics": {"new_items_per_round": 10},
    "cascade": {"k_retrieve": 20, "slate_size": 5},
    "metrics": {"panel_size": 50, "k_values": [5, 10], "gap_negatives": 10, "homogenisation_users": 50},
    "training": {"window_rounds": 2, "epochs": 1, "batch_size": 256, "pretrain_fits": 1},
    "timeline": {"rounds": 20, "requests_per_round": 240},
}
"""The world of ``cascadesim/Rerank-v0`` and ``cascadesim/Retrieval-v0`` (ids never observed: policies transfer across seeds)."""

ENV_SPECS: dict[str, dict[str, Any]] = {
    "cascadesim/Cascade-v0": {"scenario": "default"},
    "cascadesim/CascadeSmall-v0": {"scenario": SMALL, "action": "discrete", "observation": "flat"},
    "cascadesim/Rerank-v0": {"scenario": LEARN},
    "cascadesim/Retrieval-v0": {"scenario": LEARN},
}
ENTRY_POINTS = {
    "cascadesim/Rerank-v0": "simulator.gym.learnable:RerankEnv",
    "cascadesim/Retrieval-v0": "simulator.gym.learnable:RetrievalEnv",
}
MAX_EPISODE_STEPS: dict[str, int] = {
    "cascadesim/Cascade-v0": 15_000,  # 5 of the default scenario's 20 rounds (3,000 requests each); the whole horizon: CascadeEnv itself
    "cascadesim/CascadeSmall-v0": 1_200,  # 5 of its 50 rounds (240 requests each)
    "cascadesim/Rerank-v0": 1_200,  # 5 of 20 rounds
    "cascadesim/Retrieval-v0": 1_200,
}
"""``gym.make`` wraps each id in ``TimeLimit`` at this many steps (``max_episode_steps=`` overrides it)."""
ENV_IDS = tuple(ENV_SPECS)


def register_envs() -> None:
    """Register every ``cascadesim/`` id (idempotent: ids already registered are left alone)."""
    for env_id, kwargs in ENV_SPECS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=ENTRY_POINTS.get(env_id, "simulator.gym.env:CascadeEnv"),
                vector_entry_point=None if env_id in ENTRY_POINTS else "simulator.gym.vector:CascadeVectorEnv",
                kwargs=kwargs,
                max_episode_steps=MAX_EPISODE_STEPS.get(env_id),
            )
