"""Scenario presets, experiments (the composition root) and the ``cascadesim`` command line."""

from agents.cp2rec_ranker import CP2RecRanker
from simulator.cascade.ranker import register_ranker

# the composition root wires ranking-stage methods into the platform ranker slot: `cascade.ranker = "cp2rec"`
register_ranker("cp2rec", CP2RecRanker)
