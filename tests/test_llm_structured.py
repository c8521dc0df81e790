"""Structured output: tolerant parsing, schema validation, repair and retry (fake server over HTTP)."""
from __future__ import annotations

import pytest
from jsonschema import SchemaError

from agents.context import JobContext, MemoryStepStore
from agents.llm.openai_pool import OpenAIPool
from agents.llm.structured import chat_json, json_candidates, make_validator, parse_json_reply
from agents.llm.types import GenOptions, StructuredOutputError

PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "sections": {
            "type": "array",
            "minItems": 2,
            "maxItems": 6,
            "items": {
                "type": "object",
                "properties": {"heading": {"type": "string"}, "words": {"type": "integer", "minimum": 1}},
                "required": ["heading", "words"],
            },
        },
    },
    "required": ["title", "sections"],
}
ASK = [{"role": "user", "content": "Plan a 1,200-word article about lighthouses as JSON."}]
REPAIR_PREFIX = "Your previous reply could not be used"


@pytest.fixture
async def pool(fake_llm):
    client = OpenAIPool([fake_llm.base_url], backoff_base_s=0.01, backoff_max_s=0.05)
    yield client
    await client.aclose()


# ----- parsing ---------------------------------------------------------------------------


def test_parses_plain_fenced_and_embedded_json():
    assert parse_json_reply('{"a": 1}') == {"a": 1}
    assert parse_json_reply('Sure!\n```json\n{"a": [1, 2]}\n```\nAnything else?') == {"a": [1, 2]}
    assert parse_json_reply("The plan is {\"a\": {\"b\": 2}} as requested.") == {"a": {"b": 2}}  # outermost
    assert parse_json_reply("  [1, 2, 3]  ") == [1, 2, 3]
    with pytest.raises(ValueError):
        parse_json_reply('{"a": 1, "b": ')
    with pytest.raises(ValueError):
        parse_json_reply("no json here")


def test_candidates_let_validation_pick_the_right_value():
    text = 'Example: [1]. Answer: {"title": "T", "sections": []}'
    assert list(json_candidates(text)) == [[1], {"title": "T", "sections": []}]


def test_broken_schema_is_a_programming_error():
    with pytest.raises(SchemaError):
        make_validator({"type": "no-such-type"})


# ----- against the fake server -----------------------------------------------------------


async def test_valid_reply_on_the_first_try(fake_llm, pool):
    plan, result = await chat_json(pool, ASK, PLAN_SCHEMA, GenOptions(max_tokens=800))
    make_validator(PLAN_SCHEMA).validate(plan)
    assert result.extra["structured_attempts"] == 1
    log = fake_llm.requests()
    assert len(log) == 1 and log[0]["json"]  # the schema went out as response_format


async def test_invalid_replies_are_repaired(fake_llm, pool):
    # Half the replies come back broken (cut, trailing commas, single quotes, a missing
    # required field, prose around a fence); each is sent back with the problem named.
    fake_llm.update(malformed_json_rate=0.5, seed=3)
    plans = []
    for i in range(12):
        ask = [{"role": "user", "content": f"Plan a {600 + 100 * i}-word article about lighthouses as JSON."}]
        plan, _ = await chat_json(pool, ask, PLAN_SCHEMA, GenOptions(max_tokens=800), attempts=6)
        plans.append(plan)
    validator = make_validator(PLAN_SCHEMA)
    for plan in plans:
        validator.validate(plan)
    log = fake_llm.requests()
    repairs = [e for e in log if (e["prompt"] or "").startswith(REPAIR_PREFIX)]
    broken = [e for e in log if e["fault"]]
    assert len(broken) >= 3 and len(repairs) >= 1
    assert len(log) == 12 + len(repairs)  # every extra request was a repair
    assert any("schema" in e["prompt"] or "JSON" in e["prompt"] for e in repairs)


@pytest.mark.parametrize("variant", ["cut", "trailing_comma", "missing_required", "single_quotes"])
async def test_gives_up_with_a_typed_error(fake_llm, pool, variant):
    always_broken = GenOptions(max_tokens=800, extra_body={"fake_fault": f"malformed_json:{variant}"})
    with pytest.raises(StructuredOutputError) as info:
        await chat_json(pool, ASK, PLAN_SCHEMA, always_broken, attempts=3)
    assert "3 attempts" in str(info.value)
    assert fake_llm.stats()["generation_requests"] == 3
    problem = "schema" if variant == "missing_required" else "not valid JSON"
    assert problem in str(info.value)


async def test_json_wrapped_in_prose_is_accepted(fake_llm, pool):
    chatty = GenOptions(max_tokens=800, extra_body={"fake_fault": "malformed_json:prose"})
    plan, _ = await chat_json(pool, ASK, PLAN_SCHEMA, chatty)
    make_validator(PLAN_SCHEMA).validate(plan)
    assert fake_llm.stats()["generation_requests"] == 1


async def test_truncated_reply_is_retried_with_more_room(fake_llm, pool):
    fake_llm.update(truncate_rate=1.0)
    with pytest.raises(StructuredOutputError) as info:
        await chat_json(pool, ASK, PLAN_SCHEMA, GenOptions(max_tokens=300), attempts=3)
    assert "cut off" in str(info.value)
    assert [e["max_tokens"] for e in fake_llm.requests()] == [300, 600, 1200]
    fake_llm.update(truncate_rate=0.0)
    plan, result = await chat_json(pool, ASK, PLAN_SCHEMA, GenOptions(max_tokens=300))
    make_validator(PLAN_SCHEMA).validate(plan)


async def test_every_attempt_is_recorded_in_the_step_usage(fake_llm, pool):
    fake_llm.update(malformed_json_rate=1.0, seed=1)
    store = MemoryStepStore()
    ctx = JobContext(pool, store=store, job_id="job-9")

    async def plan_step():
        try:
            plan, _ = await chat_json(ctx.llm, ASK, PLAN_SCHEMA, GenOptions(max_tokens=800), attempts=2)
            return plan
        except StructuredOutputError:
            fake_llm.update(malformed_json_rate=0.0)
            plan, _ = await chat_json(ctx.llm, ASK, PLAN_SCHEMA, GenOptions(max_tokens=800), attempts=2)
            return plan

    plan = await ctx.step("plan", plan_step)
    make_validator(PLAN_SCHEMA).validate(plan)
    usage = store.usage["plan"]
    log = fake_llm.requests()
    assert usage.calls == len(log) == 3
    assert usage.completion_tokens == sum(e["completion_tokens"] for e in log)
    assert {e["session_id"] for e in log} == {"job-9"}  # the job id is the sticky key
