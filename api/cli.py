"""The `longform` command line.

Local commands work on the database directly (`db`, `keys`, `config`) or start processes
(`serve`, `worker`). Every other command talks to the REST API at LONGFORM_URL (default
http://HOST:PORT from the settings) and sends LONGFORM_API_KEY as a bearer token when set.

Output convention: what a command produces (a job id, a text, a table, JSON) goes to
stdout; notices, progress bars and scores of long-running commands go to stderr, so
`longform write "..." > essay.md` captures just the essay.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from agents.settings import Settings
from api.client import TERMINAL_STATUSES, ApiError, ApiUnreachable, LongformClient

# Commands that live in other packages, imported only when used (and listed only if present).
LAZY_COMMANDS = {"fake-llm": ("fakellm.cli", "fake_llm")}

# Result fields printed as plain text, in order of preference, when a result has no --field.
TEXT_FIELDS = ("text", "summary")


class CliFailure(click.ClickException):
    """An error shown as one message on stderr, with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class LongformGroup(click.Group):
    """Turns API and schema errors into messages and exit codes; adds the lazy commands."""

    def invoke(self, ctx: click.Context) -> Any:
        from db.schema import SchemaOutdated

        try:
            return super().invoke(ctx)
        except ApiUnreachable as exc:
            raise CliFailure(str(exc), 2) from None
        except ApiError as exc:
            raise CliFailure(f"{exc.detail} (HTTP {exc.status_code})", 1) from None
        except SchemaOutdated as exc:
            raise CliFailure(str(exc), 2) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name, (module, _) in LAZY_COMMANDS.items() if _module_exists(module)]
        return sorted([*super().list_commands(ctx), *lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[name]
            if _module_exists(module):
                command = getattr(importlib.import_module(module), attribute)
        return command


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package is missing
        return False


# ---- shared helpers -------------------------------------------------------------------


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except (TypeError, ValueError) as exc:
        raise CliFailure(f"invalid setting in the environment: {exc}", 2) from None


def stdout_console() -> Console:
    # Outside a terminal (pipes, tests) rich would wrap tables at 80 columns.
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def plain(*values: Any) -> list[Text]:
    """Table cells shown as they are (a step error like "[Errno 111]" is not rich markup)."""
    return [Text(str(value)) for value in values]


def note(message: str) -> None:
    """A notice on stderr (plain: no markup, no wrapping)."""
    click.echo(message, err=True)


def api_url(settings: Settings) -> str:
    url = os.environ.get("LONGFORM_URL", "").strip()
    if url:
        return url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", ""):  # a wildcard bind is reached on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def make_client(ctx: click.Context) -> LongformClient:
    settings = load_settings()
    client = LongformClient(ctx.obj.get("url") or api_url(settings), api_key=settings.api_key)
    ctx.call_on_close(client.close)
    return client


def check_schema(settings: Settings, upgrade: bool = False) -> None:
    """Refuse an outdated schema (SchemaOutdated -> exit 2 via the group), or upgrade it."""
    from db.schema import ensure_current

    ensure_current(settings.database_url, auto_upgrade=upgrade)


def short_time(value: str | None) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:  # stored times are UTC (SQLite drops the zone)
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def usage_tokens(job: dict[str, Any]) -> str:
    usage = job.get("usage")
    if not usage:
        return "-"
    return str(int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0))


def usage_line(usage: dict[str, Any] | None) -> str:
    if not usage:
        return "-"
    line = (
        f"{usage.get('steps', 0)} steps, {usage.get('calls', 0)} calls, "
        f"{usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens"
    )
    if usage.get("cached_tokens"):
        line += f", {usage['cached_tokens']} cached"
    return line


def format_score(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return "n/a" if value is None else str(value)


def progress_text(job: dict[str, Any]) -> str:
    text = f"{100 * float(job.get('progress') or 0):.0f}%"
    detail = job.get("progress_detail") or {}
    if isinstance(detail, dict) and detail.get("total"):
        text += f" ({detail.get('done', 0)}/{detail['total']})"
    return text


def parse_params(params_json: str | None, params_file: str | None, pairs: tuple[str, ...]) -> dict[str, Any]:
    """Merge --params / --params-file (a JSON object) with -p key=value pairs (pairs win).

    A pair's value is JSON when it parses (600, true, [..], {..}, "quoted"), else a plain string.
    """
    params: dict[str, Any] = {}
    if params_json is not None and params_file is not None:
        raise click.UsageError("use either --params or --params-file, not both")
    source = params_json
    if params_file is not None:
        source = click.open_file(params_file, encoding="utf-8").read()
    if source is not None:
        try:
            params = json.loads(source)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--params") from None
        if not isinstance(params, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--params")
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-p")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def result_text(result: Any, field: str | None = None) -> str | None:
    """The field to print raw: the asked one, else the first of TEXT_FIELDS that is a string."""
    if not isinstance(result, dict):
        return None
    if field is not None:
        if field not in result:
            raise CliFailure(f"the result has no field '{field}' (fields: {', '.join(result) or 'none'})")
        value = result[field]
        return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    for name in TEXT_FIELDS:
        if isinstance(result.get(name), str):
            return result[name]
    return None


def echo_result(job: dict[str, Any], as_json: bool = False, field: str | None = None) -> None:
    result = job.get("result")
    text = None if as_json else result_text(result, field)
    if text is not None:
        click.echo(text)
    else:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))


def require_succeeded(job: dict[str, Any]) -> None:
    if job["status"] == "succeeded":
        return
    message = f"job {job['id']} is {job['status']}"
    if job.get("error"):
        message += f": {job['error']}"
    elif job["status"] not in TERMINAL_STATUSES:
        message += ": no result yet (wait with `longform watch`)"
    raise CliFailure(message, 1)


def print_scores(job: dict[str, Any]) -> None:
    scores = job.get("scores") or {}
    if scores:
        note("scores: " + "  ".join(f"{name}={format_score(v)}" for name, v in sorted(scores.items())))


# ---- following a job --------------------------------------------------------------------

MAX_STREAM_FAILURES = 8  # reconnect attempts in a row before giving up (about 30 s of backoff)


def follow_job(client: LongformClient, job_id: str, console: Console | None = None) -> dict[str, Any]:
    """Follow the job's event stream with a progress bar until a terminal status; returns the final job.

    A dropped stream is resumed with Last-Event-ID, so no event is seen twice or missed.
    """
    console = console or stderr_console()
    job = client.get_job(job_id)
    if job["status"] in TERMINAL_STATUSES:
        return job
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}", markup=False),
    ]
    status = job["status"]
    detail = job.get("progress_detail") if isinstance(job.get("progress_detail"), dict) else {}
    last_event_id: str | None = None
    failures = 0
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"{job['kind']} {status}", total=detail.get("total") or None, completed=detail.get("done") or 0, detail="")
        while status not in TERMINAL_STATUSES:
            try:
                with contextlib.closing(client.job_events(job_id, last_event_id)) as events:
                    for event in events:
                        failures = 0
                        if event.id:
                            last_event_id = event.id
                        data = event.data if isinstance(event.data, dict) else {}
                        if event.event == "progress":
                            extra = " ".join(f"{k}={v}" for k, v in data.items() if k not in ("done", "total"))
                            bar.update(task, total=data.get("total") or None, completed=data.get("done") or 0, detail=extra)
                        elif event.event == "status" and data.get("status"):
                            if data["status"] != status:
                                status = data["status"]
                                bar.update(task, description=f"{job['kind']} {status}")
                            if status in TERMINAL_STATUSES:
                                break
                        elif event.event == "log":
                            bar.console.print(str(data.get("message", event.data)), style="dim", markup=False)
            except (ApiUnreachable, httpx.TransportError):
                failures += 1
                if failures > MAX_STREAM_FAILURES:
                    raise ApiUnreachable(client.base_url) from None
                time.sleep(min(8.0, 0.25 * 2**failures))
            if status not in TERMINAL_STATUSES:  # the stream ended early: check the job record, then resume
                status = client.get_job(job_id)["status"]
                if status not in TERMINAL_STATUSES:
                    time.sleep(0.2)
        final = client.get_job(job_id)
        if final["status"] == "succeeded":
            bar.update(task, completed=bar.tasks[0].total or 1, total=bar.tasks[0].total or 1)
    return final


