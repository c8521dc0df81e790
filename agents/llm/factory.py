"""Build the LLM clients a process uses from its settings."""
from __future__ import annotations

from agents.llm.types import LLMClient
from agents.settings import Settings


def _pool(settings: Settings, endpoints: list[str], api_key: str, model: str) -> LLMClient:
    from agents.llm.openai_pool import OpenAIPool

    return OpenAIPool(
        endpoints,
        api_key=api_key,
        model=model,
        max_inflight=settings.llm_max_inflight,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        context_window=settings.llm_context_window,
    )


def make_llm_client(settings: Settings) -> LLMClient:
    """The endpoint pool when LLM_ENDPOINTS is set, else the embedded GGUF model in its own
    supervised process (started on first use)."""
    if settings.endpoint_list:
        return _pool(settings, settings.endpoint_list, settings.llm_api_key, settings.llm_model)
    from agents.llm.embedded_process import EmbeddedModel, ModelProcess

    process = ModelProcess(
        model_path=settings.embedded_model_path,
        n_ctx=settings.llm_context_window,
        n_threads=settings.embedded_threads,
        prompt_cache_mb=settings.embedded_prompt_cache_mb,
    )
    return EmbeddedModel(process, max_retries=settings.llm_max_retries, timeout_s=settings.llm_timeout_s)


def make_judge_client(settings: Settings) -> LLMClient | None:
    """A pool over JUDGE_ENDPOINTS (same limits as the main pool), or None: no judging."""
    if not settings.judge_endpoint_list:
        return None
    return _pool(settings, settings.judge_endpoint_list, settings.judge_api_key, settings.judge_model)
