"""Click commands ``report`` and ``dashboard`` (registered into the ``cascadesim`` group with ``main.add_command``).

A missing or corrupt run directory raises :class:`simulator.checkpoint.RunDirError`
with a one-line message, which the ``cascadesim`` group prints as
``error: ...`` with exit status 2. Static export problems (no kaleido, no
Chrome/Chromium) are click usage errors, also one line.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR [RUN_DIR ...]")
@click.option("--out", default=None, help="HTML file [default: RUN_DIR/report.html for one run, ./report.html for several]")
@click.option(
    "--k",
    "k",
    default=None,
    type=int,
    help="recall cut-off K [default: the largest below the cascade's K_r, where logged recall is not ~1 by construction]",
)
@click.option("--images", default=None, metavar="DIR", help="also write every figure as a static image into DIR (needs kaleido + Chromium)")
@click.option("--image-format", default="svg", show_default=True, type=click.Choice(["svg", "png"]), help="format of --images")
def report(run_dirs: tuple[str, ...], out: str | None, k: int | None, images: str | None, image_format: str) -> None:
    """Write one self-contained HTML report (works offline) over one or several run directories."""
    from dashboards.report import export_images, write_report

    path = write_report(list(run_dirs), out, k)
    click.echo(f"report: {path}")
    if images is not None:
        try:
            written = export_images(list(run_dirs), images, image_format, k)
        except RuntimeError as err:
            raise click.UsageError(f"--images: {err}") from None
        click.echo(f"images: {len(written)} {image_format} file(s) in {Path(images)}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR [RUN_DIR ...]")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on (keep localhost unless you mean it)")
@click.option("--port", default=8050, show_default=True, type=click.IntRange(1, 65535), help="TCP port")
def dashboard(run_dirs: tuple[str, ...], host: str, port: int) -> None:
    """Serve an interactive app over run directories: choose runs, agents, metrics and rounds; compare runs side by side."""
    from dashboards.app import make_app

    app = make_app(list(run_dirs))
    click.echo(f"dashboard: http://{host}:{port}/ (Ctrl+C to stop)")
    app.run(host=host, port=port, debug=False)
