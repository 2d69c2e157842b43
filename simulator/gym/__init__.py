"""The cascade as gymnasium environments, registered in the ``cascadesim/`` namespace.

Importing this package registers (for ``gymnasium.make`` / ``gymnasium.make_vec``):

* ``cascadesim/Cascade-v0``: request-level over the whole catalogue; the action
  is the recalled item ids (:class:`~simulator.gym.env.CascadeEnv`). Its
  ``vector_entry_point`` is :class:`~simulator.gym.vector.CascadeVectorEnv`:
  ``N`` request lanes of one world served as one batch per step.
* ``cascadesim/CascadeSmall-v0``: a 20-item world where the action is the item
  to show (``Discrete``) and the observation one float vector: sized for
  off-the-shelf RL agents.
* ``cascadesim/Rerank-v0`` and ``cascadesim/Retrieval-v0``: learnable and transferable across worlds
  (features, never item ids): a score per recalled candidate, or a query vector scored against the
  live catalogue's observable item vectors (:mod:`simulator.gym.learnable`).

Both take a ``scenario`` (preset name, TOML path, dict or Scenario) and keyword
overrides (``rounds=``, ``world={...}``, ``action=``, ``observation=``,
``reward=``, ``device=``). :class:`~simulator.gym.policy.AgentPolicy` turns a
retrieval agent into a policy refitted at the environments' retrain points.
Registering is cheap: the classes below load on first use. See ``docs/gym.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from simulator.gym.registration import ENV_IDS, SMALL, register_envs

register_envs()

_LAZY = {
    "CascadeEnv": "simulator.gym.env",
    "CascadeVectorEnv": "simulator.gym.vector",
    "AgentPolicy": "simulator.gym.policy",
    "resolve_scenario": "simulator.gym.scenario",
    "max_slice_volume": "simulator.gym.scenario",
    "RerankEnv": "simulator.gym.learnable",
    "RetrievalEnv": "simulator.gym.learnable",
}

__all__ = [
    "ENV_IDS",
    "SMALL",
    "AgentPolicy",
    "CascadeEnv",
    "CascadeVectorEnv",
    "RerankEnv",
    "RetrievalEnv",
    "max_slice_volume",
    "register_envs",
    "resolve_scenario",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simulator.gym' has no attribute {name!r}")
