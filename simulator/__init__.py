"""cascadesim's simulator: the world, the SimPy timeline, the cascade, the log and the metrics.

The simulator never imports :mod:`agents`; agents plug in through
:class:`simulator.agent_api.RetrievalAgent`.
"""

__version__ = "0.1.0"
