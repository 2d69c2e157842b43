"""``cascadesim tune``: the same budget of optuna (TPE) trials for every agent, on validation seeds.

Spec::

    [tune]
    scenario = "default"            # preset or path (relative to the spec file)
    trials = 20                     # per agent: every agent gets the same budget
    validation_seeds = [1000, 1001] # disjoint from test_seeds (checked)
    test_seeds = 10                 # the seeds results are reported on (a count from 0, or a list)
    metric = "true_recall@100"      # objective: this metric averaged over the last `last_rounds` rounds and the seeds
    last_rounds = 5
    direction = "maximize"
    sampler_seed = 0                # TPE seed: the same spec gives the same trials
    parallel_trials = 1             # trials asked per batch (part of the search: keep it fixed to reproduce)

    [base]
    timeline.rounds = 10

    [agents.bc]
    fixed = {label = "clicked"}     # options held fixed during the search
    space.gamma = {low = 1.0, high = 30.0, log = true}   # float (log or linear)
    space.epochs = {low = 1, high = 3}                   # int (both bounds integers)
    space.hidden = {choices = [[64], [128, 64]]}         # categorical

Trials run as sweep cells (:func:`scenarios.sweep.cells.run_cell`) on the same
runners, so ``--workers`` and ``--ray`` apply. The result, ``best.toml``, is a
scenario file: the tuned scenario with one ``[agents.<name>]`` table per agent
(``cascadesim run --scenario best.toml``, or ``agents_from`` in a sweep spec); its
header states the budget, the search space and the validation seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scenarios.sweep.cells import Cell, part_path, read_part
from scenarios.sweep.driver import Progress, prepare_dir, run_cells
from scenarios.sweep.merge import write_frame
from scenarios.sweep.pool import Runner, make_runner, usable_cores
from scenarios.sweep.spec import base_scenario, check_top_level, parse_agent, parse_seeds, read_toml
from scenarios.sweep.toml_out import dumps
from simulator.config import ConfigError, Scenario

_TUNE_KEYS = {
    "scenario",
    "trials",
    "validation_seeds",
    "test_seeds",
    "metric",
    "last_rounds",
    "direction",
    "sampler_seed",
    "parallel_trials",
    "threads",
    "device",
    "name",
}


@dataclass(frozen=True)
class Param:
    """One search dimension: ``float`` (log or linear), ``int`` or ``categorical``."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":  # optuna stores scalars only: lists travel as JSON strings
            return json.loads(trial.suggest_categorical(self.name, [json.dumps(c) for c in self.choices]))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {json.dumps(list(self.choices))}"
        return f"{self.name}: {self.kind} [{self.low}, {self.high}]{' log' if self.log else ''}"


@dataclass(frozen=True)
class TuneAgent:
    name: str
    fixed: dict[str, Any]
    space: tuple[Param, ...]


@dataclass(frozen=True)
class TuneSpec:
    name: str
    scenario: Scenario
    agents: tuple[TuneAgent, ...]
    trials: int
    validation_seeds: tuple[int, ...]
    test_seeds: tuple[int, ...]
    metric: str
    last_rounds: int
    direction: str
    sampler_seed: int
    parallel_trials: int
    threads: int | None
    device: str


def parse_param(where: str, name: str, entry: Any) -> Param:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}.{name}: must be a table {{low, high[, log]}} or {{choices = [...]}}, got {entry!r}")
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.{name}.choices: must be a non-empty list")
        return Param(name, "categorical", choices=tuple(choices))
    low, high, log = entry.get("low"), entry.get("high"), entry.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not low < high or not isinstance(log, bool) or (log and low <= 0):  # type: ignore[operator]
        raise ConfigError(f"{where}.{name}: needs numbers low < high (low > 0 with log = true), got {entry!r}")
    kind = entry.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}.{name}.type: must be int, float or categorical (give choices), got {kind!r}")
    return Param(name, kind, low, high, log)


def parse_agent_space(name: str, table: Any) -> TuneAgent:
    where = f"agents.{name}"
    if not isinstance(table, dict) or set(table) - {"fixed", "space"}:
        raise ConfigError(f"{where}: must hold a 'space' table and optionally a 'fixed' table")
    fixed, space = table.get("fixed", {}), table.get("space", {})
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}.space: give at least one parameter to search")
    params = tuple(parse_param(f"{where}.space", k, v) for k, v in space.items())
    probe = {**fixed, **{p.name: (p.choices[0] if p.choices else p.low) for p in params}}
    parse_agent({"name": name, **probe}, {})  # unknown agent or option names fail here, before any trial
    if name == "oracle":
        raise ConfigError(f"{where}: the oracle has nothing to tune")
    return TuneAgent(name, dict(fixed), params)


