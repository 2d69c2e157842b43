"""Sweep specs: a TOML file naming a base scenario, a grid (or list) of scenario fields, agents and seeds.

Example::

    [sweep]
    scenario = "default"            # preset name or a path (relative to the spec file)
    seeds = 3                       # 0..2, or an explicit list [0, 5, 7]
    threads = 1                     # torch threads per cell (results depend on it; default cores // workers)
    metric = "true_recall@100"      # headline metric of the progress lines
    agents_from = "tuned.toml"      # optional: [agents.<name>] tables, e.g. written by `cascadesim tune`

    [base]                          # scenario overrides shared by every cell
    timeline.rounds = 5

    [grid]                          # cartesian product over dotted scenario fields
    "world.n_items" = [1000, 4000]

    [[agents]]
    name = "bc"
    [[agents]]
    name = "bc-g5"                  # a named variant: label, registry name and config overrides
    agent = "bc"
    gamma = 5.0

Every error is a one-line :class:`~simulator.config.ConfigError` naming the field.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agents
from agents.registry import agent_spec, flat_keys
from scenarios.presets import load_scenario
from scenarios.sweep.cells import Cell
from simulator.config import ConfigError, Scenario

_SWEEP_KEYS = {"scenario", "seeds", "threads", "metric", "agents_from", "device", "name"}
_TOP_KEYS = {"sweep", "base", "grid", "points", "agents"}


@dataclass(frozen=True)
class AgentSpec:
    """One agent column of a sweep: its label, registry name and config overrides."""

    label: str
    agent: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the resolved scenario of every grid point, the agents and the seeds."""

    name: str
    points: tuple[dict[str, Any], ...]
    scenarios: tuple[Scenario, ...]
    agents: tuple[AgentSpec, ...]
    seeds: tuple[int, ...]
    device: str
    threads: int | None
    metric: str
    raw: dict[str, Any]

    @property
    def fields(self) -> list[str]:
        """The grid's dotted field names (the extra columns of the results)."""
        return list(self.points[0]) if self.points else []

    def cells(self, threads: int) -> list[Cell]:
        """Every (point, agent, seed) cell, seeds outermost so that early results cover every agent."""
        out = []
        for seed in self.seeds:
            for point, sc in zip(self.points, self.scenarios, strict=True):
                data = sc.model_dump(mode="json")
                for ag in self.agents:
                    # only this agent's table, so that another agent's options never change this cell's key
                    resolved = {**data, "agents": {ag.agent: ag.overrides} if ag.overrides else {}}
                    out.append(Cell(resolved, ag.agent, ag.label, seed, self.device, threads, point))
        return out


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> dotted keys (``{"world": {"n_items": 5}}`` -> ``{"world.n_items": 5}``)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def check_path(path: str, where: str) -> None:
    """A dotted path must name ``section.field`` of :class:`Scenario`."""
    section, _, field = path.partition(".")
    model = Scenario.model_fields.get(section)
    sub = getattr(model.annotation, "model_fields", None) if model is not None else None
    if sub is None or field not in sub:
        sections = [s for s, f in Scenario.model_fields.items() if hasattr(f.annotation, "model_fields")]
        raise ConfigError(f"{where}.{path}: not a scenario field; use section.field with section one of {', '.join(sections)}")


def apply_overrides(sc: Scenario, dotted: dict[str, Any], where: str) -> Scenario:
    """``sc`` with dotted ``section.field`` values replaced (validated, one-line errors)."""
    sections: dict[str, dict[str, Any]] = {}
    for path, value in dotted.items():
        check_path(path, where)
        section, _, field = path.partition(".")
        sections.setdefault(section, {})[field] = value
    try:
        return sc.with_overrides(**sections)
    except ConfigError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in dotted.items())
        raise ConfigError(f"{where} ({shown}): {err}") from None


