"""A small synchronous client for the Longform REST API (used by the `longform` CLI).

Errors come back as two exceptions: `ApiUnreachable` (nothing answers at the URL) and
`ApiError` (the server answered 4xx/5xx; `detail` is its message, `data` the structured
detail when the server sent one, e.g. {"message": ..., "stale_steps": [...]}).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx

from agents.status import FINISHED_STATUSES

TERMINAL_STATUSES = frozenset(FINISHED_STATUSES)


class ApiUnreachable(Exception):
    def __init__(self, url: str, reason: str = ""):
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the Longform API at {url}: is `longform serve` running?")


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str, data: Any = None):
        self.status_code = status_code
        self.detail = detail
        self.data = data  # the response's JSON `detail` when it is an object, else None
        super().__init__(f"{detail} (HTTP {status_code})")


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: Any  # parsed JSON when the data is JSON, else the raw string


def _detail_of(response: httpx.Response) -> str:
    """The server's error message: FastAPI's {"detail": ...} (a string or validation errors)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] or response.reason_phrase or f"HTTP {response.status_code}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return detail["message"]
    if isinstance(detail, list):  # FastAPI request validation errors
        parts = []
        for err in detail:
            if isinstance(err, dict):
                loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
            else:
                parts.append(str(err))
        return "; ".join(parts)
    if detail is not None:
        return json.dumps(detail)
    return json.dumps(body)[:500]


