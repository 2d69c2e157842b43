"""Scenario presets: TOML files shipped in ``scenarios/data``, loadable by name or by path."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from simulator.config import ConfigError, Scenario, load_scenario_file

_DATA = resources.files("scenarios") / "data"


def list_scenarios() -> dict[str, str]:
    """Preset name -> the first line of its description."""
    out = {}
    for entry in sorted(_DATA.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            desc = tomllib.loads(entry.read_text()).get("description", "")
            out[entry.name.removesuffix(".toml")] = desc.strip().splitlines()[0] if desc.strip() else ""
    return out


def load_scenario(name_or_path: str) -> Scenario:
    """A preset by name (``default``) or a scenario TOML file by path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path or Path(name_or_path).is_file():
        return load_scenario_file(name_or_path)
    presets = list_scenarios()
    if name_or_path not in presets:
        raise ConfigError(f"scenario: unknown preset {name_or_path!r}; allowed: {', '.join(presets)} or a path to a .toml file")
    with resources.as_file(_DATA / f"{name_or_path}.toml") as path:
        return load_scenario_file(path)
