"""Structured output: ask for JSON under a schema, validate it on the client, repair or retry.

The schema goes to the server as `response_format` (vLLM and llama.cpp constrain decoding
to it), but servers differ and constrained decoding has edge-case bugs, so every reply is
parsed tolerantly and validated with `jsonschema` here. A reply that does not validate is
sent back with the validation error and the model is asked again; a reply cut off at
`max_tokens` is retried with more room when the context window allows. Every attempt is a
normal client call, so a job step's usage record counts them all.
"""
from __future__ import annotations

import dataclasses
import json
import re
from functools import lru_cache
from typing import Any, Iterator

from jsonschema import validators
from jsonschema.exceptions import best_match

from agents.llm.tokens import output_room
from agents.llm.types import GenOptions, LLMClient, LLMResult, Message, StructuredOutputError

_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)
_MAX_SCAN_STARTS = 32  # bracket positions tried when the reply has prose around the JSON
_MAX_ECHOED_REPLY_CHARS = 4000
_MAX_SCHEMA_IN_PROMPT_CHARS = 3000


def json_candidates(text: str) -> Iterator[Any]:
    """JSON values found in a model reply, most likely first: the whole reply, fenced
    blocks (```json ... ```), then each outermost value starting at a `{` or `[`."""
    stripped = text.strip()
    found = False
    for chunk in [stripped, *(m.group(1).strip() for m in _FENCE.finditer(stripped))]:
        try:
            value = json.loads(chunk)
        except ValueError:
            continue
        found = True
        yield value
    if found:
        return
    decoder = json.JSONDecoder()
    covered = 0  # values nested in one already found are not candidates of their own
    for n, match in enumerate(re.finditer(r"[\[{]", stripped)):
        if n >= _MAX_SCAN_STARTS:
            break
        if match.start() < covered:
            continue
        try:
            value, covered = decoder.raw_decode(stripped, match.start())
        except ValueError:
            continue
        yield value


def parse_json_reply(text: str) -> Any:
    """The first JSON value in a reply (see `json_candidates`); ValueError when there is none."""
    for value in json_candidates(text):
        return value
    raise ValueError("no JSON value found in the reply")


def make_validator(schema: dict[str, Any]):
    """A jsonschema validator for the schema's declared draft (2020-12 when undeclared).
    Built once per distinct schema: checking a schema costs more than validating a reply."""
    return _validator_for(json.dumps(schema, sort_keys=True))


@lru_cache(maxsize=256)
def _validator_for(schema_json: str):
    schema = json.loads(schema_json)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    cls.check_schema(schema)  # a broken schema is a programming error: raise SchemaError now
    return cls(schema)


def _validate(validator, text: str) -> tuple[Any, str | None]:
    """(value, None) for the first candidate that validates, else (None, the problem)."""
    for value in json_candidates(text):
        if best_match(validator.iter_errors(value)) is None:
            return value, None
    # Explain the failure in terms of the reply itself, not of fragments found inside it.
    stripped = text.strip()
    fenced = _FENCE.search(stripped)
    try:
        value = json.loads(fenced.group(1).strip() if fenced else stripped)
    except ValueError as exc:
        return None, f"it is not valid JSON ({exc})"
    error = best_match(validator.iter_errors(value))
    if error is None:  # unreachable: a valid whole reply is the first candidate
        return value, None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return None, f"it does not match the schema at {where}: {error.message[:300]}"


def _repair_message(problem: str, schema: dict[str, Any]) -> Message:
    schema_text = json.dumps(schema, ensure_ascii=False)
    hint = f" The schema is: {schema_text}" if len(schema_text) <= _MAX_SCHEMA_IN_PROMPT_CHARS else ""
    return {
        "role": "user",
        "content": f"Your previous reply could not be used: {problem}. "
        f"Reply again with only the JSON value, matching the required schema exactly.{hint}",
    }


async def chat_json(
    client: LLMClient,
    messages: list[Message],
    schema: dict[str, Any],
    options: GenOptions | None = None,
    *,
    attempts: int = 3,
) -> tuple[Any, LLMResult]:
    """Chat for a JSON value that validates against `schema`: (value, result of the last call).

    Raises StructuredOutputError after `attempts` calls without a valid reply (transport
    errors raise their own typed errors at once; the pool has already retried them)."""
    validator = make_validator(schema)
    base = dataclasses.replace(options or GenOptions(), json_schema=schema)
    max_tokens = base.max_tokens
    conversation = list(messages)
    problem = "no attempt made"
    for attempt in range(1, attempts + 1):
        result = await client.chat(conversation, dataclasses.replace(base, max_tokens=max_tokens))
        result.extra["structured_attempts"] = attempt
        if result.truncated:
            problem = f"the reply was cut off at max_tokens={max_tokens}"
            room = output_room(client.context_window, result.prompt_tokens)
            if room > max_tokens:  # same question, more room
                max_tokens = min(room, max_tokens * 2)
                continue
            problem += "; answer more briefly"
        else:
            value, problem = _validate(validator, result.text)
            if problem is None:
                return value, result
        conversation = [
            *messages,
            {"role": "assistant", "content": result.text[:_MAX_ECHOED_REPLY_CHARS]},
            _repair_message(problem, schema),
        ]
    raise StructuredOutputError(f"no reply matched the JSON schema after {attempts} attempts; last: {problem}")
