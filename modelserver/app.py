"""OpenAI-compatible routes over one in-process GGUF model (`agents.llm.embedded.EmbeddedLlama`).

Routes: /health, /v1/models (with `max_model_len`), /v1/chat/completions, /v1/completions,
/tokenize (vLLM's shape: `{"prompt"}` -> `{"count", "tokens", "max_model_len"}`).

Request fields honoured: max_tokens, temperature, top_p, top_k, stop, seed,
repetition_penalty, min_tokens, a JSON schema (`response_format` json_schema or json_object,
vLLM's `structured_outputs.json` or `guided_json`), and vLLM's `continue_final_message`
(continue the last assistant message instead of starting a new turn). Others are ignored, as
vLLM ignores what it does not know. Streaming is refused: the pool never streams.

A client that disconnects (a cancelled job) stops its generation within one token.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agents.llm.embedded import EmbeddedLlama
from agents.llm.types import GenOptions, LLMBadRequest, LLMError, LLMResult


class BadRequest(ValueError):
    pass


def error(status: int, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def options_from_body(body: dict[str, Any]) -> GenOptions:
    """GenOptions from an OpenAI/vLLM request body."""
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    try:
        return GenOptions(
            max_tokens=int(max_tokens) if max_tokens is not None else 0,  # 0: up to the context's end
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            stop=list(stop) if stop else None,
            seed=None if body.get("seed") is None else int(body["seed"]),
            json_schema=json_schema_of(body),
            top_k=None if body.get("top_k") is None else int(body["top_k"]),
            repetition_penalty=None if body.get("repetition_penalty") is None else float(body["repetition_penalty"]),
            min_tokens=None if body.get("min_tokens") is None else int(body["min_tokens"]),
        )
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"invalid sampling parameter: {exc}") from exc


def json_schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("response_format.json_schema.schema must be an object")
        return schema
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    structured = body.get("structured_outputs") or {}
    schema = structured.get("json") if isinstance(structured, dict) else None
    schema = schema if schema is not None else body.get("guided_json")
    if isinstance(schema, str):
        schema = json.loads(schema)
    return schema


def completion_body(result: LLMResult, kind: str) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": result.text}
    else:
        choice["text"] = result.text
    return {
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "model": result.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
    }


async def until_disconnected(request: Request) -> None:
    """Returns when the client goes away (after the body, receive() waits for that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(llm: EmbeddedLlama) -> Starlette:
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def models(_request: Request) -> JSONResponse:
        entry = {"id": llm.model_name, "object": "model", "owned_by": "longform",
                 "max_model_len": llm.context_window}
        return JSONResponse({"object": "list", "data": [entry]})

    async def tokenize(request: Request) -> JSONResponse:
        body = await request.json()
        text = body.get("prompt", body.get("content"))
        if not isinstance(text, str):
            return error(400, "tokenize needs a string 'prompt'")
        tokens = await llm.tokenize(text)
        return JSONResponse({"count": len(tokens), "tokens": tokens, "max_model_len": llm.context_window})

    async def generate(request: Request, kind: str) -> JSONResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            if body.get("stream"):
                raise BadRequest("streaming is not supported by the embedded model server")
            options = options_from_body(body)
            if kind == "chat":
                messages = body.get("messages")
                if not isinstance(messages, list) or not messages:
                    raise BadRequest("'messages' must be a non-empty list")
                if body.get("continue_final_message"):
                    if messages[-1].get("role") != "assistant":
                        raise BadRequest("continue_final_message needs an assistant message last")
                    call = llm.complete(await llm.continuation_prompt(messages), options)
                else:
                    call = llm.chat(messages, options)
            else:
                prompt = body.get("prompt")
                if not isinstance(prompt, str):
                    raise BadRequest("'prompt' must be a string")
                call = llm.complete(prompt, options)
        except (BadRequest, ValueError) as exc:
            return error(400, str(exc))
        generation = asyncio.ensure_future(call)
        watcher = asyncio.ensure_future(until_disconnected(request))
        await asyncio.wait({generation, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not generation.done():  # the client left: stop the model at the next token
            generation.cancel()
            await asyncio.gather(generation, return_exceptions=True)
            return error(499, "client closed the request")
        watcher.cancel()
        try:
            result = generation.result()
        except LLMBadRequest as exc:
            return error(400, str(exc))
        except LLMError as exc:
            return error(500, str(exc))
        return JSONResponse(completion_body(result, kind))

    async def chat(request: Request) -> JSONResponse:
        return await generate(request, "chat")

    async def completions(request: Request) -> JSONResponse:
        return await generate(request, "completion")

    return Starlette(routes=[
        Route("/health", health),
        Route("/v1/models", models),
        Route("/tokenize", tokenize, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ])
