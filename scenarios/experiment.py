"""Experiments: scenario x agents x seeds as independent closed loops, into a run directory.

This is the composition root: it alone imports both :mod:`simulator` and
:mod:`agents`. Every (agent, seed) loop starts from the same warm-started
world and log of its seed (common random numbers), runs its rounds, and is
checkpointed atomically after each round, so ``resume`` continues from the
last completed round and ends identical to an uninterrupted run.

Run directory::

    manifest.json        config, agents, seeds, versions
    metrics.parquet      long form: scenario, agent, seed, round, metric, value
    checkpoints/         one file per (agent, seed): the loop at its last committed round (see scenarios.rundir)
    logs/                optional per-round log tables (Parquet)
"""

from __future__ import annotations

import platform
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import agents
from scenarios.presets import did_you_mean, load_scenario
from scenarios.rundir import KEEP_CHOICES, RunDir, check_out_path
from scenarios.signals import stop_point
from scenarios.sizing import check_fits
from simulator.agent_api import AgentContext
from simulator.checkpoint import RunDirError, atomic_write_json, atomic_write_parquet, read_json, read_metrics
from simulator.config import ConfigError, Scenario
from simulator.log.schema import METRIC_COLUMNS
from simulator.loop import ClosedLoop
from simulator.metrics.audit import Audit
from simulator.metrics.formulas import popularity_index
from simulator.metrics.leaderboard import leaderboard
from simulator.oracle import OracleAgent
from simulator.round import AgentFactory, attach_agent
from simulator.shared_log import SharedLog
from simulator.timeline import run_round, warm_started_loop


def headline_k(sc: Scenario) -> int:
    """The K the summaries lead with: the largest K below K_r (at K >= K_r a replay of the serving model says nothing)."""
    below = [k for k in sc.eval_ks if k < sc.cascade.k_retrieve]
    return max(below) if below else min(sc.eval_ks)


def summary_metrics(sc: Scenario) -> list[str]:
    """The headline metrics: the truth against the logs' replay and the offline estimate at the headline K, then concentration."""
    k = headline_k(sc)
    protocol = "holdout" if sc.evaluation.holdout_share > 0 else "shared"
    offline = [f"offline_{protocol}_recall@{k}", f"true_{protocol}_recall@{k}"]
    return [f"true_recall@{k}", f"onpolicy_replay_recall@{k}", *offline, "exposure_gini", "exposure_top1_share"]


def agent_catalogue() -> dict[str, str]:
    """Every runnable agent name with a one-line description."""
    names = dict(agents.list_agents())
    names["oracle"] = (OracleAgent.__doc__ or "").strip().splitlines()[0]
    return dict(sorted(names.items()))


def agent_factory(name: str, sc: Scenario, seed: int, device: torch.device) -> AgentFactory:
    """How a loop builds agent ``name``; ``oracle`` is the simulator's privileged reference."""
    if name == "oracle":
        return lambda loop: OracleAgent(loop.world, loop.sc, loop.intents)
    ctx = AgentContext.from_scenario(sc, seed, device)
    overrides = dict(sc.agents.get(name, {}))
    return lambda loop: agents.make_agent(name, ctx, **overrides)