def report_outcome(job: dict[str, Any]) -> None:
    took = duration(job.get("started_at"), job.get("finished_at"))
    line = f"job {job['id']} {job['status']}"
    if took is not None:
        line += f" in {took:.1f} s"
    if job.get("usage"):
        line += f" ({usage_line(job['usage'])})"
    if job.get("error"):
        line += f": {job['error']}"
    note(line)


def finish_with(ctx: click.Context, job: dict[str, Any]) -> None:
    """Exit 1 unless the job succeeded."""
    if job["status"] != "succeeded":
        ctx.exit(1)


def announce(job: dict[str, Any], new: bool) -> None:
    existing = "" if new else " (the existing job for this idempotency key)"
    note(f"{job['kind']} job {job['id']}: {job['status']}{existing}")


def submit_and_follow(
    ctx: click.Context, kind: str, params: dict[str, Any], *, watch: bool = True, **submit_kwargs
) -> dict[str, Any] | None:
    """Submit a job; with watch, follow it to the end and return the final job (None otherwise)."""
    client = make_client(ctx)
    job, new = client.submit_job(kind, params, **submit_kwargs)
    announce(job, new)
    if not watch:
        click.echo(job["id"])
        return None
    try:
        final = follow_job(client, job["id"])
    except KeyboardInterrupt:
        note(f"stopped following; the job goes on: `longform watch {job['id']}`")
        ctx.exit(130)
    report_outcome(final)
    return final


