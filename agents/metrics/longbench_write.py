"""LongBench-Write scores: the length score S_l and the judged quality score S_q.

S_l (word counts from `agents.text.count_words`, LongWriter-compatible), for required length
l and produced length l':
    l' >  l:  100 * max(0, 1 - (l'/l - 1) / 3)      (over-length, gentle)
    l' <= l:  100 * max(0, 1 - (l/l' - 1) / 2)      (under-length, harsh)
    l' == 0:  0                                     (the reference code divides by zero)

S_q: a judge model rates six dimensions with integers 1..5 while ignoring length. Per
dimension, score_d = (mean rating - 1) * 25 (1..5 -> 0..100); S_q is the mean of the six.
A verdict that never parses, or a response too long for the judge's context, is recorded as
missing with its reason: excluded from the means and counted (per length bin with the reason
in the evaluation report), never turned into a number. The overall score is S = (S_l + S_q) / 2.
"""
from __future__ import annotations

from statistics import fmean
from typing import Any, Callable, Iterable

from agents.llm.tokens import SAFETY_MARGIN_TOKENS, count_message_tokens
from agents.llm.types import GenOptions, LLMClient, StructuredOutputError

QUALITY_DIMENSIONS = (
    "Relevance",
    "Accuracy",
    "Coherence",
    "Clarity",
    "Breadth and Depth",
    "Reading Experience",
)

JUDGE_TEMPLATE = "judge/longbench_write.j2"
JUDGE_ATTEMPTS = 5  # the reference evaluation tries each item up to five times
JUDGE_OPTIONS = dict(temperature=0.5, max_tokens=1024)  # the reference judge settings
TOO_LONG_FOR_JUDGE = "does not fit the judge's context"

# The analysis comes first so the model reasons before it rates.
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Analysis": {"type": "string"},
        **{d: {"type": "integer", "minimum": 1, "maximum": 5} for d in QUALITY_DIMENSIONS},
    },
    "required": ["Analysis", *QUALITY_DIMENSIONS],
    "additionalProperties": False,
}


def length_score(produced: int, required: int) -> float:
    """S_l for one response: 100 at the required length, 0 at >= 4x or <= 1/3 of it."""
    if required <= 0:
        raise ValueError("required length must be positive")
    if produced <= 0:
        return 0.0
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


def verdict_ratings(verdict: Any) -> dict[str, int]:
    """The six integer ratings of a judge verdict; ValueError unless all are integers 1..5."""
    if not isinstance(verdict, dict):
        raise ValueError("verdict is not a JSON object")
    ratings: dict[str, int] = {}
    for dim in QUALITY_DIMENSIONS:
        value = verdict.get(dim)
        # bool is an int subclass in Python; a rating of `true` is not a rating.
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise ValueError(f"{dim!r} must be an integer from 1 to 5, got {value!r}")
        ratings[dim] = value
    return ratings


def rating_to_score(mean_rating: float) -> float:
    """Map a 1..5 rating (or mean rating) to 0..100."""
    return (mean_rating - 1.0) * 25.0


def item_quality_score(ratings: dict[str, int]) -> float:
    """S_q of one judged response: the mean of its six mapped ratings."""
    return fmean(rating_to_score(ratings[d]) for d in QUALITY_DIMENSIONS)


def aggregate_quality(items: Iterable[dict[str, int] | None]) -> dict[str, Any]:
    """S_q over many responses. `None` items (missing verdicts) are excluded and counted."""
    items = list(items)
    missing = sum(1 for r in items if r is None)
    scored = [r for r in items if r is not None]
    if not scored:
        return {"S_q": None, "dimensions": None, "scored": 0, "missing": missing}
    dimensions = {d: rating_to_score(fmean(r[d] for r in scored)) for d in QUALITY_DIMENSIONS}
    return {
        "S_q": fmean(dimensions.values()),
        "dimensions": dimensions,
        "scored": len(scored),
        "missing": missing,
    }


def overall_score(s_l: float | None, s_q: float | None) -> float | None:
    """The paper's S = (S_l + S_q) / 2; None unless both are known."""
    if s_l is None or s_q is None:
        return None
    return (s_l + s_q) / 2.0


def unjudged_reason(error: str | None) -> str:
    """Why a response has no verdict, as a reason to count by: the judge's context size for a
    response too long for it (the token counts differ per response), the exception type
    for a verdict that never parsed."""
    if not error:
        return "no reason recorded"
    if error.startswith(TOO_LONG_FOR_JUDGE):
        window = error.split(" > ", 1)[-1].split(")", 1)[0]
        return f"{TOO_LONG_FOR_JUDGE} (> {window} tokens)"
    return "no valid verdict: " + error.split(":", 1)[0]


def judge_messages(instruction: str, response: str, render: Callable[..., str] | None = None) -> list[dict[str, str]]:
    """The judge prompt as chat messages. `render(template, **vars)` defaults to prompts.render."""
    if render is None:
        import prompts

        def render(template: str, **variables: Any) -> str:
            return prompts.render(template, **variables).text

    text = render(JUDGE_TEMPLATE, instruction=instruction, response=response, dimensions=QUALITY_DIMENSIONS)
    return [{"role": "user", "content": text}]


async def judge_quality(
    client: LLMClient,
    instruction: str,
    response: str,
    *,
    render: Callable[..., str] | None = None,
    options: GenOptions | None = None,
    attempts: int = JUDGE_ATTEMPTS,
    prompt: str | None = None,
) -> dict[str, Any]:
    """Ask the judge for a verdict. Always returns a JSON-serializable record:

    {"status": "scored", "ratings": {dim: int}, "S_q": float, "analysis": str}
    {"status": "missing", "error": "..."}   (never parsed, or the response does not fit the judge)

    Transport failures (LLMUnavailable, timeouts after retries) propagate: they say nothing
    about the verdict, and a resumed job retries only this step.
    """
    from agents.llm.structured import chat_json

    # `prompt`: a judge prompt already filled (the paper protocol's own prompt file).
    messages = [{"role": "user", "content": prompt}] if prompt is not None else judge_messages(instruction, response, render)
    options = options or GenOptions(**JUDGE_OPTIONS)
    options.json_schema = JUDGE_SCHEMA
    # Counted as the judge's server counts the request (its tokenizer, the chat template's overhead).
    prompt_tokens = await count_message_tokens(client, messages)  # also learns the judge's window
    needed, window = prompt_tokens + SAFETY_MARGIN_TOKENS + options.max_tokens, client.context_window
    if needed > window:
        return {
            "status": "missing",
            "error": f"{TOO_LONG_FOR_JUDGE} ({needed} tokens > {window}): the response is too long for the "
            f"judge ({prompt_tokens} prompt tokens + {options.max_tokens} for the verdict)",
        }
    try:
        verdict, _ = await chat_json(client, messages, JUDGE_SCHEMA, options, attempts=attempts)
        ratings = verdict_ratings(verdict)
    except (StructuredOutputError, ValueError) as exc:
        return {"status": "missing", "error": f"{type(exc).__name__}: {exc}"}
    return {
        "status": "scored",
        "ratings": ratings,
        "S_q": item_quality_score(ratings),
        "analysis": str(verdict.get("Analysis", "")),
    }