def validate_agents(names: Sequence[str], sc: Scenario) -> list[str]:
    """Check agent names (and their scenario overrides) before anything is written."""
    known = agent_catalogue()
    if not names:
        raise ConfigError("agents: give at least one agent name")
    for name in names:
        if name not in known:
            raise ConfigError(f"agents: unknown agent {name!r}{did_you_mean(name, known)}; allowed: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"agents: duplicate names in {','.join(names)}")
    for name in sc.agents:
        if name not in known:
            raise ConfigError(f"agents.{name}: unknown agent in the scenario's [agents] tables; allowed: {', '.join(known)}")
    for name in names:
        if name != "oracle":
            overrides = dict(sc.agents.get(name, {}))
            _check_rates(name, overrides)
            try:
                agents.make_agent(name, AgentContext.from_scenario(sc, 0), **overrides)
            except (ValueError, TypeError) as err:
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise ConfigError(msg if msg.startswith("agents.") else f"agents.{name}: {msg}") from None
    return list(names)


def _check_rates(name: str, overrides: dict[str, Any]) -> None:
    """Learning rates get the range of ``training.lr``: a rate of 1e30 is a typo, not an experiment."""
    for key, value in overrides.items():
        if (key == "lr" or key.endswith("_lr")) and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not 0 < value <= 10:
                raise ConfigError(f"agents.{name}.{key}: must be in (0, 10], got {value!r}")


def resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device: must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Experiment:
    """A validated experiment request."""

    scenario: Scenario
    agents: tuple[str, ...]
    seeds: tuple[int, ...]
    device: torch.device
    save_logs: bool = False
    save_truth: bool = False  # the audit trail of every truth and offline metric (truth/<agent>__seed<s>/)

    def manifest(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.model_dump(mode="json"),
            "agents": list(self.agents),
            "seeds": list(self.seeds),
            "rounds": self.scenario.timeline.rounds,
            "device": str(self.device),
            "save_logs": self.save_logs,
            "save_truth": self.save_truth,
            "versions": package_versions(),
            "format": 1,
        }


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("cascadesim", "torch", "numpy", "pandas", "pyarrow", "simpy", "gymnasium", "pydantic"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def make_experiment(
    scenario: str | Scenario = "default",
    agent_names: Sequence[str] = ("random", "popular", "oracle", "bc"),
    seeds: int = 1,
    rounds: int | None = None,
    device: str = "cpu",
    save_logs: bool = False,
    save_truth: bool = False,
) -> Experiment:
    """Validate everything an experiment needs; raises a one-line ConfigError on bad input."""
    sc = load_scenario(scenario) if isinstance(scenario, str) else scenario
    if rounds is not None:
        if rounds < 1:
            raise ConfigError(f"rounds: must be >= 1, got {rounds}")
        sc = sc.with_overrides(timeline={"rounds": rounds})
    if not 1 <= seeds <= 10_000:
        raise ConfigError(f"seeds: must be in [1, 10000], got {seeds}")
    check_fits(sc)
    return Experiment(sc, tuple(validate_agents(agent_names, sc)), tuple(range(seeds)), resolve_device(device), save_logs, save_truth)


def prepare_run_dir(exp: Experiment, out: Path, resume: bool, force: bool) -> None:
    """Create ``out`` (or, with ``force``, replace the cascadesim run in it) and write the manifest (the gym path)."""
    final = check_out_path(out)
    if resume:
        raise RunDirError("--resume: this command cannot resume; rerun it")
    entries = [p for p in final.iterdir() if p.name != ".lock"] if final.is_dir() else []
    if entries and not force:
        raise RunDirError(f"--out: {out} already exists and is not empty; pass --force to replace it")
    if entries and not (final / "manifest.json").is_file():
        raise RunDirError(f"--force: {out} does not hold a cascadesim run (no manifest.json); refusing to replace it")
    if entries:
        shutil.rmtree(final)
    atomic_write_json(exp.manifest(), final / "manifest.json")


class SeedStart:
    """What every agent of a seed starts from, built once on first use: the warm-started loop and the shared log."""

    def __init__(self, sc: Scenario, seed: int, device: torch.device) -> None:
        self.sc, self.seed, self.device = sc, seed, device
        self._warm: ClosedLoop | None = None
        self._shared: SharedLog | None = None

    def warm(self) -> ClosedLoop:
        if self._warm is None:
            self._warm = warm_started_loop(self.sc, self.seed, self.device)
        return self._warm

    def shared_log(self) -> SharedLog | None:
        """The seed's common log (None when ``evaluation.shared_log`` is off)."""
        if self._shared is None and self.sc.evaluation.shared_log:
            self._shared = SharedLog(self.warm())
        return self._shared


def run_loop(exp: Experiment, agent: str, seed: int, run: RunDir | None, start: SeedStart, tick: Callable[[], None]) -> ClosedLoop:
    """Run (or continue) one closed loop to the last round, committing a checkpoint each round."""
    found = run.checkpoint(agent, seed) if run is not None else None
    _notify(tick, "loop", agent, seed)
    if found is not None:
        loop = ClosedLoop.load(str(found[0]))
        done = 1 + max((row["round"] for row in loop.rows), default=-1)
        if (loop.agent_name, loop.seed, done) != (agent, seed, found[1] + 1):
            raise RunDirError(
                f"checkpoint: {found[0]} holds {loop.agent_name} seed {loop.seed} after {done} rounds, not as the manifest says"
            )
        for _ in range(done):
            tick()
    else:
        loop = start.warm().copy()
        attach_agent(loop, agent_factory(agent, exp.scenario, seed, exp.device), agent)
        done = 0
    loop.shared_log, loop.save_truth = start.shared_log(), exp.save_truth and run is not None
    for r in range(done, exp.scenario.timeline.rounds):
        run_round(loop, r)
        if run is not None and exp.save_logs:
            write_round_logs(loop, run.path / "logs" / f"{agent}__seed{seed}", r)
        if run is not None and loop.audit is not None:
            write_round_truth(loop.audit, run.path / "truth" / f"{agent}__seed{seed}", r)
        if run is not None:
            run.commit(loop.save, agent, seed, r)
        tick()
        _notify(tick, "round_done", agent, seed, r, exp.scenario.timeline.rounds, loop.rows)
        stop_point()
    return loop


def _notify(tick: Callable[[], None], hook: str, *args: Any) -> None:
    """Call the progress reporter's optional ``hook`` (found through the tick, a bound method of it)."""
    method = getattr(getattr(tick, "__self__", None), hook, None)
    if method is not None:
        method(*args)


def write_round_truth(audit: Audit, folder: Path, r: int) -> None:
    """What round ``r``'s truth and offline metrics were computed from (``--save-truth``), one Parquet file per table."""
    for table, frame in audit.frames().items():
        atomic_write_parquet(frame, folder / table / f"round={r:05d}.parquet")


def write_round_logs(loop: ClosedLoop, folder: Path, r: int) -> None:
    """The observable log tables of round ``r`` as Parquet (one file per table and round)."""
    for table in ("requests", "impressions", "candidates", "sessions"):
        atomic_write_parquet(loop.log.frame(table, r), folder / table / f"round={r:05d}.parquet")
    atomic_write_parquet(loop.log.items_frame(r), folder / "items" / f"round={r:05d}.parquet")
    atomic_write_parquet(loop.log.users_frame(r), folder / "users" / f"round={r:05d}.parquet")


def loop_frame(loop: ClosedLoop, scenario: str, agent: str, seed: int) -> pd.DataFrame:
    frame = pd.DataFrame(loop.rows, columns=["round", "metric", "value"])
    frame.insert(0, "seed", seed)
    frame.insert(0, "agent", agent)
    frame.insert(0, "scenario", scenario)
    return frame[METRIC_COLUMNS]


def loop_timings(loop: ClosedLoop, agent: str, seed: int) -> pd.DataFrame:
    """Wall seconds of each fit of ``loop`` (``agent, seed, round, phase, seconds``); machine-dependent, so not a metric."""
    frame = pd.DataFrame(loop.timings, columns=["round", "phase", "seconds"])
    frame.insert(0, "seed", seed)
    frame.insert(0, "agent", agent)
    return frame


def add_popularity_index(frame: pd.DataFrame) -> pd.DataFrame:
    """CLRec's popularity index: mean exposed popularity over its max across the agents compared."""
    base = frame[frame.metric == "mean_exposed_popularity"]
    if base.empty:
        return frame
    rows = []
    for (sc, seed, rnd), grp in base.groupby(["scenario", "seed", "round"], sort=True):
        index = popularity_index(dict(zip(grp.agent, grp.value, strict=True)))
        rows += [
            {"scenario": sc, "agent": a, "seed": seed, "round": rnd, "metric": "popularity_index", "value": v} for a, v in index.items()
        ]
    return pd.concat([frame, pd.DataFrame(rows, columns=METRIC_COLUMNS)], ignore_index=True)


def run_experiment(
    exp: Experiment,
    out: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[int], Callable[[], None]] | None = None,
    keep_checkpoints: str = "last",
    workers: int = 1,
    threads: int = 1,
) -> pd.DataFrame:
    """Run every (agent, seed) loop of ``exp``; returns (and writes) the long-form metrics.

    Args:
        exp: a validated experiment.
        out: the run directory (None writes nothing).
        resume: continue the run in ``out`` from its verified checkpoints.
        force: replace the cascadesim run in ``out`` once this one has committed its first round.
        progress: ``total -> tick`` callback factory, ticked once per finished round.
        keep_checkpoints: ``all``, ``last`` (each loop's latest) or ``none`` (removed when the run completes).
        workers: loops run at once in spawned processes (1: in this process); the results do not depend on it.
        threads: torch threads of each worker process (``workers > 1`` only).

    Raises:
        RunDirError: ``out`` is in use, not a run, or its checkpoints do not match the manifest.
        Interrupted: SIGINT / SIGTERM arrived; everything up to the last round is committed.
    """
    if keep_checkpoints not in KEEP_CHOICES:
        raise ConfigError(f"--keep-checkpoints: must be one of {', '.join(KEEP_CHOICES)}, got {keep_checkpoints!r}")
    if out is None:
        return _run_all(exp, None, progress, workers, threads)
    manifest = exp.manifest()
    run = RunDir.resume(manifest, out, keep_checkpoints) if resume else RunDir.create(manifest, out, force, keep_checkpoints)
    with run:
        if run.manifest.get("complete"):
            return read_metrics(run.path / "metrics.parquet")
        metrics = _run_all(exp, run, progress, workers, threads)
        run.finish()
    return metrics


def _run_all(
    exp: Experiment, run: RunDir | None, progress: Callable[[int], Callable[[], None]] | None, workers: int = 1, threads: int = 1
) -> pd.DataFrame:
    tick = progress(len(exp.agents) * len(exp.seeds) * exp.scenario.timeline.rounds) if progress else (lambda: None)
    done: dict[tuple[int, str], tuple[pd.DataFrame, pd.DataFrame]] = {}

    def on_loop(seed: int, agent: str, frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
        done[(seed, agent)] = frames
        if run is not None:  # results so far are on disk after every finished loop
            _write_results(exp, run, done)

    if workers > 1:
        from scenarios.parallel import run_parallel

        run_parallel(exp, run, tick, workers, threads, on_loop)
    else:
        for seed in exp.seeds:
            start = SeedStart(exp.scenario, seed, exp.device)
            for agent in exp.agents:
                stop_point()
                loop = run_loop(exp, agent, seed, run, start, tick)
                on_loop(seed, agent, (loop_frame(loop, exp.scenario.name, agent, seed), loop_timings(loop, agent, seed)))
    return add_popularity_index(pd.concat([done[key][0] for key in _in_order(exp, done)], ignore_index=True))


def _in_order(exp: Experiment, done: dict[tuple[int, str], Any]) -> list[tuple[int, str]]:
    """The finished loops in the serial order (seed by seed, agents as given), whichever process ran them."""
    return [(seed, agent) for seed in exp.seeds for agent in exp.agents if (seed, agent) in done]


def _write_results(exp: Experiment, run: RunDir, done: dict[tuple[int, str], tuple[pd.DataFrame, pd.DataFrame]]) -> None:
    """metrics.parquet, leaderboard.parquet and timings.parquet of the loops finished so far."""
    keys = _in_order(exp, done)
    metrics = add_popularity_index(pd.concat([done[k][0] for k in keys], ignore_index=True))
    atomic_write_parquet(metrics, run.path / "metrics.parquet")
    atomic_write_parquet(leaderboard(metrics, headline_k(exp.scenario)), run.path / "leaderboard.parquet")
    atomic_write_parquet(pd.concat([done[k][1] for k in keys], ignore_index=True), run.path / "timings.parquet")


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(manifest, metrics)`` of a run directory; a one-line RunDirError if it is missing or corrupt."""
    run = Path(run_dir)
    manifest = read_json(run / "manifest.json", "manifest")
    return manifest, read_metrics(run / "metrics.parquet")


def summary(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per agent, the last round's mean over seeds of the headline metrics."""
    last = metrics[metrics["round"] == metrics["round"].max()]
    table = last[last.metric.isin(names)].pivot_table(index="agent", columns="metric", values="value", aggfunc="mean")
    return table.reindex(columns=[n for n in names if n in table.columns])