# ---- the command group ------------------------------------------------------------------


@click.group(cls=LongformGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="API base URL (default: LONGFORM_URL, else http://HOST:PORT).")
@click.version_option(package_name="longform", prog_name="longform")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """Longform: long-form writing and book summarization jobs on any OpenAI-compatible model."""
    ctx.ensure_object(dict)
    ctx.obj["url"] = url.rstrip("/") if url else None


def main() -> None:
    import api.cli_batch  # noqa: F401  (registers `eval` and `dataset`)

    cli(prog_name="longform")


# ---- processes ---------------------------------------------------------------------------


@cli.command()
@click.option("--host", help="Address to bind (default: HOST, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default: PORT, 8000).")
@click.option("--upgrade", is_flag=True, help="Upgrade an outdated database schema first.")
@click.option("--no-worker", is_flag=True, help="Do not run the embedded worker in this process.")
def serve(host: str | None, port: int | None, upgrade: bool, no_worker: bool) -> None:
    """Run the REST API (and, without BROKER_URL, the embedded worker)."""
    # The app reads its settings from the environment: pass the flags on that way.
    if host:
        os.environ["HOST"] = host
    if port:
        os.environ["PORT"] = str(port)
    if no_worker:
        os.environ["LONGFORM_NO_WORKER"] = "1"
    settings = load_settings()
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

    uvicorn.run("api.app:create_app", factory=True, host=settings.host, port=settings.port, log_level="info")


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
    from workers.celery_app import app

    app.worker_main(
        ["worker", "--pool", "threads", "--concurrency", str(concurrency or settings.worker_concurrency),
         "--loglevel", "INFO", "-Q", "longform"]
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config(as_json: bool) -> None:
    """Show the effective settings (secrets masked)."""
    view = load_settings().public_view()
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    width = max(len(name) for name in view)
    for name, value in view.items():
        click.echo(f"{name.ljust(width)} = {value}")


# ---- database ------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Upgrade the database schema to the newest version."""
    from db.schema import current_revision, head_revision, upgrade

    settings = load_settings()
    before = current_revision(settings.database_url)
    upgrade(settings.database_url)
    after, head = current_revision(settings.database_url), head_revision(settings.database_url)
    url = settings.public_view()["database_url"]
    if before == after:
        click.echo(f"{url}: already at {after} (head)")
    else:
        click.echo(f"{url}: upgraded from {before or 'empty'} to {after}" + ("" if after == head else f" (head is {head})"))


@db.command("current")
def db_current() -> None:
    """Show the schema version of the database and the one the code needs."""
    from db.schema import current_revision, head_revision

    settings = load_settings()
    current, head = current_revision(settings.database_url), head_revision(settings.database_url)
    click.echo(f"current: {current or 'none (empty database)'}")
    click.echo(f"head:    {head}")
    click.echo("up to date" if current == head else "outdated: run `longform db upgrade`")


# ---- API keys --------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """API keys (local database commands)."""


@contextlib.contextmanager
def local_session():
    from db.session import Database

    settings = load_settings()
    check_schema(settings)
    with Database(settings.database_url).session() as session:
        yield session


@keys.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="The key may see and manage every owner's jobs.")
def keys_create(name: str, admin: bool) -> None:
    """Create an API key; the key is printed once and never stored."""
    from db import repo

    with local_session() as session:
        plain, row = repo.create_api_key(session, name, is_admin=admin)
        key_id, prefix = row.id, row.prefix
    click.echo(plain)
    note(
        f"created {'admin ' if admin else ''}key {key_id} '{name}' (prefix {prefix}); "
        "it is shown only now: store it (e.g. LONGFORM_API_KEY)")


