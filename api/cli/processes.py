"""Process commands: `serve` (the REST API and the embedded worker), `worker` (Celery),
`config` (the effective settings). `fake-llm` is a lazy command (see base.LAZY_COMMANDS)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from api.cli.base import CliFailure, check_schema, cli, load_settings, note


@cli.command()
@click.option("--host", help="Address to bind (default: HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: PORT, 8000).")
@click.option("--upgrade", is_flag=True, help="Upgrade an outdated database schema first.")
@click.option("--no-worker", is_flag=True, help="Do not run the embedded worker in this process.")
def serve(host: str | None, port: int | None, upgrade: bool, no_worker: bool) -> None:
    """Run the REST API (and, without BROKER_URL, the embedded worker)."""
    settings = load_settings(host=host, port=port, longform_no_worker=no_worker or None)
    check_schema(settings, upgrade)
    from api.auth import is_loopback

    if not is_loopback(settings.host):
        note(
            f"notice: binding to {settings.host}, reachable from other machines: every request needs an API key "
            "(create one with `longform keys create NAME`)"
        )
    if settings.broker_url:
        note("jobs go to the Celery broker: run `longform worker` to execute them")
    elif no_worker:
        note("embedded worker disabled: queued jobs wait until a server with a worker runs")
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@cli.command()
@click.option("--concurrency", type=click.IntRange(min=1), help="Jobs at once (default: WORKER_CONCURRENCY).")
@click.option("--upgrade", is_flag=True, help="Upgrade an outdated database schema first.")
def worker(concurrency: int | None, upgrade: bool) -> None:
    """Run a Celery worker (production mode, needs BROKER_URL)."""
    settings = load_settings()
    check_schema(settings, upgrade)
    if not settings.broker_url:
        raise CliFailure(
            "the embedded worker runs inside `longform serve`; set BROKER_URL to run Celery workers", 2
        )
    from workers.celery_app import configure

    lower_cpu_priority(settings.worker_nice)
    configure(settings).worker_main(
        ["worker", "--pool", "threads", "--concurrency", str(concurrency or settings.worker_concurrency),
         "--loglevel", "INFO", "-Q", "longform"]
    )


def lower_cpu_priority(nice: int) -> None:
    """Make this process yield the CPU to others by `nice`. Linux schedules each session
    (autogroup) fairly first, so a worker started in its own session also raises its
    session's nice, or it would still compete with the API as an equal."""
    if nice <= 0:
        return
    os.nice(nice)
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():
        try:
            autogroup.write_text(str(nice))
        except OSError:  # autogroups off, or not ours to change: the process nice still applies
            pass


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {name: {value, source}}.")
def config(as_json: bool) -> None:
    """Show the effective settings (secrets masked) and where each came from: env NAME,
    file PATH or default."""
    settings = load_settings()
    view, sources = settings.public_view(), settings.sources
    if as_json:
        click.echo(json.dumps({name: {"value": value, "source": sources[name]} for name, value in view.items()}, indent=2))
        return
    width = max(len(name) for name in view)
    value_width = min(60, max(len(str(value)) for value in view.values()))
    for name, value in view.items():
        click.echo(f"{name.ljust(width)} = {str(value).ljust(value_width)}  ({sources[name]})")
