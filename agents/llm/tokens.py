"""Token budgets: the prompt plus max_tokens must fit the model's context window.

Counts come from the client's `count_tokens` (the model's own tokenizer where the backend
has one: vLLM or llama.cpp `/tokenize`, llama.cpp in-process; otherwise cl100k_base from
`agents.text`, an approximation). Chat templates add a few tokens per message that a plain
text count does not see; `MESSAGE_OVERHEAD_TOKENS` covers them (ChatML, Llama-3 and Mistral
templates use 3-7 per message).
"""
from __future__ import annotations

from agents.llm.types import LLMClient, Message

MESSAGE_OVERHEAD_TOKENS = 8
REPLY_PRIMER_TOKENS = 4  # the assistant header the template appends for the reply
SAFETY_MARGIN_TOKENS = 16  # slack for tokenizer mismatch when the count is approximate


async def count_message_tokens(client: LLMClient, messages: list[Message]) -> int:
    """Prompt tokens of a chat request, template overhead included (an upper estimate)."""
    total = REPLY_PRIMER_TOKENS
    for message in messages:
        total += await client.count_tokens(message.get("content") or "") + MESSAGE_OVERHEAD_TOKENS
    return total


def output_room(context_window: int, prompt_tokens: int, margin: int = SAFETY_MARGIN_TOKENS) -> int:
    """How many tokens the model can still generate after this prompt (0 when it is full)."""
    return max(0, context_window - prompt_tokens - margin)


async def fit_max_tokens(client: LLMClient, messages: list[Message], wanted: int) -> int:
    """`wanted`, lowered so the request fits the context window (0: the prompt alone is too long)."""
    prompt = await count_message_tokens(client, messages)
    return min(wanted, output_room(client.context_window, prompt))