@keys.command("list")
def keys_list() -> None:
    """List API keys (prefixes only)."""
    from db import repo

    table = Table("id", "name", "prefix", "admin", "created", "last used", "revoked")
    with local_session() as session:
        for row in repo.list_api_keys(session):
            table.add_row(*plain(
                row.id, row.name, row.prefix, "yes" if row.is_admin else "",
                _db_time(row.created_at), _db_time(row.last_used_at), _db_time(row.revoked_at) if row.revoked_at else "",
            ))
    stdout_console().print(table)


@keys.command("revoke")
@click.argument("id_or_prefix")
def keys_revoke(id_or_prefix: str) -> None:
    """Revoke an API key by id or prefix."""
    from db import repo

    with local_session() as session:
        row = repo.revoke_api_key(session, id_or_prefix)
        if row is None:
            raise CliFailure(f"no API key with id or prefix '{id_or_prefix}'")
        click.echo(f"revoked key {row.id} '{row.name}' ({row.prefix})")


def _db_time(value: datetime | None) -> str:
    return short_time(value.isoformat()) if value is not None else "-"


# ---- jobs over HTTP ----------------------------------------------------------------------------


@cli.command()
@click.argument("kind")
@click.option("--params", "params_json", metavar="JSON", help="Job parameters as a JSON object.")
@click.option("--params-file", type=click.Path(dir_okay=False, allow_dash=True), help="JSON file with the parameters ('-': stdin).")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="One parameter (value parsed as JSON if it can be); repeatable.")
@click.option("--priority", type=click.IntRange(0, 9), help="0 (first) .. 9 (last); default 5.")
@click.option("--idempotency-key", metavar="KEY", help="Submitting again with the same key returns the same job.")
@click.option("--wait", is_flag=True, help="Wait for the end and print the result.")
@click.option("--watch", is_flag=True, help="Show live progress, then print the result.")
@click.pass_context
def submit(ctx, kind, params_json, params_file, pairs, priority, idempotency_key, wait, watch) -> None:
    """Submit a job of KIND (chat, write, summarize, booookscore, dataset, ...)."""
    params = parse_params(params_json, params_file, pairs)
    client = make_client(ctx)
    job, new = client.submit_job(kind, params, priority=priority, idempotency_key=idempotency_key)
    click.echo(job["id"])
    announce(job, new)
    if not (wait or watch):
        return
    try:
        final = follow_job(client, job["id"]) if watch else client.wait_job(job["id"])
    except KeyboardInterrupt:
        note(f"stopped waiting; the job goes on: `longform watch {job['id']}`")
        ctx.exit(130)
    report_outcome(final)
    if final["status"] == "succeeded":
        echo_result(final)
    finish_with(ctx, final)


