"""Scenario presets, experiments (the composition root) and the ``cascadesim`` command line."""
