"""``cascadesim evaluate``: run agents through the gymnasium environments, into the runner's run directory.

Each (seed, agent) is one episode of :class:`~simulator.gym.vector.CascadeVectorEnv`
with the agent plugged in by :class:`~simulator.gym.policy.AgentPolicy`: it acts
on the observations, the environment refits it at every retrain point. The
vector environment has as many lanes as the busiest traffic slice, so each step
is one slice of the runner's timeline, served by the same code with the same
random streams: the metrics equal those of ``cascadesim run`` for the same
scenario, agents and seeds, and are written the same way (``manifest.json`` and
``metrics.parquet``, atomically, after every finished episode).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click
import pandas as pd
from tqdm import tqdm

from scenarios.experiment import (
    Experiment,
    add_popularity_index,
    agent_factory,
    loop_frame,
    make_experiment,
    prepare_run_dir,
    summary,
    summary_metrics,
)
from simulator.checkpoint import atomic_write_json, atomic_write_parquet, read_json
from simulator.config import ConfigError
from simulator.gym import AgentPolicy, CascadeVectorEnv, max_slice_volume


def evaluate_agent(env: CascadeVectorEnv, exp: Experiment, agent: str, seed: int, tick: Callable[[], None] = lambda: None) -> pd.DataFrame:
    """One episode of ``agent`` on the world of ``seed``; its metrics in the runner's long form."""
    policy = AgentPolicy(env, agent_factory(agent, exp.scenario, seed, exp.device), agent)
    obs, _ = env.reset(seed=seed)
    while True:
        obs, _, _, truncated, info = env.step(policy(obs))
        if info["retrain"].any():  # vector info: one flag per lane
            tick()
        if truncated.all():
            break
    assert env.core.loop is not None
    return loop_frame(env.core.loop, exp.scenario.name, agent, seed)


def evaluate(
    exp: Experiment, out: str | Path | None = None, force: bool = False, progress: Callable[[int], Callable[[], None]] | None = None
) -> pd.DataFrame:
    """Run every (agent, seed) of ``exp`` through the gym path; returns (and writes) the long-form metrics.

    Args:
        exp: a validated experiment (:func:`scenarios.experiment.make_experiment`).
        out: the run directory (``manifest.json``, ``metrics.parquet``); None writes nothing.
        force: replace an existing, non-empty ``out``.
        progress: ``total -> tick`` callback factory, ticked once per finished round.

    Returns:
        ``scenario, agent, seed, round, metric, value``: the frame ``cascadesim run`` returns for ``exp``.
    """
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        prepare_run_dir(exp, out_path, resume=False, force=force)
        manifest = read_json(out_path / "manifest.json", "manifest")
        atomic_write_json({**manifest, "path": "gymnasium"}, out_path / "manifest.json")
    tick = progress(len(exp.agents) * len(exp.seeds) * exp.scenario.timeline.rounds) if progress else (lambda: None)
    frames = []
    for seed in exp.seeds:
        env = CascadeVectorEnv(num_envs=max_slice_volume(exp.scenario), scenario=exp.scenario, action="ids+scores", device=str(exp.device))
        for agent in exp.agents:
            frames.append(evaluate_agent(env, exp, agent, seed, tick))
            if out_path is not None:
                atomic_write_parquet(add_popularity_index(pd.concat(frames, ignore_index=True)), out_path / "metrics.parquet")
        env.close()
    return add_popularity_index(pd.concat(frames, ignore_index=True))


def _progress(total: int) -> Callable[[], None]:
    bar = tqdm(total=total, desc="rounds", unit="round", file=sys.stderr, dynamic_ncols=True, disable=None)
    return lambda: bar.update(1)


@click.command(name="evaluate")
@click.option("--scenario", default="default", show_default=True, help="preset name or path to a .toml file")
@click.option("--agents", "agent_list", default="random,popular,oracle,bc", show_default=True, help="comma-separated agent names")
@click.option("--seeds", default=1, show_default=True, type=int, help="number of seeds (0..N-1)")
@click.option("--rounds", default=None, type=int, help="override timeline.rounds")
@click.option("--out", default=None, help="run directory [default: runs/<scenario>-gym]")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]")
@click.option("--force", is_flag=True, help="replace an existing --out")
def evaluate_cmd(scenario: str, agent_list: str, seeds: int, rounds: int | None, out: str | None, device: str, force: bool) -> None:
    """Run agents through the gymnasium environment; write manifest.json and metrics.parquet like `run`."""
    names = [a.strip() for a in agent_list.split(",") if a.strip()]
    exp = make_experiment(scenario, names, seeds, rounds, device)
    out_dir = Path(out) if out else Path("runs") / f"{exp.scenario.name}-gym"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out: {out_dir} is a file, not a directory")
    metrics = evaluate(exp, out_dir, force=force, progress=_progress)
    table = summary(metrics, summary_metrics(exp.scenario))
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        head = f"{exp.scenario.name} (gym): round {int(metrics['round'].max())}, mean over {len(exp.seeds)} seed(s)"
        click.echo(f"\n{head}\n{table.to_string()}")
    click.echo(f"\nresults: {out_dir / 'metrics.parquet'}")