@cli.command()
@click.option("--status", help="Filter by status (comma-separated: queued,running,...).")
@click.option("--kind", help="Filter by kind.")
@click.option("--parent", "parent_id", help="Only the children of this job (dataset builds).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON page.")
@click.pass_context
def jobs(ctx, status, kind, parent_id, limit, offset, as_json) -> None:
    """List jobs, newest first."""
    page = make_client(ctx).list_jobs(status=status, kind=kind, parent_id=parent_id, limit=limit, offset=offset)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    table = Table("id", "kind", "status", "progress", "created", "tokens", caption=_page_caption(page))
    for job in page["items"]:
        table.add_row(*plain(job["id"], job["kind"], job["status"], progress_text(job), short_time(job.get("created_at")), usage_tokens(job)))
    stdout_console().print(table)


def _page_caption(page: dict[str, Any]) -> str:
    shown = len(page["items"])
    if not shown:
        return f"no jobs (total {page['total']})"
    first = page["offset"] + 1
    return f"{first}-{first + shown - 1} of {page['total']}"


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Print the job JSON.")
@click.pass_context
def status(ctx, job_id, as_json) -> None:
    """Show a job: status, progress, error, usage, scores."""
    job = make_client(ctx).get_job(job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2, ensure_ascii=False))
        return
    took = duration(job.get("started_at"), job.get("finished_at"))
    rows = [
        ("id", job["id"]),
        ("kind", job["kind"]),
        ("status", job["status"]),
        ("progress", progress_text(job)),
        ("priority", job.get("priority")),
        ("parent", job.get("parent_id")),
        ("created", short_time(job.get("created_at"))),
        ("started", short_time(job.get("started_at"))),
        ("finished", short_time(job.get("finished_at")) + (f" (took {took:.1f} s)" if took is not None else "")),
        ("error", job.get("error")),
        ("usage", usage_line(job.get("usage"))),
        ("scores", "  ".join(f"{k}={format_score(v)}" for k, v in sorted((job.get("scores") or {}).items())) or None),
    ]
    detail = job.get("progress_detail")
    if isinstance(detail, dict):
        extra = {k: v for k, v in detail.items() if k not in ("done", "total")}
        if extra:
            rows.insert(4, ("stage", " ".join(f"{k}={v}" for k, v in extra.items())))
    for name, value in rows:
        if value is not None and value != "":
            click.echo(f"{name:<9} {value}")


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--field", help="Print one field of the result (strings raw).")
@click.pass_context
def result(ctx, job_id, as_json, field) -> None:
    """Print a job's result (its text when it has one, else JSON)."""
    job = make_client(ctx).get_job(job_id)
    require_succeeded(job)
    echo_result(job, as_json=as_json, field=field)


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.pass_context
def cancel(ctx, job_id) -> None:
    """Cancel a job (a running one stops at its next step)."""
    job = make_client(ctx).cancel_job(job_id)
    note = "" if job["status"] in TERMINAL_STATUSES else " (cancel requested; it stops at its next step)"
    click.echo(f"job {job['id']}: {job['status']}{note}")


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.pass_context
def retry(ctx, job_id) -> None:
    """Run a failed or cancelled job again; finished steps are not redone."""
    job = make_client(ctx).retry_job(job_id)
    click.echo(f"job {job['id']}: {job['status']}")


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
@click.pass_context
def steps(ctx, job_id, as_json) -> None:
    """List a job's steps: key, status, attempt, tokens, latency, model."""
    items = make_client(ctx).job_steps(job_id)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    table = Table("key", "status", "attempt", "tokens in/out", "latency", "model", caption=f"{len(items)} steps")
    for step in items:
        tokens = f"{step.get('prompt_tokens', 0)}/{step.get('completion_tokens', 0)}"
        latency = f"{step['latency_s']:.2f} s" if step.get("latency_s") is not None else "-"
        key = step["key"] + (f" ({step['error']})" if step.get("error") else "")
        table.add_row(*plain(key, step["status"], step.get("attempt", ""), tokens, latency, step.get("model") or "-"))
    stdout_console().print(table)


