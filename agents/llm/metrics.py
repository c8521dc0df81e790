"""Prometheus collectors for model calls, shared by every backend in the process.

Registered once in the default registry (what `/metrics` exposes). Labels are the endpoint
base URL (or "embedded") so a dashboard shows which replica is slow, failing or down.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "longform_llm_requests_total",
    "Model calls finished, by endpoint and outcome (ok or the error type).",
    ["endpoint", "outcome"],
)
ERRORS = Counter(
    "longform_llm_errors_total",
    "Failed attempts (each retry counts), by endpoint and error type.",
    ["endpoint", "error"],
)
LATENCY = Histogram(
    "longform_llm_request_latency_seconds",
    "Latency of successful model calls.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
INFLIGHT = Gauge("longform_llm_inflight_requests", "Requests in flight, by endpoint.", ["endpoint"])
ENDPOINT_UP = Gauge("longform_llm_endpoint_up", "1 when the endpoint is taking requests, 0 when marked down.", ["endpoint"])
TOKENS = Counter(
    "longform_llm_tokens_total",
    "Tokens processed, by endpoint and kind (prompt, completion, cached).",
    ["endpoint", "kind"],
)


class EndpointMetrics:
    """Pre-bound children for one endpoint (label lookup once, not per request)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.inflight = INFLIGHT.labels(endpoint)
        self.up = ENDPOINT_UP.labels(endpoint)
        self.latency = LATENCY.labels(endpoint)
        self.ok = REQUESTS.labels(endpoint, "ok")
        self.prompt_tokens = TOKENS.labels(endpoint, "prompt")
        self.completion_tokens = TOKENS.labels(endpoint, "completion")
        self.cached_tokens = TOKENS.labels(endpoint, "cached")
        self.up.set(1)

    def success(self, latency_s: float, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> None:
        self.ok.inc()
        self.latency.observe(latency_s)
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)
        if cached_tokens:
            self.cached_tokens.inc(cached_tokens)

    def attempt_failed(self, error: BaseException) -> None:
        ERRORS.labels(self.endpoint, type(error).__name__).inc()

    def call_failed(self, error: BaseException) -> None:
        REQUESTS.labels(self.endpoint, type(error).__name__).inc()