def _int(tune: dict[str, Any], key: str, default: int, low: int) -> int:
    value = tune.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"tune.{key}: must be an integer >= {low}, got {value!r}")
    return value


def load_tune_spec(path: str | Path) -> TuneSpec:
    """Read and validate a tune spec; every error is a one-line ConfigError naming the field."""
    path = Path(path)
    raw = read_toml(path, "spec")
    tune = raw.get("tune", {})
    if not isinstance(tune, dict) or set(tune) - _TUNE_KEYS:
        raise ConfigError(f"tune: unknown option(s) {sorted(set(tune) - _TUNE_KEYS)}; allowed: {', '.join(sorted(_TUNE_KEYS))}")
    check_top_level({k: v for k, v in raw.items() if k != "tune"} | {"sweep": {k: tune[k] for k in ("threads", "device") if k in tune}})
    scenario = base_scenario({"sweep": {"scenario": tune.get("scenario", "default")}, "base": raw.get("base", {})}, path.parent)
    tables = raw.get("agents")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError("agents: give one [agents.<name>] table with a space per agent to tune")
    validation = parse_seeds(tune.get("validation_seeds", [1000, 1001]), "tune.validation_seeds")
    test = parse_seeds(tune.get("test_seeds", 10), "tune.test_seeds")
    if set(validation) & set(test):
        raise ConfigError(f"tune.validation_seeds: must be disjoint from tune.test_seeds, both hold {sorted(set(validation) & set(test))}")
    direction = tune.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"tune.direction: must be maximize or minimize, got {direction!r}")
    last = _int(tune, "last_rounds", min(5, scenario.timeline.rounds), 1)
    if last > scenario.timeline.rounds:
        raise ConfigError(f"tune.last_rounds: must be <= timeline.rounds ({scenario.timeline.rounds}), got {last}")
    from scenarios.sweep.spec import default_metric

    return TuneSpec(
        str(tune.get("name", path.stem)),
        scenario,
        tuple(parse_agent_space(n, t) for n, t in tables.items()),
        _int(tune, "trials", 20, 1),
        validation,
        test,
        str(tune.get("metric") or default_metric(scenario)),
        last,
        direction,
        _int(tune, "sampler_seed", 0, 0),
        _int(tune, "parallel_trials", 1, 1),
        tune.get("threads"),
        str(tune.get("device", "cpu")),
    )


@dataclass(frozen=True)
class Best:
    """The best trial of one agent."""

    agent: str
    value: float | None
    params: dict[str, Any]
    trials: int


@dataclass(frozen=True)
class TuneResult:
    path: Path
    best: tuple[Best, ...]
    metric: str

    def lines(self) -> list[str]:
        out = []
        for b in self.best:
            value = "no trial finished" if b.value is None else f"{self.metric} = {b.value:.4f}"
            out.append(f"{b.agent}: best of {b.trials} trials: {value} with {json.dumps(b.params, sort_keys=True)}")
        return out


def trial_cells(spec: TuneSpec, agent: TuneAgent, number: int, params: dict[str, Any], threads: int) -> list[Cell]:
    """One cell per validation seed, the agent's table holding the fixed options and the trial's values."""
    data = spec.scenario.model_dump(mode="json")
    resolved = {**data, "agents": {agent.name: {**agent.fixed, **params}}}
    return [Cell(resolved, agent.name, f"{agent.name} trial {number}", s, spec.device, threads) for s in spec.validation_seeds]


def objective(spec: TuneSpec, cells: list[Cell], out: Path) -> float | None:
    """``spec.metric`` averaged over the last ``last_rounds`` rounds and the validation seeds; None if a cell failed."""
    values = []
    for cell in cells:
        if not part_path(out, cell.key).exists():
            return None
        frame, _ = read_part(part_path(out, cell.key))
        rows = frame[frame.metric == spec.metric]
        if rows.empty:
            known = ", ".join(sorted(frame.metric.unique()))
            raise ConfigError(f"tune.metric: {spec.metric!r} is not reported by {cell.agent}; allowed: {known}")
        values.append(rows[rows["round"] > rows["round"].max() - spec.last_rounds].value.mean())
    return float(sum(values) / len(values))