@cli.command()
@click.argument("job_id", metavar="JOB")
@click.pass_context
def watch(ctx, job_id) -> None:
    """Follow a job's progress live until it ends (exit 1 unless it succeeded)."""
    client = make_client(ctx)
    try:
        final = follow_job(client, job_id)
    except KeyboardInterrupt:
        note("stopped watching; the job goes on")
        ctx.exit(130)
    report_outcome(final)
    finish_with(ctx, final)


# ---- documents and method shortcuts ------------------------------------------------------------


def read_utf8(path: str) -> bytes:
    """The file's bytes, refused with a clear message unless they are UTF-8 text."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliFailure(
            f"{path} is not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it first, e.g. `iconv -f latin1 -t utf-8`",
            1,
        ) from None
    return data


def upload_file(client: LongformClient, path: str, name: str | None, strip_gutenberg: bool) -> dict[str, Any]:
    """Upload a UTF-8 file and say so on stderr; returns the document."""
    document, new = client.upload_document(read_utf8(path), name=name or Path(path).name, strip_gutenberg=strip_gutenberg)
    stored = "uploaded" if new else "already stored"
    stripped = ", Project Gutenberg header and licence removed" if document.get("gutenberg_stripped") else ""
    note(f"document {document['id']} {stored}: {document['words']} words, {document['tokens']} tokens{stripped}")
    return document


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="Document name (default: the file name).")
@click.option("--strip-gutenberg", is_flag=True, help="Remove a Project Gutenberg header and licence.")
@click.pass_context
def upload(ctx, file, name, strip_gutenberg) -> None:
    """Upload a UTF-8 text document; prints its id, words and tokens."""
    document = upload_file(make_client(ctx), file, name, strip_gutenberg)
    click.echo(f"{document['id']}\t{document['words']} words\t{document['tokens']} tokens")


def resolve_document(client: LongformClient, source: str, strip_gutenberg: bool) -> str:
    """`doc:ID` names a stored document; anything else is a file to upload."""
    if source.startswith("doc:"):
        return client.get_document(source[4:])["id"]
    if not Path(source).is_file():
        raise click.BadParameter(f"no such file: {source} (use doc:ID for a stored document)", param_hint="FILE")
    return upload_file(client, source, None, strip_gutenberg)["id"]


@cli.command()
@click.argument("source", metavar="FILE")
@click.option("--method", type=click.Choice(["hierarchical", "incremental"]), default="hierarchical", show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), help="Tokens per chunk.")
@click.option("--words", type=click.IntRange(min=1), help="Target length of the summary in words.")
@click.option("--strip-gutenberg", is_flag=True, help="Remove a Project Gutenberg header and licence before uploading.")
@click.option("--score", is_flag=True, help="Also score the summary's coherence (BooookScore).")
@click.option("--no-watch", is_flag=True, help="Submit, print the job id and return.")
@click.pass_context
def summarize(ctx, source, method, chunk_size, words, strip_gutenberg, score, no_watch) -> None:
    """Summarize a book: FILE is a UTF-8 text file or doc:ID."""
    client = make_client(ctx)
    params: dict[str, Any] = {"document_id": resolve_document(client, source, strip_gutenberg), "method": method, "score": score}
    if chunk_size:
        params["chunk_size"] = chunk_size
    if words:
        params["target_words"] = words
    if strip_gutenberg and source.startswith("doc:"):  # a stored document is stripped when the job runs
        params["strip_gutenberg"] = True
    final = submit_and_follow(ctx, "summarize", params, watch=not no_watch)
    if final is None:
        return
    if final["status"] == "succeeded":
        echo_result(final)
        print_scores(final)
        coherence = (final.get("result") or {}).get("booookscore")
        if isinstance(coherence, dict) and coherence.get("skipped"):
            note(f"BooookScore skipped: {coherence['skipped']}")
        elif isinstance(coherence, dict):
            print_booookscore(coherence, err=True)
    finish_with(ctx, final)


@cli.command()
@click.argument("target", metavar="JOB_OR_FILE")
@click.option("--mode", type=click.Choice(["per_sentence", "batched"]), help="One judge call per sentence, or batches.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Sentences per judge call in batched mode.")
@click.pass_context
def booookscore(ctx, target, mode, batch_size) -> None:
    """Score a summary's coherence: a summarize job's result, or a text file."""
    client = make_client(ctx)
    if Path(target).is_file():
        params: dict[str, Any] = {"document_id": upload_file(client, target, None, False)["id"]}
    else:
        params = {"job_id": target}
    if mode:
        params["mode"] = mode
    if batch_size:
        params["batch_size"] = batch_size
    final = submit_and_follow(ctx, "booookscore", params)
    if final["status"] == "succeeded":
        print_booookscore(final.get("result") or {})
    finish_with(ctx, final)


def print_booookscore(result: dict[str, Any], err: bool = False) -> None:
    """The score, then each flagged sentence with its error types and the judge's questions."""

    def say(line: str) -> None:
        click.echo(line, err=err)

    flagged = [f for f in result.get("flagged") or [] if isinstance(f, dict)]
    line = f"BooookScore: {format_score(result.get('score'))}"
    if result.get("scored") is not None:
        line += f" ({len(flagged)} of {result['scored']} judged sentences flagged"
        if result.get("unparseable"):
            line += f"; {len(result['unparseable'])} left unjudged: the judge's verdicts never parsed"
        line += ")"
    if result.get("mode"):
        line += f" [{result['mode']}]"
    say(line)
    for item in flagged:
        types = item.get("types") or []
        label = ", ".join(types) if isinstance(types, list) else str(types)
        say(f"- [{label or 'unlabelled'}] {item.get('sentence', '')}")
        questions = item.get("questions")
        for question in (questions if isinstance(questions, list) else [questions]) if questions else []:
            say(f"    ? {question}")
    counts = {k: v for k, v in (result.get("type_counts") or {}).items() if v}
    if counts:
        say("types: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))


@cli.command()
@click.argument("instruction")
@click.option("--words", type=click.IntRange(min=1), help="Target length in words.")
@click.option("--method", type=click.Choice(["agentwrite", "single"]), default="agentwrite", show_default=True)
@click.option("--no-watch", is_flag=True, help="Submit, print the job id and return.")
@click.pass_context
def write(ctx, instruction, words, method, no_watch) -> None:
    """Write a long text following INSTRUCTION; prints the text, then its scores on stderr."""
    params: dict[str, Any] = {"instruction": instruction, "method": method}
    if words:
        params["target_words"] = words
    final = submit_and_follow(ctx, "write", params, watch=not no_watch)
    if final is None:
        return
    if final["status"] == "succeeded":
        echo_result(final)
        print_write_scores(final)
    finish_with(ctx, final)


def print_write_scores(job: dict[str, Any]) -> None:
    """Length and scores of a write job, on stderr: words (target), S_l, S_q, S."""
    result = job.get("result") or {}
    words = result.get("word_count")
    if words is None and isinstance(result.get("text"), str):
        from agents.text import count_words

        words = count_words(result["text"])
    target = result.get("target_words") or (job.get("params") or {}).get("target_words")
    note(f"words: {words}" + (f" (target {target})" if target else ""))
    scores = result.get("scores") if isinstance(result.get("scores"), dict) else job.get("scores") or {}
    shown = [f"{name}={format_score(scores.get(name))}" for name in ("S_l", "S_q", "S") if name in scores]
    shown += [f"{k}={format_score(v)}" for k, v in sorted(scores.items()) if k not in ("S_l", "S_q", "S") and isinstance(v, (int, float))]
    if shown:
        status = scores.get("quality_status")
        note("scores: " + "  ".join(shown) + (f"  (quality: {status})" if status and scores.get("S_q") is None else ""))


if __name__ == "__main__":
    main()
