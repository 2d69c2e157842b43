"""cascadesim's simulator: the world, the SimPy timeline, the cascade, the log and the metrics.

The simulator never imports :mod:`agents`; agents plug in through
:class:`simulator.agent_api.RetrievalAgent`.
"""

__version__ = "0.1.0"

# gymnasium 1.x loads no plugin entry points: register cascadesim/* ids on import (strings only, cheap)
from simulator.gym.registration import register_envs as _register_envs  # noqa: E402

_register_envs()
