"""How a gym environment gets its scenario: a preset name, a TOML path, a dict or a Scenario, plus overrides.

``gymnasium.make("cascadesim/Cascade-v0", scenario="default", rounds=5,
world={"n_users": 500})`` resolves ``"default"`` to the shipped preset, then
replaces ``timeline.rounds`` and the given fields of any scenario section
(``world``, ``cascade``, ``timeline``, ...), validating the result like every
other scenario (a one-line :class:`~simulator.config.ConfigError` naming the
field).

Presets are TOML files shipped as package data of ``scenarios``. The
simulator never imports that package (the layering rule); it only locates the
data folder with :func:`importlib.util.find_spec`, which reads no code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from simulator.config import ConfigError, Scenario, load_scenario_file, scenario_from_dict
from simulator.world.traffic import slice_volume

SECTIONS = ("world", "features", "user_model", "dynamics", "cascade", "timeline", "training", "metrics", "agents")


def _preset_path(name: str) -> Path:
    spec = find_spec("scenarios")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "data" / f"{name}.toml"
        if path.is_file():
            return path
    known = sorted({p.stem for f in folders for p in (Path(f) / "data").glob("*.toml")})
    raise ConfigError(f"scenario: unknown preset {name!r}; allowed: {', '.join(known) or '(none installed)'} or a path to a .toml file")


def resolve_scenario(
    scenario: Scenario | str | Mapping[str, Any] = "default", rounds: int | None = None, **sections: Mapping[str, Any]
) -> Scenario:
    """The validated scenario for a gym environment.

    Args:
        scenario: a :class:`Scenario`, a preset name (``"default"``), a path to a TOML file, or a dict.
        rounds: replaces ``timeline.rounds`` (the episode horizon in rounds).
        **sections: per-section field overrides, e.g. ``world={"n_users": 500}``.

    Returns:
        The scenario with the overrides applied.

    Raises:
        ConfigError: unknown preset or section, or an invalid value (one line naming the field).
    """
    if isinstance(scenario, Scenario):
        sc = scenario
    elif isinstance(scenario, Mapping):
        sc = scenario_from_dict(dict(scenario))
    elif isinstance(scenario, str):
        is_path = scenario.endswith(".toml") or "/" in scenario or Path(scenario).is_file()
        sc = load_scenario_file(scenario if is_path else _preset_path(scenario))
    else:
        raise ConfigError(f"scenario: expected a Scenario, a preset name, a path or a dict, got {type(scenario).__name__}")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown keyword; allowed: scenario, rounds, {', '.join(SECTIONS)} and the environment options")
    if rounds is not None:
        if int(rounds) < 1:
            raise ConfigError(f"rounds: must be >= 1, got {rounds}")
        sections = {**sections, "timeline": {**dict(sections.get("timeline", {})), "rounds": int(rounds)}}
    return sc.with_overrides(**{k: dict(v) for k, v in sections.items()}) if sections else sc


def max_slice_volume(sc: Scenario) -> int:
    """An upper bound on the requests of one traffic slice (lanes that serve any slice in one step)."""
    tl = sc.timeline
    n_slices = int(tl.round_hours / tl.slice_hours)
    weight = max(tl.daily_profile) / (sum(tl.daily_profile) / len(tl.daily_profile))
    if tl.rounds * n_slices > 200_000:  # a long horizon: the bound of the busiest slice on a weekend
        return math.ceil(tl.requests_per_round / n_slices * weight * max(1.0, tl.weekend_traffic)) + 1
    return max(1, max(slice_volume(sc, r, s, r * tl.round_hours + s * tl.slice_hours) for r in range(tl.rounds) for s in range(n_slices)))
