"""The ``cascadesim`` command line: run, list, bench.

Bad input (an unknown scenario, agent or device, an impossible size, a run
directory that exists or is corrupt) prints one line ``error: <field>: <what is
allowed>`` and exits with status 2 before anything is written.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pandas as pd

from scenarios.signals import Interrupted
from simulator.checkpoint import RunDirError
from simulator.config import ConfigError
from simulator.guard import DivergenceError

_FIELD_MESSAGE = re.compile(r"^[a-z_]+\.[a-z_]+: ")  # "section.field: ..." is a user-facing one-line message


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _os_error(err: OSError) -> str:
    """One line for an I/O failure during a run: what failed, where, and that the run can be resumed."""
    where = f" writing {err.filename}" if err.filename else ""
    return f"disk: {err.strerror or type(err).__name__}{where}; what was committed is kept, free space and rerun with --resume"


class _Main(click.Group):
    """Click group whose usage errors are one line, like every other error of the tool."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        if not (sys.argv[1:] if args is None else list(args)):  # bare `cascadesim`: the help, not an error
            click.echo(self.get_help(click.Context(self, info_name=kwargs.get("prog_name", "cascadesim"))))
            sys.exit(0)
        try:
            return super().main(args, *rest, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.UsageError as err:
            _fail(err.format_message().replace("\n", " "))
        except click.exceptions.Abort:
            _fail("aborted")
        except (ConfigError, RunDirError, DivergenceError, FloatingPointError) as err:  # FloatingPointError: simulator.nn.check_finite
            _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except Interrupted as err:
            _fail(f"interrupted ({err}): stopped after the last committed round; continue with --resume", err.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted (SIGINT): stopped at once; continue with --resume", 130)
        except OSError as err:
            _fail(_os_error(err))
        except RuntimeError as err:
            if not _FIELD_MESSAGE.match(str(err)):
                raise  # a bug, not bad input: keep its traceback
            _fail(str(err).splitlines()[0])  # a size that only fails at run time, e.g. the live catalogue below K_r


@click.group(cls=_Main)
@click.version_option(package_name="cascadesim")
def main() -> None:
    """cascadesim: the feedback loop of cascade recommenders, measured against the truth."""


@main.command()
@click.option(
    "--scenario",
    default="default",
    show_default=True,
    help="a preset name (see `cascadesim list scenarios`) or the path of a scenario .toml file",
)
@click.option(
    "--agents",
    "agent_list",
    default="random,popular,oracle,bc",
    show_default=True,
    help="comma-separated agent names (see `cascadesim list agents`)",
)
@click.option("--seeds", default=1, show_default=True, type=int, help="number of seeds (0..N-1)")
@click.option("--rounds", default=None, type=int, help="override timeline.rounds")
@click.option("--out", default=None, help="run directory [default: runs/<scenario name>]")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]")
@click.option("--resume", is_flag=True, help="continue the interrupted run in --out (its checkpoints are verified first)")
@click.option("--force", is_flag=True, help="replace the cascadesim run in --out once this one has committed its first round")
@click.option("--save-logs", is_flag=True, help="also write the per-round log tables as Parquet")
@click.option(
    "--save-truth",
    is_flag=True,
    help="also write, per round, what every truth and offline metric was computed from (truth/<agent>__seed<s>/)",
)
@click.option(
    "--keep-checkpoints",
    "keep",
    default="last",
    show_default=True,
    type=click.Choice(["all", "last", "none"]),
    help="checkpoints kept: every round's, each loop's last (resumable), or none once the run completes",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(1, 1024),
    help="torch threads per process [default: CASCADESIM_THREADS, else OMP_NUM_THREADS, else cores // workers]",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="(agent, seed) loops run at once, each in its own process; results do not depend on it",
)
def run(**options: Any) -> None:
    """Run scenario x agents x seeds as closed loops; write manifest.json and metrics.parquet.

    Ctrl-C (SIGINT) or SIGTERM stops at the next committed round with one line and exit 130 / 143; --resume continues.
    """
    _run(RunRequest(**options))


@dataclass(frozen=True)
class RunRequest:
    """The options of ``cascadesim run``, as parsed."""

    scenario: str
    agent_list: str
    seeds: int
    rounds: int | None
    out: str | None
    device: str
    resume: bool
    force: bool
    save_logs: bool
    save_truth: bool
    keep: str
    threads: int | None
    workers: int


def _run(req: RunRequest) -> None:
    import torch

    from scenarios import signals
    from scenarios.experiment import make_experiment, run_experiment, summary_metrics
    from scenarios.progress import RunProgress, busy_note, choose_threads, header
    from scenarios.rundir import check_out_path

    if req.resume and req.force:
        raise ConfigError("--resume and --force: choose one")
    names = [a.strip() for a in req.agent_list.split(",") if a.strip()]
    exp = make_experiment(req.scenario, names, req.seeds, req.rounds, req.device, req.save_logs, req.save_truth)
    out_dir = Path(req.out) if req.out is not None else Path("runs") / exp.scenario.name
    check_out_path("" if req.out is not None and not req.out.strip() else out_dir)
    workers = min(req.workers, len(exp.agents) * len(exp.seeds))
    n_threads = choose_threads(req.threads, workers)
    torch.set_num_threads(n_threads)
    click.echo(header(exp, out_dir, n_threads, workers))
    if note := busy_note(n_threads, workers):
        click.echo(note)
    signals.install()
    progress = RunProgress(summary_metrics(exp.scenario)[0])
    metrics = run_experiment(
        exp, out_dir, req.resume, req.force, progress=progress, keep_checkpoints=req.keep, workers=workers, threads=n_threads
    )
    _report(exp, metrics, out_dir, req.keep)


def _report(exp: Any, metrics: pd.DataFrame, out_dir: Path, keep: str) -> None:
    """The end of a run: the summary table, where the results and the report are, the checkpoints kept."""
    from dashboards.report import write_report
    from scenarios.contrast import contrast_table, heading, legend, widest_gap
    from scenarios.experiment import summary_metrics

    _explain_nan(metrics)
    names = summary_metrics(exp.scenario)
    table = contrast_table(metrics, names)
    click.echo("\n" + heading(exp.scenario.name, int(metrics["round"].max()), exp.scenario.timeline.rounds, len(exp.seeds)))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        click.echo(table.to_string())
    if gap := widest_gap(metrics, names[0], names[1]):
        click.echo(gap)
    click.echo(legend([n for n in names if n in set(metrics.metric)]))
    click.echo(f"\nresults: {out_dir / 'metrics.parquet'}")
    click.echo(f"report: {write_report([out_dir])}")
    kept = sum(p.stat().st_size for p in (out_dir / "checkpoints").glob("*.pt"))
    click.echo(f"checkpoints: {kept / 2**20:.1f} MiB kept (--keep-checkpoints {keep})")


def _explain_nan(metrics: pd.DataFrame) -> None:
    """NaN metrics are undefined, not broken: say which and why, once."""
    nan = metrics[metrics["value"].isna()]
    if len(nan):
        names = sorted(set(nan["metric"]))
        click.echo(
            f"note: {len(names)} metric(s) are NaN in some rounds (e.g. {', '.join(names[:3])}): undefined there, "
            "typically because a round had no clicks or no exposures to measure (see `cascadesim list metrics`)",
            err=True,
        )


@main.command(name="list")
@click.argument("what", required=False, type=click.Choice(["scenarios", "agents", "metrics"]))
def list_cmd(what: str | None) -> None:
    """Show scenarios, agents and metrics with their definitions."""
    from scenarios.experiment import agent_catalogue
    from scenarios.presets import describe_scenarios
    from simulator.metrics.definitions import BETTER, METRICS

    better = {"higher": " [higher is better]", "lower": " [lower is better]", "zero": " [closer to 0 is better]", "none": ""}
    metrics = {name: text + better[BETTER[name]] for name, text in METRICS.items()}
    sections = {"scenarios": describe_scenarios(), "agents": agent_catalogue(), "metrics": metrics}
    for name, entries in sections.items():
        if what in (None, name):
            click.echo(f"{name}:")
            width = max(len(k) for k in entries)
            for key, text in entries.items():
                click.echo(f"  {key:<{width}}  {text}")


@main.command()
@click.option("--users", default=10_000, show_default=True, type=int)
@click.option("--items", default=10_000, show_default=True, type=int)
@click.option("--requests", default=10_000, show_default=True, type=int, help="requests served per repetition")
@click.option("--repeats", default=5, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
def bench(users: int, items: int, requests: int, repeats: int, device: str) -> None:
    """Time the serving loop (retrieval + ranking + exposure + logging) next to a NumPy floor."""
    from simulator.bench import run_bench

    click.echo(run_bench(users, items, requests, repeats, device).to_string())


def _register_plugins() -> None:
    """Commands that live with their packages (dashboards, the gym evaluation)."""
    from dashboards.cli import dashboard, report
    from scenarios.evaluate import evaluate_cmd

    main.add_command(report)
    main.add_command(dashboard)
    main.add_command(evaluate_cmd)
    from scenarios.cli_sweep import sweep_cmd, tune_cmd

    main.add_command(sweep_cmd)
    main.add_command(tune_cmd)


_register_plugins()

if __name__ == "__main__":
    main()