def _api_error(response: httpx.Response) -> ApiError:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return ApiError(response.status_code, _detail_of(response), detail if isinstance(detail, dict) else None)


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Server-Sent Events from text lines (the W3C event-stream format; comments skipped)."""
    event_id: str | None = None
    event_type = ""
    data_lines: list[str] = []
    for line in lines:
        if line == "":
            if data_lines:
                raw = "\n".join(data_lines)
                try:
                    data: Any = json.loads(raw)
                except ValueError:
                    data = raw
                yield SseEvent(event_id, event_type or "message", data)
            event_type, data_lines = "", []
            continue
        if line.startswith(":"):
            continue  # keep-alive comment
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            event_type = value
        elif name == "id":
            event_id = value


class LongformClient:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "longform-cli"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LongformClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApiUnreachable(self.base_url, str(exc)) from None
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    def ping(self) -> None:
        """One cheap request (GET /healthz); raises ApiUnreachable when nothing answers at the
        URL. Any HTTP answer counts: the requests that follow report their own errors."""
        try:
            self._http.get("/healthz", timeout=10.0)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, str(exc)) from None

    def list_kinds(self) -> list[dict[str, Any]]:
        """The job kinds: {kind, description, version, params_schema, result_schema, view}."""
        return self._json("GET", "/v1/kinds")["items"]

    # ---- jobs ------------------------------------------------------------------------

    def submit_job(
        self,
        kind: str,
        params: dict[str, Any],
        *,
        priority: int | None = None,
        idempotency_key: str | None = None,
        prompt_set: str | None = None,
        max_calls: int | None = None,
        max_tokens_total: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Returns the job and whether it is new (202) rather than an earlier one with the same key (200).
        `max_calls`, `max_tokens_total`: the job's budget (0: unlimited; None: the server's default)."""
        body: dict[str, Any] = {"kind": kind, "params": params}
        if priority is not None:
            body["priority"] = priority
        if prompt_set is not None:
            body["prompt_set"] = prompt_set
        for name, value in (("max_calls", max_calls), ("max_tokens_total", max_tokens_total)):
            if value is not None:
                body[name] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", "/v1/jobs", json=body, headers=headers)
        return response.json(), response.status_code == 202

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        query = {"status": status, "kind": kind, "parent_id": parent_id, "limit": limit, "offset": offset}
        return self._json("GET", "/v1/jobs", params={k: v for k, v in query.items() if v is not None})

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job with its steps, events, children and files (409 while it runs)."""
        self._request("DELETE", f"/v1/jobs/{job_id}")

    def purge_jobs(self, older_than_days: float | None = None) -> dict[str, Any]:
        """Admin: delete finished top-level jobs older than the days given (default RETENTION_DAYS)."""
        params = {"older_than_days": older_than_days} if older_than_days is not None else {}
        return self._json("POST", "/v1/purge", params=params, timeout=600.0)

    def retry_job(self, job_id: str, mode: str | None = None, *, max_calls: int | None = None,
                  max_tokens_total: int | None = None) -> dict[str, Any]:
        """Requeue a failed or cancelled job. `mode` ("reuse" or "fresh") says what to do with
        steps stored by code that has changed since; without it the server refuses (409, with
        `stale_steps` in ApiError.data) when there are any. `max_calls`, `max_tokens_total`: new
        budget caps (0: unlimited; None: keep the job's)."""
        fields = {"mode": mode, "max_calls": max_calls, "max_tokens_total": max_tokens_total}
        fields = {k: v for k, v in fields.items() if v is not None}
        body = {"json": fields} if fields else {}
        return self._json("POST", f"/v1/jobs/{job_id}/retry", **body)

    def job_steps(self, job_id: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/jobs/{job_id}/steps")["items"]

    def wait_job(self, job_id: str, *, timeout: float | None = None, max_interval: float = 2.0) -> dict[str, Any]:
        """Poll until the job reaches a terminal status; the interval grows from 0.1 s to max_interval."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.1
        while True:
            job = self.get_job(job_id)
            if job["status"] in TERMINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(interval)
            interval = min(max_interval, interval * 1.5)

    def job_events(self, job_id: str, last_event_id: str | None = None, read_timeout: float = 60.0) -> Iterator[SseEvent]:
        """One connection to the job's event stream; ends when the server closes it.

        A read timeout (no event nor keep-alive for `read_timeout` s) raises httpx.ReadTimeout:
        callers reconnect with the last event id.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self._http.timeout.connect or 10.0, read=read_timeout)
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _api_error(response)
                yield from parse_sse(response.iter_lines())
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApiUnreachable(self.base_url, str(exc)) from None

    # ---- documents -------------------------------------------------------------------

    def upload_document(self, content: bytes, *, name: str | None = None, strip_gutenberg: bool = False) -> tuple[dict[str, Any], bool]:
        """Returns the document and whether it is new (201) rather than already stored (200)."""
        query: dict[str, Any] = {}
        if name:
            query["name"] = name
        if strip_gutenberg:
            query["strip_gutenberg"] = "true"
        response = self._request(
            "POST",
            "/v1/documents",
            params=query,
            content=content,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=httpx.Timeout(self._http.timeout.connect or 10.0, read=300.0, write=300.0),
        )
        return response.json(), response.status_code == 201

    def get_document(self, document_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/documents/{document_id}")

    def delete_document(self, document_id: str) -> None:
        """409 while a queued or running job uses it."""
        self._request("DELETE", f"/v1/documents/{document_id}")

    # ---- datasets --------------------------------------------------------------------

    def create_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a dataset build; the answer lists `rejected_lines` of a JSONL source."""
        return self._json("POST", "/v1/datasets", json=body)

    def export_dataset(self, dataset_id: str, fmt: str | None = None, state_length: bool | None = None) -> str:
        """JSONL; `fmt` None: the recipe's first format (longwriter, long or ruler); `state_length` None:
        the dataset's own setting (longwriter recipe only)."""
        params: dict[str, Any] = {"format": fmt} if fmt else {}
        if state_length is not None:
            params["state_length"] = "true" if state_length else "false"
        return self._request("GET", f"/v1/datasets/{dataset_id}/export", params=params, timeout=300.0).text

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a finished build with its child jobs and export files (409 while it runs)."""
        self._request("DELETE", f"/v1/datasets/{dataset_id}")
