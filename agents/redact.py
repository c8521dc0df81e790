"""Keeping secrets out of text that leaves the process: logs, stored job errors, events, API errors.

Two layers, because neither alone is enough:
- patterns: `Bearer <token>`, Longform's own `lf_...` API keys, and the password of any
  `scheme://user:password@host` URL, whoever wrote them (a model server that echoes the request's
  Authorization header in its error, a driver that prints its connection URL);
- known values: the secrets this process was configured with (LLM_API_KEY, JUDGE_API_KEY, the
  CLI's API_KEY, ADMIN_SESSION_SECRET, database and broker passwords), registered at start-up
  with `register`, replaced wherever they appear (a server may echo a bare key, without "Bearer").

`install_log_redaction` makes every log record of the process pass through `redact`, and
`install_traceback_redaction` every traceback Python itself prints for an uncaught exception
(in the main thread or another), which bypasses logging.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

MASK = "****"
# Shorter values are not registered: replacing "abc" everywhere would garble logs and hide nothing.
MIN_SECRET_LENGTH = 8
_PLACEHOLDERS = {"", "EMPTY", "none", "None", "x"}

# A credential after an auth scheme: token68 characters, at least 8 ("a basic summary" stays).
_BEARER = re.compile(r"\b([Bb]earer|BEARER|Basic|BASIC)(\s+|%20|\+)[A-Za-z0-9._~+/=\-]{8,}")
_HEADER_KEY = re.compile(r"(?i)\b(x-api-key|api[_-]?key|password|passwd)([\"']?\s*[:=]\s*[\"']?)[^\s\"',;&}\]]+")
_LONGFORM_KEY = re.compile(r"\blf_[A-Za-z0-9_\-]{8,}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@\"'<>]*):([^\s@/\"'<>]+)@")

_known: set[str] = set()
_lock = threading.Lock()


def register(*values: str | None) -> None:
    """Remember secret values (as given and URL-decoded: a password sits encoded in a URL) so
    that `redact` replaces them wherever they appear."""
    with _lock:
        for value in values:
            if not isinstance(value, str) or value.strip() in _PLACEHOLDERS or len(value) < MIN_SECRET_LENGTH:
                continue
            _known.add(value)
            decoded = unquote(value)
            if decoded != value and len(decoded) >= MIN_SECRET_LENGTH:
                _known.add(decoded)


def url_password(url: str | None) -> str | None:
    """The password of a URL such as postgresql://user:pw@host/db (None when it has none)."""
    if not url or "://" not in url:
        return None
    try:
        return urlsplit(url.strip()).password
    except ValueError:
        return None


def register_settings(settings: Any) -> None:
    """Register every secret a Settings object holds (works with any object with those fields)."""
    register(*(getattr(settings, name, None) for name in ("llm_api_key", "judge_api_key", "api_key",
                                                           "admin_session_secret")))
    for name in ("database_url", "broker_url", "rate_limit_storage", "llm_endpoints", "judge_endpoints"):
        for url in str(getattr(settings, name, "") or "").split(","):
            register(url_password(url))


def redact(text: str) -> str:
    """`text` with every secret it holds replaced by ****."""
    if not text:
        return text
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # the longest first: one secret may hold another
    for value in known:
        if value in text:
            text = text.replace(value, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _HEADER_KEY.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _LONGFORM_KEY.sub("lf_" + MASK, text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def redact_any(value: Any) -> Any:
    """`redact` applied to every string inside JSON-like data (dicts, lists)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_any(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_any(v) for v in value)
    return value


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if isinstance(arg, (int, float, bool)) or arg is None:
        return arg  # keeps %d and %.2f formats working
    try:
        text = str(arg)
    except Exception:
        return arg
    cleaned = redact(text)
    return arg if cleaned == text else cleaned  # an exception or URL object holding a secret


_installed = False


def install_log_redaction(secrets: Iterable[str | None] = ()) -> None:
    """Every log record made in this process from now on is redacted when it is created, whatever
    the logger or handler (uvicorn's, Celery's, ours): its message, its arguments and its
    traceback. Idempotent; `secrets` are registered first."""
    global _installed
    register(*secrets)
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
            elif record.msg is not None and not isinstance(record.msg, (int, float)):
                record.msg = _redact_arg(record.msg)
            if isinstance(record.args, tuple):
                # Argument by argument: formatters such as uvicorn's access log unpack the tuple.
                record.args = tuple(_redact_arg(a) for a in record.args)
            elif isinstance(record.args, dict):
                record.args = {k: _redact_arg(v) for k, v in record.args.items()}
            if record.exc_info and record.exc_info[0] is not None:
                # Formatted now, so handlers print this redacted text instead of the raw traceback.
                record.exc_text = redact(formatter.formatException(record.exc_info))
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
        except Exception:  # redaction must never lose a log record
            pass
        return record

    logging.setLogRecordFactory(factory)


_hooks_installed = False


def _print_redacted(exc_type, exc, tb, header: str = "") -> None:
    try:
        text = header + "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(redact(text))
        sys.stderr.flush()
    except Exception:  # stderr closed at shutdown: nothing else to do
        pass


def install_traceback_redaction() -> None:
    """Uncaught exceptions are printed by Python to stderr without logging: in the main thread
    (sys.excepthook) and in other threads (threading.excepthook). Both print redacted text from
    now on. Idempotent."""
    global _hooks_installed
    with _lock:
        if _hooks_installed:
            return
        _hooks_installed = True

    def main_thread_hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            return sys.__excepthook__(exc_type, exc, tb)
        _print_redacted(exc_type, exc, tb)

    def thread_hook(args):
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "unknown"
        _print_redacted(args.exc_type, args.exc_value, args.exc_traceback,
                        header=f"Exception in thread {name}:\n")

    sys.excepthook = main_thread_hook
    threading.excepthook = thread_hook


def protect(settings: Any) -> None:
    """At a process's start (API app, worker runtime, CLI command): register the settings'
    secrets and redact every log record and uncaught traceback from now on."""
    register_settings(settings)
    install_log_redaction()
    install_traceback_redaction()
