"""The `longform` command group and what every command group shares: errors and exit codes,
settings, the API client, output helpers.

Each command module does `from api.cli.base import cli` and decorates its commands onto this
group; `api/cli/__init__.py` imports those modules. Nothing here imports a command module.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from datetime import datetime, timezone
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from agents.settings import Settings
from api.client import ApiError, ApiUnreachable, LongformClient

# Commands that live in other packages, imported only when used (and listed only if present).
LAZY_COMMANDS = {"fake-llm": ("fakellm.cli", "fake_llm")}


class CliFailure(click.ClickException):
    """An error shown as one message on stderr, with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        from agents.redact import redact

        super().__init__(redact(message))  # e.g. a database error that quotes its URL
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


@click.group(cls=LongformGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="API base URL (default: LONGFORM_URL, else http://HOST:PORT).")
@click.option("--config", "config_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="A TOML file of settings (default: LONGFORM_CONFIG); the environment overrides it.")
@click.version_option(package_name="longform", prog_name="longform")
@click.pass_context
def cli(ctx: click.Context, url: str | None, config_file: str | None) -> None:
    """Longform: long-form writing and book summarization jobs on any OpenAI-compatible model."""
    ctx.ensure_object(dict)
    ctx.obj["url"] = url.rstrip("/") if url else None
    ctx.obj["config"] = config_file


# ---- settings and the API client ----------------------------------------------------------


def _root_obj() -> dict[str, Any] | None:
    """The command run's shared dict (the root context's obj), if there is one."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return root.obj if root is not None and isinstance(root.obj, dict) else None


def load_settings(**overrides: Any) -> Settings:
    """The settings of this command: flags (`overrides`), the environment, the config file
    (`--config`, else LONGFORM_CONFIG), defaults. Read once per command."""
    obj = _root_obj()
    cached = obj.get("settings") if obj is not None else None
    if cached is not None and not overrides:
        return cached
    config_file = obj.get("config") if obj is not None else None
    try:
        settings = Settings.load(config_file, **overrides)
    except (TypeError, ValueError) as exc:
        raise CliFailure(f"invalid setting: {exc}", 2) from None
    from agents.redact import protect

    protect(settings)
    if obj is not None:
        obj["settings"] = settings
    return settings


def api_url(settings: Settings) -> str:
    url = settings.longform_url.strip()
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
    """This command's API client, made once per command run. Making it checks that the API
    answers (one GET /healthz), so a command stops before doing anything when it does not:
    ApiUnreachable, shown by the group with exit code 2."""
    root = ctx.find_root()
    client = root.obj.get("client")
    if client is None:
        settings = load_settings()
        client = LongformClient(root.obj.get("url") or api_url(settings), api_key=settings.api_key)
        root.call_on_close(client.close)
        client.ping()
        root.obj["client"] = client
    return client


def check_schema(settings: Settings, upgrade: bool = False) -> None:
    """Refuse an outdated schema (SchemaOutdated -> exit 2 via the group), or upgrade it."""
    from db.schema import ensure_current

    ensure_current(settings.database_url, auto_upgrade=upgrade)


# ---- output ---------------------------------------------------------------------------------


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
