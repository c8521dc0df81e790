"""Job commands over HTTP, the same for every kind: submit, jobs, status, result, cancel,
retry, steps, watch; and what other command groups use to follow a job and print its result.

No kind is named here: how a result is shown comes from the server's job-kind contract
(GET /v1/kinds: each kind's `view.text` names the result field that holds its main text).
"""
from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.base import (
    CliFailure,
    cli,
    duration,
    format_score,
    make_client,
    note,
    parse_params,
    plain,
    progress_text,
    short_time,
    stderr_console,
    stdout_console,
    usage_line,
    usage_tokens,
)
from api.client import TERMINAL_STATUSES, ApiError, ApiUnreachable, LongformClient

# ---- a job's result, shown as its kind declares ------------------------------------------------


def kind_views(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """{kind: view} from the server's GET /v1/kinds, asked once per command run."""
    obj = ctx.find_root().obj
    if "kind_views" not in obj:
        try:
            items = make_client(ctx).list_kinds()
        except ApiError:  # a server that lists no kinds: results are shown as JSON
            items = []
        obj["kind_views"] = {k["kind"]: k.get("view") or {} for k in items if isinstance(k, dict) and "kind" in k}
    return obj["kind_views"]


def result_text(ctx: click.Context, job: dict[str, Any], field: str | None = None) -> str | None:
    """The text to print raw: the asked field, else the field the job's kind declares as its
    main text (`view.text`) when it holds a string; None means print the result as JSON."""
    result = job.get("result")
    if not isinstance(result, dict):
        return None
    if field is not None:
        if field not in result:
            raise CliFailure(f"the result has no field '{field}' (fields: {', '.join(result) or 'none'})")
        value = result[field]
        return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    name = kind_views(ctx).get(job.get("kind"), {}).get("text")
    value = result.get(name) if name else None
    return value if isinstance(value, str) else None


def echo_result(ctx: click.Context, job: dict[str, Any], as_json: bool = False, field: str | None = None) -> None:
    text = None if as_json else result_text(ctx, job, field)
    if text is not None:
        click.echo(text)
    else:
        click.echo(json.dumps(job.get("result"), indent=2, ensure_ascii=False))


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


# ---- the commands ------------------------------------------------------------------------


@cli.command()
@click.argument("kind")
@click.option("--params", "params_json", metavar="JSON", help="Job parameters as a JSON object.")
@click.option("--params-file", type=click.Path(dir_okay=False, allow_dash=True), help="JSON file with the parameters ('-': stdin).")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="One parameter (value parsed as JSON if it can be); repeatable.")
@click.option("--priority", type=click.IntRange(0, 9), help="0 (first) .. 9 (last); default 5.")
@click.option("--idempotency-key", metavar="KEY", help="Submitting again with the same key returns the same job.")
@click.option("--prompt-set", metavar="NAME", help="A prompt set installed on the server (see `longform prompts list`).")
@click.option("--max-calls", type=click.IntRange(0), metavar="N",
              help="Budget: the most model calls the job may make (0: unlimited; default: the server's JOB_MAX_CALLS).")
@click.option("--max-tokens-total", type=click.IntRange(0), metavar="N",
              help="Budget: the most prompt + completion tokens (0: unlimited; default: JOB_MAX_TOKENS_TOTAL).")
@click.option("--wait", is_flag=True, help="Wait for the end and print the result.")
@click.option("--watch", is_flag=True, help="Show live progress, then print the result.")
@click.pass_context
def submit(ctx, kind, params_json, params_file, pairs, priority, idempotency_key, prompt_set, max_calls,
           max_tokens_total, wait, watch) -> None:
    """Submit a job of KIND (chat, write, summarize, booookscore, dataset, ...)."""
    params = parse_params(params_json, params_file, pairs)
    client = make_client(ctx)
    job, new = client.submit_job(kind, params, priority=priority, idempotency_key=idempotency_key,
                                 prompt_set=prompt_set, max_calls=max_calls, max_tokens_total=max_tokens_total)
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
        echo_result(ctx, final)
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
        ("prompts", f"set {job['prompt_set']}" if job.get("prompt_set") else None),
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
    echo_result(ctx, job, as_json=as_json, field=field)


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
@click.option("--mode", type=click.Choice(["reuse", "fresh"]),
              help="For steps stored by code that has changed since: reuse their stored outputs, or run them fresh.")
@click.option("--max-calls", type=click.IntRange(0), metavar="N",
              help="A new budget of model calls, counting those already made (0: unlimited).")
@click.option("--max-tokens-total", type=click.IntRange(0), metavar="N",
              help="A new budget of prompt + completion tokens, counting those already used (0: unlimited).")
@click.pass_context
def retry(ctx, job_id, mode, max_calls, max_tokens_total) -> None:
    """Run a failed or cancelled job again; finished steps are not redone."""
    try:
        job = make_client(ctx).retry_job(job_id, mode=mode, max_calls=max_calls, max_tokens_total=max_tokens_total)
    except ApiError as exc:
        stale = exc.data.get("stale_steps") if exc.status_code == 409 and isinstance(exc.data, dict) else None
        if not stale:
            raise
        raise CliFailure(stale_steps_message(job_id, f"{exc.detail} (HTTP {exc.status_code})", stale), 1) from None
    click.echo(f"job {job['id']}: {job['status']}")


@cli.command()
@click.argument("ids", metavar="JOB|doc:ID...", nargs=-1, required=True)
@click.pass_context
def delete(ctx, ids) -> None:
    """Delete finished jobs (with their steps, events, children and files), or documents given
    as doc:ID. A queued or running job is refused: cancel it first."""
    client = make_client(ctx)
    for item in ids:
        if item.startswith("doc:"):
            client.delete_document(item[4:])
            click.echo(f"document {item[4:]}: deleted")
        else:
            client.delete_job(item)
            click.echo(f"job {item}: deleted")


@cli.command()
@click.option("--older-than", "older_than", type=click.FloatRange(min=0, min_open=True), metavar="DAYS",
              help="Age in days of the finished jobs to delete (default: the server's RETENTION_DAYS).")
@click.pass_context
def purge(ctx, older_than) -> None:
    """Admin: delete finished jobs that ended more than DAYS ago, with their children and files."""
    answer = make_client(ctx).purge_jobs(older_than)
    for job_id in answer["purged"]:
        click.echo(job_id)
    note(f"purged {answer['count']} finished jobs older than {answer['older_than_days']:g} days")


def stale_steps_message(job_id: str, message: str, stale: list[Any]) -> str:
    """The server's refusal to retry over steps whose code changed: each step and what changed."""
    lines = [message, "steps stored by code that has changed since:"]
    for step in stale:
        step = step if isinstance(step, dict) else {"key": step}
        changed = step.get("changed") or []
        changed = ", ".join(map(str, changed)) if isinstance(changed, list) else str(changed)
        lines.append(f"  {step.get('key', '?')}" + (f": {changed}" if changed else ""))
    lines.append(f"run `longform retry {job_id} --mode reuse` to keep their stored outputs, "
                 "or `--mode fresh` to run them again")
    return "\n".join(lines)


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
