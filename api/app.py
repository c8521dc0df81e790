"""The FastAPI application: REST API under /v1, operations endpoints, OpenAPI docs at /docs.

In embedded mode (no BROKER_URL) the app also runs the in-process worker.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from agents.redact import protect
from agents.settings import Settings
from api import rate_limit
from api.admin import mount as mount_admin
from api.auth import auth_required
from api.routes import datasets, documents, jobs, ops
from api.served_models import ServedModels
from api.state import AppState
from db.schema import ensure_current
from db.session import Database

log = logging.getLogger("longform.api")


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app, limit: int, exempt_prefixes: tuple[str, ...] = ()):
        self.app, self.limit, self.exempt = app, limit, exempt_prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send):
        response = JSONResponse({"detail": f"request body is over the limit of {self.limit} bytes"}, status_code=413)
        await response({"type": "http"}, None, send)


class _BodyTooLarge(Exception):
    pass


class RefuseNulInUrl:
    """400 for a NUL ("%00") in the path or query: no id, filter or name has one, and PostgreSQL
    refuses it in any text parameter (an error deep in a query, so a 500, without this)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")):
            response = JSONResponse({"detail": "the URL contains a NUL character (%00)"}, status_code=400)
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


# The body of every 4xx: a message, or (e.g. rejected JSONL lines, stale steps) an object with one.
ERROR_SCHEMA = {
    "title": "Error", "type": "object", "required": ["detail"],
    "properties": {"detail": {"title": "Detail", "anyOf": [
        {"type": "string"},
        {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
    ]}},
}


def create_app(settings: Settings | None = None, *, run_worker: bool | None = None) -> FastAPI:
    settings = settings or Settings.load()
    protect(settings)  # secrets never reach the logs, stored errors or events
    db = Database(settings.database_url)
    if run_worker is None:
        run_worker = settings.embedded_mode and not settings.longform_no_worker
    state = AppState(settings=settings, db=db, auth_required=auth_required(settings))
    state.served_models = ServedModels(state.model_endpoints, settings.llm_api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ensure_current(settings.database_url, auto_upgrade=settings.longform_auto_upgrade)
        worker = None
        if run_worker:
            from workers.embedded import EmbeddedWorker

            worker = EmbeddedWorker(settings)
            worker.start()
            state.notify_worker = worker.notify
            state.model_status = worker.runtime.model_status
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(
        title="Longform",
        version="0.1.0",
        description="Long-form writing and book summarization with LLM agents, as jobs.",
        lifespan=lifespan,
    )
    app.state.longform = state
    for module in (jobs, documents, datasets, ops):
        app.include_router(module.router)
    mount_admin(app, state)  # the admin UI under /admin

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError):
        messages = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        return JSONResponse({"detail": "invalid request: " + "; ".join(messages)}, status_code=422)

    def openapi_with_our_errors():
        # Every error is {"detail": message} (the handler above; HTTPException), not FastAPI's
        # default list of validation errors: document the body clients really get.
        if app.openapi_schema is None:
            FastAPI.openapi(app)
            app.openapi_schema.get("components", {}).get("schemas", {})["HTTPValidationError"] = ERROR_SCHEMA
        return app.openapi_schema

    app.openapi = openapi_with_our_errors

    # Documents have their own, larger limit, enforced while their body streams in.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, exempt_prefixes=("/v1/documents",))
    app.add_middleware(RefuseNulInUrl)
    rate_limit.install(app, settings)  # RATE_LIMIT_PER_MINUTE; added last, so it runs first
    return app
