"""An in-process LLMClient for store and runner tests that need no HTTP: counts its calls."""
from __future__ import annotations

import asyncio

from agents.llm.types import GenOptions, LLMResult


class CountingLLM:
    model_name = "counting"
    context_window = 8192

    def __init__(self, delay_s: float = 0.0):
        self.calls: list[str] = []
        self.delay_s = delay_s

    async def chat(self, messages, options: GenOptions | None = None) -> LLMResult:
        self.calls.append(messages[-1]["content"])
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return LLMResult(text=f"reply {len(self.calls)}", finish_reason="stop", prompt_tokens=10,
                         completion_tokens=3, latency_s=self.delay_s, model=self.model_name)

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult:
        return await self.chat([{"role": "user", "content": prompt}], options)

    async def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def ensure_ready(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
