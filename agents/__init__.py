"""Retrieval agents for cascadesim, one file per method, registered by paper name.

Build one with :func:`make_agent` (``make_agent("bc", ctx, gamma=5.0)``), list
them with :func:`list_agents`, and check a new one with :func:`check_agent`.
Agents see observable data only: they may import ``simulator.types``,
``simulator.config``, ``simulator.rng``, ``simulator.nn``, ``simulator.log.view``,
``simulator.log.schema`` and ``simulator.agent_api`` (tested by an AST scan).

Adding an agent: write ``agents/<paper_name>.py`` with a flat, frozen config
dataclass (embed the backbone's groups, e.g. ``tower: TowerConfig``, where it needs
them), the loss as a function, then the class, built as ``cls(ctx, config, name)``
and composing a backbone core (``ExposureCore``, ``SequenceCore``, ``GMMCore``),
decorated with ``@register("<paper_name>", config=<PaperConfig>)``; register its
ablations with ``register_variant(name, cls, preset, doc)``; import the module
below; run ``check_agent``.
"""

from agents import (  # noqa: F401  (import registers the agents)
    ar,
    bc,
    clrec,
    cp2rec,
    damcar,
    ecat,
    ipw,
    kd,
    muda,
    multi_clrec,
    popular,
    random,
    sampled_softmax,
    sampling_strategies,
    tl,
    uma2,
    usd,
    youtube_dnn,
)
from agents.check import check_agent
from agents.registry import agent_class, agent_config, list_agents, make_agent, register

__all__ = ["agent_class", "agent_config", "check_agent", "list_agents", "make_agent", "register"]
