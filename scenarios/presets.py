"""Scenario presets: TOML files shipped in ``scenarios/data``, loadable by name or by path."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_scenarios() -> dict[str, str]:
    """Preset name -> its whole description and its sizes (users x items, requests per round, rounds, K_r, slate)."""
    out = {}
    for name in list_scenarios():
        with resources.as_file(_DATA / f"{name}.toml") as path:
            sc = load_scenario_file(path)
        w, t, c = sc.world, sc.timeline, sc.cascade
        sizes = (
            f"[{w.n_users:,} users x {w.n_items:,} items, {t.requests_per_round:,} requests/round, {t.rounds} rounds, "
            f"K_r {c.k_retrieve}, slate {c.slate_size}, ranker {c.ranker}]"
        )
        out[name] = " ".join(sc.description.split()) + " " + sizes
    return out


def load_scenario(name_or_path: str) -> Scenario:
    """A preset by name (``default``) or a scenario TOML file by path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path or Path(name_or_path).is_file():
        return load_scenario_file(name_or_path)
    presets = list_scenarios()
    if name_or_path not in presets:
        hint = did_you_mean(name_or_path, presets)
        raise ConfigError(f"scenario: unknown preset {name_or_path!r}{hint}; allowed: {', '.join(presets)} or a path to a .toml file")
    with resources.as_file(_DATA / f"{name_or_path}.toml") as path:
        return load_scenario_file(path)
