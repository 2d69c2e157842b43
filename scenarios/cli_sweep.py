"""The ``cascadesim sweep`` and ``cascadesim tune`` commands (registered by :mod:`scenarios.cli`).

Bad input is a one-line ``error: <field>: <what is allowed>`` with exit status 2
(raised as ConfigError and printed by the main group); failed cells do not stop a
sweep, which then ends with a one-line summary and exit status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from simulator.config import ConfigError

_RAY_HELP = "run the cells on Ray: 'auto' (an existing cluster), 'local' (start one here) or an address"


def _check_ray(address: str | None) -> None:
    if address is None:
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--ray: Ray is not installed; pip install 'cascadesim[ray]' (or 'ray[default]')") from None


@click.command(name="sweep")
@click.argument("spec_file", metavar="SPEC.toml")
@click.option("--workers", default=1, show_default=True, type=int, help="local worker processes (1: run in this process)")
@click.option("--ray", "ray_address", default=None, help=_RAY_HELP)
@click.option("--out", default=None, help="sweep directory [default: sweeps/<spec name>]")
@click.option("--resume", is_flag=True, help="reuse the finished cells in --out and run the rest")
@click.option("--threads", default=None, type=int, help="torch threads per cell [default: the spec's, else cores // workers]")
def sweep_cmd(spec_file: str, workers: int, ray_address: str | None, out: str | None, resume: bool, threads: int | None) -> None:
    """Run a grid of scenario fields x agents x seeds; merge the cells into results.parquet."""
    from scenarios.sweep import load_spec, run_sweep

    _check_ray(ray_address)
    spec = load_spec(spec_file)
    out_dir = Path(out) if out else Path("sweeps") / spec.name
    result = run_sweep(spec, out_dir, workers=workers, ray=ray_address, resume=resume, threads=threads)
    click.echo(result.summary())
    click.echo(f"results: {out_dir / 'results.parquet'}")
    if result.failed:
        sys.exit(1)


@click.command(name="tune")
@click.argument("spec_file", metavar="SPEC.toml")
@click.option("--workers", default=1, show_default=True, type=int, help="local worker processes (1: run in this process)")
@click.option("--ray", "ray_address", default=None, help=_RAY_HELP)
@click.option("--out", default=None, help="tune directory [default: tunes/<spec name>]")
@click.option("--resume", is_flag=True, help="reuse the trial cells already in --out")
@click.option("--threads", default=None, type=int, help="torch threads per cell [default: the spec's, else cores // workers]")
def tune_cmd(spec_file: str, workers: int, ray_address: str | None, out: str | None, resume: bool, threads: int | None) -> None:
    """Give every agent the same budget of optuna (TPE) trials on validation seeds; write the best configs as TOML."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError("tune: optuna is not installed; pip install 'cascadesim[tune]'") from None
    from scenarios.tune import load_tune_spec, run_tune

    _check_ray(ray_address)
    spec = load_tune_spec(spec_file)
    out_dir = Path(out) if out else Path("tunes") / spec.name
    best = run_tune(spec, out_dir, workers=workers, ray=ray_address, resume=resume, threads=threads)
    for line in best.lines():
        click.echo(line)
    click.echo(f"best configs: {best.path}  (use: cascadesim run --scenario {best.path}, or agents_from in a sweep spec)")
