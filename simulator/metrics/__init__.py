"""Metrics of the simulated feedback loop: pure formulas live in ``formulas``."""