def grid_points(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid's cartesian product, or the explicit ``[[points]]`` list, or one empty point."""
    grid, points = raw.get("grid"), raw.get("points")
    if grid is not None and points is not None:
        raise ConfigError("grid: give either [grid] or [[points]], not both")
    if points is not None:
        if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
            raise ConfigError("points: must be a non-empty array of tables ([[points]])")
        listed = [flatten(p) for p in points]
        if any(set(p) != set(listed[0]) for p in listed):
            raise ConfigError("points: every point must set the same fields")
        return listed
    if grid is None:
        return [{}]
    if not isinstance(grid, dict):
        raise ConfigError("grid: must be a table of field = [values]")
    flat = flatten(grid)
    for path, values in flat.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{path}: must be a non-empty list of values, got {values!r}")
    return [dict(zip(flat, combo, strict=True)) for combo in itertools.product(*flat.values())]


def parse_seeds(value: Any, where: str = "sweep.seeds") -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= 10_000:
            raise ConfigError(f"{where}: must be in [1, 10000] or a list of seeds, got {value}")
        return tuple(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: duplicate seeds in {value}")
        return tuple(value)
    raise ConfigError(f"{where}: must be a count in [1, 10000] or a non-empty list of seeds >= 0, got {value!r}")


def parse_agent(entry: Any, defaults: dict[str, dict[str, Any]]) -> AgentSpec:
    """``"bc"`` or ``{name = "bc-g5", agent = "bc", gamma = 5.0}`` -> :class:`AgentSpec` (keys checked here, values in the cell)."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"agents: each entry must be a name or a table with a name, got {entry!r}")
    entry = dict(entry)
    label = entry.pop("name")
    name = entry.pop("agent", label)
    known = dict(agents.list_agents(), oracle="")
    if name not in known:
        raise ConfigError(f"agents.{label}: unknown agent {name!r}; allowed: {', '.join(sorted(known))} (set agent = ... for a variant)")
    if name != "oracle":
        allowed = list(flat_keys(agent_spec(name).config_cls))
        for key in entry:
            if key not in allowed:
                raise ConfigError(f"agents.{label}.{key}: unknown option of {name}; allowed: {', '.join(allowed)}")
    elif entry:
        raise ConfigError(f"agents.{label}: oracle takes no options, got {', '.join(entry)}")
    return AgentSpec(label, name, {**defaults.get(name, {}), **entry})


def load_agent_tables(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[agents.<name>]`` tables of a TOML file (a scenario, or the best configs written by ``tune``)."""
    data = read_toml(path, "sweep.agents_from")
    table = data.get("agents", {})
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"sweep.agents_from: {path} must hold [agents.<name>] tables")
    return table


def read_toml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what}: no such file {str(path)!r}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{what}: {path.name} is not valid TOML ({err})") from None


def resolve_path(value: str, root: Path) -> str:
    """A scenario or file named relative to the spec file (presets stay names)."""
    candidate = root / value
    return str(candidate) if (value.endswith(".toml") or "/" in value) and candidate.exists() else value


def base_scenario(raw: dict[str, Any], root: Path) -> Scenario:
    sweep = raw.get("sweep", {})
    scenario = sweep.get("scenario", "default")
    if not isinstance(scenario, str):
        raise ConfigError(f"sweep.scenario: must be a preset name or a path, got {scenario!r}")
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError("base: must be a table of scenario overrides")
    return apply_overrides(load_scenario(resolve_path(scenario, root)), flatten(base), "base")


def check_top_level(raw: dict[str, Any]) -> dict[str, Any]:
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{key}: unknown table; allowed: {', '.join(sorted(_TOP_KEYS))}")
    sweep = raw.get("sweep", {})
    if not isinstance(sweep, dict):
        raise ConfigError("sweep: must be a table")
    for key in sweep:
        if key not in _SWEEP_KEYS:
            raise ConfigError(f"sweep.{key}: unknown option; allowed: {', '.join(sorted(_SWEEP_KEYS))}")
    threads = sweep.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"sweep.threads: must be an integer >= 1, got {threads!r}")
    if sweep.get("device", "cpu") != "cpu" and not str(sweep.get("device")).startswith("cuda"):
        raise ConfigError(f"sweep.device: must be cpu or cuda[:N], got {sweep.get('device')!r}")
    return sweep


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file; every error is a one-line ConfigError."""
    path = Path(path)
    raw = read_toml(path, "spec")
    sweep = check_top_level(raw)
    root = path.parent
    base = base_scenario(raw, root)
    defaults = {k: dict(v) for k, v in base.agents.items()}
    if "agents_from" in sweep:
        defaults.update(load_agent_tables(Path(resolve_path(str(sweep["agents_from"]), root))))
    entries = raw.get("agents")
    if not isinstance(entries, list) or not entries:
        raise ConfigError('agents: give a non-empty list of agents (agents = ["bc", ...] or [[agents]] tables)')
    specs = tuple(parse_agent(e, defaults) for e in entries)
    labels = [a.label for a in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"agents: duplicate names in {', '.join(labels)}")
    points = grid_points(raw)
    scenarios = tuple(apply_overrides(base, p, "grid") for p in points)
    metric = sweep.get("metric") or default_metric(base)
    name = str(sweep.get("name", path.stem))
    return SweepSpec(
        name,
        tuple(points),
        scenarios,
        specs,
        parse_seeds(sweep.get("seeds", 1)),
        str(sweep.get("device", "cpu")),
        sweep.get("threads"),
        str(metric),
        raw,
    )


def default_metric(sc: Scenario) -> str:
    from scenarios.experiment import summary_metrics

    return summary_metrics(sc)[0]
