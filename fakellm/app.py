"""The HTTP face of the fake vLLM server (Starlette): OpenAI routes, vLLM extras, admin routes.

Routes: /v1/chat/completions, /v1/completions (both streaming or not), /v1/models, /tokenize,
/detokenize, /health, /version, /metrics; for tests: /admin/config, /admin/stats,
/admin/requests, /admin/reset.

A chat request with vLLM's `continue_final_message: true` (and `add_generation_prompt: false`)
continues the last, assistant, message: the reply is the continuation only (see
`engine.generate`).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from agents.text import decode
from fakellm import engine
from fakellm.config import FakeConfig
from fakellm.engine import BadRequest, GenRequest, GenResult, JsonMode
from fakellm.state import FakeState

_PIECE = re.compile(r"\s*[\u4e00-\u9fff]|\s*[^\s\u4e00-\u9fff]+|\s+")
STREAM_INTERVAL_S = 0.02  # paced streams send what is due at most this often
CLIENT_CLOSED = 499  # logged (never sent) when the client went away first


class NotFound(ValueError):
    pass


def error_response(status: int, message: str, err_type: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": err_type, "param": param, "code": status}},
                        status_code=status)


def split_pieces(text: str) -> list[str]:
    """Stream pieces (a word with its leading space, or one CJK character); they join to text."""
    return _PIECE.findall(text)


class FakeLLM:
    def __init__(self, config: FakeConfig):
        self.state = FakeState(config)

    # -- plumbing ----------------------------------------------------------------------------

    def _count(self, request: Request) -> None:
        self.state.counters.requests_by_path[request.url.path] += 1

    @staticmethod
    async def _json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise BadRequest(f"Invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object")
        return body

    @staticmethod
    async def _until_disconnect(request: Request) -> None:
        # After the body is read, the next ASGI message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def _wait(self, request: Request, seconds: float) -> bool:
        """Sleep, unless the client disconnects first (then False: vLLM aborts such requests)."""
        if seconds <= 0:
            return True
        sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
        watcher = asyncio.ensure_future(self._until_disconnect(request))
        done, _ = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sleeper, watcher):
            if not task.done():
                task.cancel()
        return watcher not in done

    @staticmethod
    def _die() -> None:
        os._exit(17)  # abrupt, like a crashed GPU worker: no response, no cleanup

    def _log(self, entry: dict[str, Any], status: int, **extra: Any) -> None:
        entry.update(extra, status=status)
        self.state.counters.status_counts[status] += 1
        self.state.log.append(entry)

    def _faults(self, request: Request, body: dict[str, Any]) -> tuple[set[str], str | None]:
        spec = request.headers.get("x-fake-fault") or body.pop("fake_fault", None)
        if spec is None:
            return self.state.draw_faults(), None
        faults, variant = set(), None
        for item in str(spec).split(","):
            name, _, arg = item.strip().partition(":")
            if not name or name == "none":
                continue
            if name not in engine.FAULTS:
                raise BadRequest(f"Unknown fake fault {name!r}; known: {', '.join(engine.FAULTS)}")
            faults.add(name)
            if name == "malformed_json" and arg:
                variant = arg
        return faults, variant

    # -- request parsing ---------------------------------------------------------------------

    def _check_model(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        cfg = self.state.config
        if model and cfg.strict_model and model != cfg.model:
            raise NotFound(f"The model `{model}` does not exist.")

    def _common(self, body: dict[str, Any], prompt_tokens: list[int]) -> dict[str, Any]:
        cfg = self.state.config
        if body.get("n", 1) not in (1, None):
            raise BadRequest("The fake server supports n=1 only")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        n_prompt = len(prompt_tokens)
        if n_prompt >= cfg.max_model_len:
            raise BadRequest(f"This model's maximum context length is {cfg.max_model_len} tokens. However, "
                             f"your request has {n_prompt} input tokens. Please reduce the length of the "
                             f"input messages.")
        if max_tokens is None:
            max_tokens = cfg.max_model_len - n_prompt
        else:
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise BadRequest(f"max_tokens must be at least 1, got {max_tokens}.")
            if n_prompt + max_tokens > cfg.max_model_len:
                raise BadRequest(f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This "
                                 f"model's maximum context length is {cfg.max_model_len} tokens and your "
                                 f"request has {n_prompt} input tokens ({max_tokens} > {cfg.max_model_len}"
                                 f" - {n_prompt}).")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("stop must be a string or a list of strings")
        seed = body.get("seed")
        return dict(max_tokens=max_tokens, min_tokens=int(body.get("min_tokens") or 0),
                    ignore_eos=bool(body.get("ignore_eos")), stop=stop,
                    include_stop=bool(body.get("include_stop_str_in_output")),
                    json_mode=self._json_mode(body), request_seed=seed)

    @staticmethod
    def _json_mode(body: dict[str, Any]) -> JsonMode | None:
        rf = body.get("response_format")
        if isinstance(rf, dict):
            kind = rf.get("type")
            if kind == "json_schema":
                schema = (rf.get("json_schema") or {}).get("schema")
                return JsonMode("schema", schema=schema) if schema else JsonMode("object")
            if kind == "json_object":
                schema = rf.get("schema")  # llama.cpp server style
                return JsonMode("schema", schema=schema) if schema else JsonMode("object")
            if kind not in (None, "text"):
                raise BadRequest(f"Unsupported response_format type {kind!r}")
        so = body.get("structured_outputs")
        if so is None and body.get("guided_json") is not None:  # removed from vLLM in 0.12
            so = {"json": body["guided_json"]}
        if so is None and body.get("guided_choice") is not None:
            so = {"choice": body["guided_choice"]}
        if isinstance(so, dict):
            if so.get("json") is not None:
                schema = so["json"]
                if isinstance(schema, str):
                    try:
                        schema = json.loads(schema)
                    except ValueError as exc:
                        raise BadRequest(f"structured_outputs.json is not valid JSON: {exc}") from exc
                return JsonMode("schema", schema=schema)
            if so.get("choice"):
                return JsonMode("choice", choices=[str(c) for c in so["choice"]])
            if so.get("json_object"):
                return JsonMode("object")
            unsupported = [k for k, v in so.items() if v is not None]
            if unsupported:
                raise BadRequest(f"The fake server does not support structured_outputs {unsupported}")
        return None

    def _chat_request(self, body: dict[str, Any], faults: set[str], variant: str | None):
        self._check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("messages must be a non-empty list of message objects")
        # vLLM's continue_final_message: the last (assistant) message is the start of the
        # answer, continued without a new turn; vLLM's own checks on the two flags.
        add_generation_prompt = bool(body.get("add_generation_prompt", True))
        prefix = ""
        if body.get("continue_final_message"):
            if add_generation_prompt:
                raise BadRequest("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
            if messages[-1].get("role") != "assistant":
                raise BadRequest("continue_final_message needs the last message to be from the assistant")
            prefix = engine.message_text(messages[-1].get("content"))
        tokens = engine.chat_prompt_tokens(messages, add_generation_prompt, self.state.config.token_scale)
        texts = [(m.get("role", "user"), engine.message_text(m.get("content"))) for m in messages]
        user_texts = [t for role, t in texts if role == "user"]
        instruction = user_texts[-1] if user_texts else texts[-1][1]
        material = "\x00".join(f"{role}\x01{t}" for role, t in texts)
        return GenRequest(prompt_tokens=tokens, instruction=instruction, seed_material=material, prefix=prefix,
                          faults=frozenset(faults), malformed_variant=variant, **self._common(body, tokens))

    def _completion_request(self, body: dict[str, Any], faults: set[str], variant: str | None):
        self._check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            tokens, text = list(prompt), decode(engine.unscale_tokens(prompt))
        elif isinstance(prompt, str):
            tokens, text = engine.text_prompt_tokens(prompt, self.state.config.token_scale), prompt
        else:
            raise BadRequest("prompt must be a string or a list of token ids (one prompt per request)")
        return GenRequest(prompt_tokens=tokens, instruction=text, seed_material=text,
                          faults=frozenset(faults), malformed_variant=variant, **self._common(body, tokens))

    # -- generation routes -------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def _generate(self, request: Request, kind: str) -> Response:
        state, cfg = self.state, self.state.config
        self._count(request)
        state.counters.generation_requests += 1
        if cfg.die_after is not None and state.counters.generation_requests > cfg.die_after:
            self._die()
        entry: dict[str, Any] = {
            "id": state.next_id(), "path": request.url.path, "time": time.time(),
            "session_id": request.headers.get("x-session-id"),
        }
        try:
            body = await self._json_body(request)
            faults, variant = self._faults(request, body)
        except BadRequest as exc:
            self._log(entry, 400, error=str(exc))
            return error_response(400, str(exc), "BadRequestError")
        stream = bool(body.get("stream"))
        entry.update(stream=stream, max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
                     fault=sorted(faults) or None, prompt=self._prompt_for_log(body, kind))
        for name in faults:
            state.counters.faults[name] += 1

        if "die" in faults and not stream:
            self._die()
        if "500" in faults:
            self._log(entry, 500)
            return error_response(500, "Internal server error (injected fault)", "InternalServerError")
        if "429" in faults:
            self._log(entry, 429)
            return error_response(429, "Too many requests (injected fault)", "RateLimitError")
        try:
            build = self._chat_request if kind == "chat" else self._completion_request
            gen = build(body, faults, variant)
            result = engine.generate(cfg, gen)
        except BadRequest as exc:
            self._log(entry, 400, error=str(exc))
            return error_response(400, str(exc), "BadRequestError")
        except NotFound as exc:
            self._log(entry, 404, error=str(exc))
            return error_response(404, str(exc), "NotFoundError", "model")
        entry.update(prompt_tokens=len(gen.prompt_tokens), json=gen.json_mode is not None)

        if "hang" in faults and not await self._wait(request, cfg.hang_s):
            self._log(entry, CLIENT_CLOSED)
            return Response(status_code=CLIENT_CLOSED)
        priority = int(body.get("priority") or 0)
        if priority != 0 and cfg.scheduling_policy != "priority":  # vLLM refuses it the same way
            message = f"Got priority {priority} but Priority scheduling is not enabled."
            self._log(entry, 400, error=message)
            return error_response(400, message, "BadRequestError", "priority")
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._stream(request, kind, gen, result, faults, entry, priority, include_usage),
                                     media_type="text/event-stream")

        started = time.monotonic()
        async with state.scheduler.slot(priority):
            cached = self._admit(gen)
            if cfg.timing and not await self._wait(request, self._service_time(gen, result, cached)):
                self._log(entry, CLIENT_CLOSED, cached_tokens=cached)
                return Response(status_code=CLIENT_CLOSED)
        self._finish(result, result.completion_tokens)
        self._log(entry, 200, completion_tokens=result.completion_tokens, cached_tokens=cached,
                  finish_reason=result.finish_reason, duration_s=round(time.monotonic() - started, 4))
        return JSONResponse(self._response_body(kind, gen, result, cached))

    def _admit(self, gen: GenRequest) -> int:
        """A sequence starts: look its prompt up in the prefix cache and count prefill tokens."""
        cached = self.state.cache.lookup_and_insert(gen.prompt_tokens) if self.state.config.prefix_cache else 0
        self.state.counters.prompt_tokens += len(gen.prompt_tokens)
        return cached

    def _finish(self, result: GenResult, tokens: int) -> None:
        self.state.counters.generation_tokens += tokens
        self.state.counters.finished[result.finish_reason] += 1

    def _ttft(self, gen: GenRequest, cached: int) -> float:
        cfg = self.state.config
        return cfg.ttft_s + cfg.prefill_s_per_token * (len(gen.prompt_tokens) - cached)

    def _service_time(self, gen: GenRequest, result: GenResult, cached: int) -> float:
        return self._ttft(gen, cached) + self.state.config.decode_s_per_token * result.completion_tokens

    @staticmethod
    def _prompt_for_log(body: dict[str, Any], kind: str) -> str | None:
        try:
            if kind == "chat":
                msgs = body.get("messages") or []
                users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
                return engine.message_text((users or msgs)[-1].get("content")) if (users or msgs) else None
            prompt = body.get("prompt")
            return prompt if isinstance(prompt, str) else json.dumps(prompt)[:10_000]
        except (BadRequest, AttributeError, TypeError):
            return None

    def _usage(self, gen: GenRequest, completion_tokens: int, cached: int) -> dict[str, Any]:
        n = len(gen.prompt_tokens)
        return {"prompt_tokens": n, "completion_tokens": completion_tokens, "total_tokens": n + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached}}

    def _response_body(self, kind: str, gen: GenRequest, result: GenResult, cached: int) -> dict[str, Any]:
        model, created = self.state.config.model, int(time.time())
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text, "tool_calls": []},
                      "logprobs": None, "finish_reason": result.finish_reason, "stop_reason": result.stop_reason}
            obj, prefix = "chat.completion", "chatcmpl-"
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None,
                      "finish_reason": result.finish_reason, "stop_reason": result.stop_reason}
            obj, prefix = "text_completion", "cmpl-"
        return {"id": prefix + uuid.uuid4().hex, "object": obj, "created": created, "model": model,
                "choices": [choice], "usage": self._usage(gen, result.completion_tokens, cached)}

    async def _stream(self, request: Request, kind: str, gen: GenRequest, result: GenResult, faults: set[str],
                      entry: dict[str, Any], priority: int, include_usage: bool) -> AsyncIterator[str]:
        state, cfg = self.state, self.state.config
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        created, model = int(time.time()), cfg.model
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        pieces = split_pieces(result.text)
        sent = 0
        cached = 0
        complete = False
        started = time.monotonic()

        def chunk(text: str | None, finish: str | None = None, first: bool = False) -> str:
            if kind == "chat":
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                    {"content": text} if text is not None else {})
                choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
            if finish:
                choice["stop_reason"] = result.stop_reason
            payload: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": model,
                                       "choices": [choice]}
            if include_usage:
                payload["usage"] = None
            return "data: " + json.dumps(payload, ensure_ascii=False) + "\n\n"

        try:
            async with state.scheduler.slot(priority):
                cached = self._admit(gen)
                if cfg.timing:
                    await asyncio.sleep(self._ttft(gen, cached))
                if kind == "chat":
                    yield chunk(None, first=True)
                per_piece = (cfg.decode_s_per_token * result.completion_tokens / len(pieces)
                             if cfg.timing and pieces else 0.0)
                die_at = len(pieces) // 2 if "die" in faults else None
                if die_at == 0:  # too short to die half-way: die after the first chunk
                    await asyncio.sleep(0.05)
                    self._die()
                decode_start = time.monotonic()
                while sent < len(pieces):
                    if per_piece:
                        due = int((time.monotonic() - decode_start) / per_piece) + 1
                        upto = min(len(pieces), max(due, sent + 1))
                    else:
                        upto = sent + 1
                    if die_at is not None and upto > die_at:
                        upto = max(die_at, sent + 1)
                    yield chunk("".join(pieces[sent:upto]))
                    sent = upto
                    if die_at is not None and sent >= die_at:
                        await asyncio.sleep(0.05)  # let the sent bytes leave before dying
                        self._die()
                    if per_piece and sent < len(pieces):
                        next_due = decode_start + sent * per_piece
                        await asyncio.sleep(max(STREAM_INTERVAL_S, next_due - time.monotonic()))
                if per_piece:  # the last tokens' decode time
                    await asyncio.sleep(max(0.0, decode_start + len(pieces) * per_piece - time.monotonic()))
            yield chunk(None, finish=result.finish_reason)
            if include_usage:
                usage = {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                         "usage": self._usage(gen, result.completion_tokens, cached)}
                yield "data: " + json.dumps(usage, ensure_ascii=False) + "\n\n"
            yield "data: [DONE]\n\n"
            complete = True
        finally:
            done_tokens = result.completion_tokens if complete else (
                round(result.completion_tokens * sent / len(pieces)) if pieces else 0)
            if complete:
                self._finish(result, done_tokens)
            else:
                self.state.counters.generation_tokens += done_tokens
            self._log(entry, 200 if complete else CLIENT_CLOSED, completion_tokens=done_tokens,
                      cached_tokens=cached, finish_reason=result.finish_reason if complete else None,
                      duration_s=round(time.monotonic() - started, 4))

    # -- other vLLM routes -------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        self._count(request)
        cfg = self.state.config
        card = {"id": cfg.model, "object": "model", "created": int(self.state.started), "owned_by": "vllm",
                "root": cfg.model, "parent": None, "max_model_len": cfg.max_model_len, "permission": []}
        return JSONResponse({"object": "list", "data": [card]})

    async def tokenize(self, request: Request) -> Response:
        self._count(request)
        try:
            body = await self._json_body(request)
            if "messages" in body:
                tokens = engine.chat_prompt_tokens(
                    body["messages"], bool(body.get("add_generation_prompt", True)), self.state.config.token_scale
                )
            elif isinstance(body.get("prompt"), str):
                tokens = engine.text_prompt_tokens(body["prompt"], self.state.config.token_scale)
            else:
                raise BadRequest("tokenize needs a `prompt` string or `messages`")
        except (BadRequest, AttributeError, TypeError) as exc:
            return error_response(400, str(exc), "BadRequestError")
        return JSONResponse({"count": len(tokens), "max_model_len": self.state.config.max_model_len,
                             "tokens": tokens, "token_strs": None})

    async def detokenize(self, request: Request) -> Response:
        self._count(request)
        try:
            body = await self._json_body(request)
            tokens = body.get("tokens")
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise BadRequest("detokenize needs `tokens`, a list of token ids")
            return JSONResponse({"prompt": decode(engine.unscale_tokens(tokens))})
        except (BadRequest, KeyError, ValueError) as exc:
            return error_response(400, str(exc), "BadRequestError")

    async def health(self, request: Request) -> Response:
        self._count(request)
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": "fake-vllm"})

    async def metrics(self, request: Request) -> Response:
        self._count(request)
        return PlainTextResponse(self.state.metrics_text(), media_type="text/plain; version=0.0.4")

    # -- admin routes (tests and benchmarks) -------------------------------------------------

    async def admin_config(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.state.update_config(await self._json_body(request))
            except (BadRequest, ValueError, TypeError) as exc:
                return error_response(400, str(exc), "BadRequestError")
        return JSONResponse(self.state.config.to_dict())

    async def admin_stats(self, request: Request) -> Response:
        return JSONResponse(self.state.stats())

    async def admin_requests(self, request: Request) -> Response:
        entries = list(self.state.log)
        limit = request.query_params.get("limit")
        if limit and limit.isdigit():
            entries = entries[-int(limit):]
        return JSONResponse({"requests": entries})

    async def admin_reset(self, request: Request) -> Response:
        try:
            body = await self._json_body(request)
        except BadRequest as exc:
            return error_response(400, str(exc), "BadRequestError")
        self.state.reset(restore_config=bool(body.get("config")))
        return JSONResponse({"ok": True, "config": self.state.config.to_dict()})

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/admin/config", self.admin_config, methods=["GET", "POST"]),
            Route("/admin/stats", self.admin_stats, methods=["GET"]),
            Route("/admin/requests", self.admin_requests, methods=["GET"]),
            Route("/admin/reset", self.admin_reset, methods=["POST"]),
        ]


def create_app(config: FakeConfig | None = None) -> Starlette:
    fake = FakeLLM(config or FakeConfig())
    app = Starlette(routes=fake.routes())
    app.state.fake = fake
    return app
