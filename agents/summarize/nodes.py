"""One summary node = one checkpointed step: prompt, call, validate, retry; and final-length control.

A node's step output is JSON: {"text", "words", "tokens", "calls", "attempts", "problem"}.
`problem` is None for a valid summary, else why the kept candidate misses its budget
(validity as in BooookScore: non-empty, ends in terminal punctuation, within its token
limit, not cut off). Model errors (HTTP, timeouts, an empty answer every time) raise.
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from agents.context import JobContext
from agents.llm.tokens import fit_max_tokens
from agents.llm.types import GenOptions, LLMClient, LLMError, LLMResult
from agents.sentences import sentence_spans
from agents.summarize.budgets import FINAL_TOLERANCE, BudgetError, within_target
from agents.text import count_tokens, count_words

FIRST_TEMPERATURE = 0.5  # BooookScore: 0.5 first, 1.0 on retries
RETRY_TEMPERATURE = 1.0
NODE_ATTEMPTS = 6
RETRY_SHRINK = 0.1  # each retry asks for (1 - 0.1 x attempt) of the word limit
REPAIR_AFTER = 2  # after this many failed rounds, an over-long answer may be cut to its limit
REPAIR_MIN_SHARE = 0.5  # ... if what is left still has half the words asked for
MAX_REVISIONS = 6  # final-length revisions after the final draft
TOKENIZER_WORST_CASE = 1.3  # a model tokenizer may need this many tokens per cl100k token
# Closing characters a finished sentence may end with (quotes and brackets after the stop).
_TERMINAL = re.compile(r"[.!?。！？…][\"'”’」』)）\]]*\s*$|[\"'”’」』]\s*$")


class EmptySummaryError(LLMError):
    """The model returned nothing usable for a node on every attempt."""


def ends_properly(text: str) -> bool:
    return bool(_TERMINAL.search(text))


def seed_for(key: str, attempt: int) -> int:
    """A stable per-call seed, so a server that honours seeds answers a re-run the same way."""
    digest = hashlib.blake2b(f"{key}#{attempt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def trim_to_sentence(text: str) -> str:
    """Drop a trailing unfinished sentence (the rest of an answer cut off mid-sentence)."""
    if ends_properly(text):
        return text
    spans = [(s, e) for s, e in sentence_spans(text) if ends_properly(text[s:e])]
    return text[: spans[-1][1]].rstrip() if spans else text


def cut_to_tokens(text: str, cap: int) -> str:
    """The longest prefix of whole sentences within `cap` tokens."""
    if count_tokens(text) <= cap:
        return text
    kept = 0
    for _, end in sentence_spans(text):
        if count_tokens(text[:end]) > cap:
            break
        kept = end
    return text[:kept].rstrip()


def repair(text: str, limit: int, asked_words: int) -> str | None:
    """An over-long or cut-off answer reduced to its finished sentences within `limit`
    tokens, or None when too little would be left."""
    cut = cut_to_tokens(trim_to_sentence(text), limit)
    if cut and ends_properly(cut) and count_words(cut) >= REPAIR_MIN_SHARE * asked_words:
        return cut
    return None


def structural_problem(text: str, result: LLMResult) -> str | None:
    if not text:
        return "empty"
    if result.truncated:
        return "cut off at max_tokens"
    if not ends_properly(text):
        return "does not end with a finished sentence"
    return None


def within_tokens(limit: int) -> Callable[[str, LLMResult], str | None]:
    def check(text: str, result: LLMResult) -> str | None:
        problem = structural_problem(text, result)
        if problem is None and count_tokens(text) > limit:
            problem = f"over its {limit}-token limit"
        return problem

    return check


def node_output(text: str, calls: int, attempts: int, problem: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "text": text,
        "words": count_words(text),
        "tokens": count_tokens(text),
        "calls": calls,
        "attempts": attempts,
        "problem": problem,
        **extra,
    }


async def room_for_answer(
    client: LLMClient, messages: list[dict[str, str]], max_tokens: int, prompt_tokens: int | None = None,
    token_ratio: float = 1.0,
) -> int:
    """max_tokens, lowered if the prompt (in the model's own tokens) leaves less room.

    The budgets are planned in cl100k tokens with a margin; asking the server to count
    (an extra request for HTTP backends) is only worth it when the prompt is near the limit.
    `prompt_tokens`, the caller's upper estimate of the prompt's cl100k tokens, saves
    counting a prompt that is far from the limit. `token_ratio`: the model's tokens per
    cl100k token as measured, when known (it scales the cl100k estimate)."""
    estimate = prompt_tokens if prompt_tokens is not None else sum(count_tokens(m["content"]) for m in messages)
    if prompt_tokens is None:
        estimate *= max(1.0, token_ratio)
    if estimate * TOKENIZER_WORST_CASE + max_tokens + 64 <= client.context_window:
        return max_tokens
    return await fit_max_tokens(client, messages, max_tokens)


def spread_factors(n: int) -> list[float]:
    """Length factors for n parallel samples: 1.0 alone, else evenly from 0.85 to 1.15. A
    biased model then has one sample asked for less and one for more; noise is covered by
    the samples being independent."""
    if n <= 1:
        return [1.0]
    return [0.85 + 0.3 * c / (n - 1) for c in range(n)]


async def generate(
    ctx: JobContext,
    key: str,
    render: Callable[[int], str],
    asked_words: int,
    max_tokens: int,
    check: Callable[[str, LLMResult], str | None],
    attempts: int = NODE_ATTEMPTS,
    shrink: float = RETRY_SHRINK,
    samples: int = 1,
    prefer: Callable[[str], float] | None = None,
    repair_limit: int | None = None,
    prompt_tokens: int | None = None,
    token_ratio: float = 1.0,
) -> dict[str, Any]:
    """Call the model until `check` passes (at most `attempts` rounds); run inside a step.

    A round makes `samples` calls at once (asked for spread lengths, different seeds) and
    keeps the passing answer that `prefer` ranks lowest. Round k asks for (1 - shrink x k)
    of `asked_words`, at a higher temperature (BooookScore). With `repair_limit`, after
    REPAIR_AFTER failed rounds an answer that ran long is cut to its finished sentences within
    that many tokens instead of asking again (a model that rambles to max_tokens would
    otherwise spend all six rounds; the reference keeps asking). When nothing passes, the best
    candidate is kept (finished sentences and the smallest overflow first) and its problem
    recorded; an answer cut mid-sentence loses its unfinished tail. The output lists every
    call's asked and obtained word counts (`samples`), which length control uses to learn
    the model's bias. `prompt_tokens`: an upper estimate of the prompt's size (see
    room_for_answer)."""
    candidates: list[tuple[str, str | None, int]] = []
    seen: list[dict[str, int]] = []

    async def call(asked: int, seed: int, temperature: float) -> tuple[str, str | None, int]:
        messages = [{"role": "user", "content": render(asked)}]
        room = await room_for_answer(ctx.llm, messages, max_tokens, prompt_tokens, token_ratio)
        if room < min(max_tokens, 64):
            raise BudgetError(
                f"{key}: the prompt leaves {room} tokens for the answer in the model's "
                f"{ctx.llm.context_window}-token context; use a smaller chunk_size or target_words"
            )
        options = GenOptions(max_tokens=room, temperature=temperature, seed=seed)
        result = await ctx.llm.chat(messages, options)
        text = result.text.strip()
        seen.append({"asked": asked, "words": count_words(text)})
        return text, check(text, result), asked

    calls = 0
    for attempt in range(attempts):
        base = asked_words * (1 - shrink * attempt)
        temperature = FIRST_TEMPERATURE if attempt == 0 else RETRY_TEMPERATURE
        asks = [max(1, round(base * f)) for f in spread_factors(samples)]
        results = await asyncio.gather(
            *(call(a, seed_for(key, attempt * samples + c), temperature) for c, a in enumerate(asks))
        )
        calls += len(results)
        passing = [r for r in results if r[1] is None]
        if passing:
            text, _, asked = min(passing, key=lambda r: prefer(r[0])) if prefer else passing[0]
            return node_output(text, calls, attempt + 1, None, asked=asked, samples=seen)
        candidates.extend(results)
        if repair_limit is not None and attempt + 1 >= REPAIR_AFTER:
            repaired = [(r, c[2]) for c in candidates if c[0] and (r := repair(c[0], repair_limit, c[2]))]
            if repaired:
                text, asked = max(repaired, key=lambda x: count_tokens(x[0]))
                return node_output(text, calls, attempt + 1, None, asked=asked, samples=seen, repaired=True)
    usable = [c for c in candidates if c[0]]
    if not usable:
        raise EmptySummaryError(f"{key}: the model returned an empty answer {calls} times")
    text, problem, asked = min(usable, key=lambda c: (not ends_properly(c[0]), count_tokens(c[0])))
    return node_output(trim_to_sentence(text), calls, attempts, problem, asked=asked, samples=seen)


# ----- final length control ---------------------------------------------------------------------

@dataclass
class Candidate:
    id: str
    text: str
    words: int
    samples: list[dict[str, int]]  # every call behind it: {"asked", "words"}


def distance_to(target: int) -> Callable[[str], float]:
    return lambda text: abs(count_words(text) - target)


def next_ask(target: int, samples: list[dict[str, int]]) -> int:
    """Correct for the model's length bias: divide the target by the geometric mean of the
    obtained/asked ratios seen so far (with a neutral 1.0 among them, which damps the first
    correction: one miss is as likely noise as bias). Kept within [target/2, 2 x target]."""
    ratios = [1.0] + [s["words"] / s["asked"] for s in samples if s["asked"] > 0 and s["words"] > 0]
    mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return max(max(1, round(target / 2)), min(2 * target, round(target / mean)))


def trim_to_words(text: str, max_words: int) -> str:
    """The longest prefix of whole sentences with at most `max_words` words."""
    kept_end = 0
    for _, end in sentence_spans(text):
        if count_words(text[:end]) > max_words:
            break
        kept_end = end
    return text[:kept_end].rstrip()


async def fit_final_length(
    ctx: JobContext,
    draft: Candidate,
    target: int,
    max_tokens_for: Callable[[int], int],
    samples: int = 1,
    on_revision: Callable[[dict[str, Any]], Any] | None = None,
) -> tuple[Candidate, dict[str, Any]]:
    """Revise the final summary until it is within +-10 % of `target` words.

    Each revision round is its own step (`revise/{k}`): `samples` parallel rewrites of the
    closest candidate so far, asked for a length corrected by the bias seen so far; the one
    closest to the target is kept. When all rounds miss, a candidate that is too long is cut
    to its longest prefix of whole sentences within the bound (if that lands in range);
    otherwise the closest candidate is returned and the report says the target was missed.
    Returns (chosen candidate, report)."""
    candidates = [draft]
    revisions: list[dict[str, Any]] = []
    for k in range(MAX_REVISIONS):
        best = min(candidates, key=lambda c: abs(c.words - target))
        if within_target(best.words, target):
            break
        asked = next_ask(target, [s for c in candidates for s in c.samples])
        expand = best.words < target
        key = f"revise/{k}"

        async def revise(best=best, asked=asked, expand=expand, key=key) -> dict[str, Any]:
            def render(words: int) -> str:
                return ctx.render(
                    "summarize/revise.j2", summary=best.text, current_words=best.words, words=words, expand=expand
                )

            out = await generate(
                ctx, key, render, asked, max_tokens_for(asked), structural_problem,
                attempts=3, shrink=0, samples=samples, prefer=distance_to(target),
            )
            return {**out, "revises": best.id}

        out = await ctx.step(key, revise)
        candidates.append(Candidate(key, out["text"], out["words"], out["samples"]))
        node = {"id": key, "kind": "revise", "children": [out["revises"]], "words": out["words"], "calls": out["calls"]}
        revisions.append(node)
        if on_revision is not None:
            await on_revision(node)
    best = min(candidates, key=lambda c: abs(c.words - target))
    report: dict[str, Any] = {"revisions": revisions, "length_ok": within_target(best.words, target), "trimmed": False}
    if not report["length_ok"]:
        over = [c for c in candidates if c.words > target * (1 + FINAL_TOLERANCE)]
        for c in sorted(over, key=lambda c: c.words):
            cut = trim_to_words(c.text, math.floor(target * (1 + FINAL_TOLERANCE)))
            if within_target(count_words(cut), target):
                best = Candidate(c.id, cut, count_words(cut), c.samples)
                report.update(length_ok=True, trimmed=True)
                break
    return best, report