def tune_agent(spec: TuneSpec, agent: TuneAgent, out: Path, runner: Runner, progress: Progress, threads: int) -> tuple[Best, list[dict]]:
    """Run ``spec.trials`` TPE trials for one agent in batches of ``parallel_trials``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=spec.direction,  # type: ignore[arg-type]
        sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed),
    )
    rows: list[dict] = []
    while len(study.trials) < spec.trials:
        batch = [study.ask() for _ in range(min(spec.parallel_trials, spec.trials - len(study.trials)))]
        params = [{p.name: p.suggest(t) for p in agent.space} for t in batch]
        cells = [trial_cells(spec, agent, t.number, p, threads) for t, p in zip(batch, params, strict=True)]
        run_cells([c for group in cells for c in group], out, spec.metric, runner, progress)
        for trial, values, group in zip(batch, params, cells, strict=True):
            value = objective(spec, group, out)
            study.tell(trial, value, state=None if value is not None else optuna.trial.TrialState.FAIL)
            rows.append(
                {
                    "agent": agent.name,
                    "trial": trial.number,
                    "value": value,
                    "params": json.dumps(values, sort_keys=True),
                    "cells": ",".join(c.key for c in group),
                }
            )
    done = [r for r in rows if r["value"] is not None]
    if not done:
        return Best(agent.name, None, {}, spec.trials), rows
    best = study.best_trial
    return Best(agent.name, best.value, json.loads(rows[best.number]["params"]), spec.trials), rows


def header(spec: TuneSpec, best: tuple[Best, ...], threads: int) -> str:
    """The comment block of best.toml: budget, search space, seeds, objective and the best values."""
    lines = [
        f"# cascadesim tune {spec.name}: best configs; budget {spec.trials} TPE trials per agent (sampler seed {spec.sampler_seed},"
        f" {spec.parallel_trials} per batch, {threads} torch thread(s) per cell)",
        f"# objective: {spec.direction} {spec.metric} averaged over the last {spec.last_rounds} of {spec.scenario.timeline.rounds}"
        f" rounds and validation seeds {list(spec.validation_seeds)} (test seeds {list(spec.test_seeds)} never used)",
    ]
    for agent, b in zip(spec.agents, best, strict=True):
        lines.append(f"# {agent.name}: search space {'; '.join(p.describe() for p in agent.space)}; fixed {json.dumps(agent.fixed)}")
        lines.append(f"# {agent.name}: best {spec.metric} = {b.value}")
    return "\n".join(lines) + "\n"


def write_best(spec: TuneSpec, best: tuple[Best, ...], out: Path, threads: int) -> Path:
    """A scenario file: the tuned scenario with an [agents.<name>] table per agent (fixed + best values)."""
    from scenarios.sweep.cells import atomic_write

    data = spec.scenario.model_dump(mode="json")
    data["agents"] = {**data.get("agents", {}), **{a.name: {**a.fixed, **b.params} for a, b in zip(spec.agents, best, strict=True)}}
    path = out / "best.toml"
    text = header(spec, best, threads) + "\n" + dumps(data)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def write_record(spec: TuneSpec, best: tuple[Best, ...], threads: int, out: Path) -> None:
    from scenarios.sweep.cells import atomic_write

    record = {
        "name": spec.name,
        "budget_trials_per_agent": spec.trials,
        "sampler": f"TPE(seed={spec.sampler_seed})",
        "parallel_trials": spec.parallel_trials,
        "threads": threads,
        "metric": spec.metric,
        "last_rounds": spec.last_rounds,
        "direction": spec.direction,
        "validation_seeds": list(spec.validation_seeds),
        "test_seeds": list(spec.test_seeds),
        "space": {a.name: [p.describe() for p in a.space] for a in spec.agents},
        "fixed": {a.name: a.fixed for a in spec.agents},
        "best": {b.agent: {"value": b.value, "params": b.params} for b in best},
    }
    atomic_write(out / "tune.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True)))


def run_tune(
    spec: TuneSpec,
    out: str | Path,
    workers: int = 1,
    ray: str | None = None,
    resume: bool = False,
    threads: int | None = None,
    runner: Runner | None = None,
) -> TuneResult:
    """Tune every agent of ``spec`` with the same budget; write best.toml, trials.parquet and tune.json into ``out``."""
    out = Path(out)
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    previous = prepare_dir(out, resume, "tune.json")
    threads = int(threads or (previous or {}).get("threads") or spec.threads or max(1, usable_cores() // workers))
    out.mkdir(parents=True, exist_ok=True)
    write_record(spec, (), threads, out)
    own, runner = runner is None, runner or make_runner(workers, threads, ray)
    progress = Progress(len(spec.agents) * spec.trials * len(spec.validation_seeds), 0, spec.metric)
    best, rows = [], []
    try:
        for agent in spec.agents:
            b, r = tune_agent(spec, agent, out, runner, progress, threads)
            best.append(b)
            rows += r
    finally:
        progress.close()
        if own:
            runner.close()
    write_frame(pd.DataFrame(rows), out / "trials.parquet")
    write_record(spec, tuple(best), threads, out)
    return TuneResult(write_best(spec, tuple(best), out, threads), tuple(best), spec.metric)
