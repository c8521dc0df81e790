"""SFT dataset builds (LongWriter-6k style): instruction input, generated instructions,
quality gates, exporters and stats. Pure functions; the `dataset` job kind (agents/dataset_kind.py)
spawns one `write` job per instruction and calls these.

- `parse_instruction_jsonl(text)` -> (items, rejected): one {"instruction"|"prompt"|"messages",
  optional "target_words"|"length"} per line; a bad line is reported with its number and
  the good lines are kept (`read_jsonl_rows(text, row_fn)`: the line reading, shared with other
  recipes' readers).
- `generate_instructions(ctx, seeds, count)`: new instructions from seed prompts, one
  checkpointed step per model call (`instructions/{k}`).
- `assign_lengths(items, distribution, seed, max_target_words)`: the target of each
  instruction and where it came from ("given", "parsed" from the text, or "drawn" from a
  `LengthDistribution`, seeded); `length_target.with_stated_length(instruction, words)` adds the sentence
  that states a drawn length ("(about 4,300 words)", "（约4300字）").
- `Sample.from_write_job(status, params, result)`, then `apply_gates(samples, GateSettings())`
  -> (kept, counts per gate). Gates run in order and each sample is dropped by the first
  one it fails: failed, truncated, refusal, repetitive, length, duplicate, near_duplicate.
- `export_records(kept, "longwriter"|"alpaca"|"sharegpt", state_length=True)`: the user turn
  states the target length when the instruction does not (`state_length=False`: never, and
  a sentence this module added is taken off again); `dataset_stats(samples, kept, counts)`;
  `write_files(out_dir, {format: records}, stats)`: the export files of every recipe.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, median
from typing import Annotated, Any, Callable, Iterable, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.length_target import parse_target_words, with_stated_length, without_stated_length
from agents.metrics.longbench_write import length_score
from agents.text import count_words, detect_language, unstorable_text

GATES = ("failed", "truncated", "refusal", "repetitive", "length", "duplicate", "near_duplicate")
FORMATS = ("longwriter", "alpaca", "sharegpt")
DEFAULT_MAX_TARGET_WORDS = 100_000
# Length histogram edges (words / 字): LongWriter-6k outputs run from 2k to 32k.
HISTOGRAM_EDGES = (0, 500, 1000, 2000, 4000, 8000, 16000, 32000)


# -- input -------------------------------------------------------------------------------------


def parse_instruction_jsonl(
    data: str | bytes, *, max_target_words: int = DEFAULT_MAX_TARGET_WORDS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Instructions from JSONL text. Returns (items, rejected):
    items    [{"instruction": str, "target_words": int | None, "line": n}, ...]
    rejected [{"line": n, "error": "..."}, ...]  (1-based line numbers; blank lines skipped)

    Accepted fields: "instruction" or "prompt" (LongWriter's instructions.jsonl) or
    "messages" (LongWriter-6k records: the first user turn); "target_words" or "length"
    (LongBench-Write). Without a target the write job reads it from the instruction."""
    return read_jsonl_rows(data, lambda row: _instruction_from_row(row, max_target_words))


def read_jsonl_rows(
    data: str | bytes, row_fn: Callable[[Any], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JSONL text, one row at a time through `row_fn` (a parsed JSON value -> a dict, or
    ValueError saying what is wrong with it). Returns ([{**row_fn(row), "line": n}, ...],
    [{"line": n, "error": "..."}, ...]): 1-based line numbers, blank lines skipped, a line that
    is not UTF-8 or not JSON rejected with the reason, and the good lines kept."""
    lines: list[bytes | str] = data.split(b"\n") if isinstance(data, bytes) else data.split("\n")
    items: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            rejected.append({"line": number, "error": f"not UTF-8: {exc.reason} at byte {exc.start}"})
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if problem := unstorable_text(row, "line"):  # "\ud800" or "\u0000" escapes
                raise ValueError(problem)
            items.append({**row_fn(row), "line": number})
        except json.JSONDecodeError as exc:
            rejected.append({"line": number, "error": f"invalid JSON: {exc.msg} (column {exc.colno})"})
        except ValueError as exc:
            rejected.append({"line": number, "error": str(exc)})
    return items, rejected


def _instruction_from_row(row: Any, max_target_words: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    instruction = row.get("instruction", row.get("prompt"))
    if instruction is None and isinstance(row.get("messages"), list):
        instruction = next((m.get("content") for m in row["messages"]
                            if isinstance(m, dict) and m.get("role") == "user"), None)
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError('missing instruction: give a non-empty "instruction" (or "prompt", or "messages" with a user turn)')
    target = row.get("target_words", row.get("length"))
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, int):
            raise ValueError(f"target_words must be an integer, got {target!r}")
        if not 1 <= target <= max_target_words:
            raise ValueError(f"target_words must be between 1 and {max_target_words}, got {target}")
    return {"instruction": instruction.strip(), "target_words": target}


# -- target lengths ------------------------------------------------------------------------------
#
# LongWriter-6k's answers run from 2k to 32k words, spread fairly evenly between 2k and 10k
# with a tail to about 32k (spec §2); only 1,748 of its 6,000 prompts state a length. An
# instruction that states none gets a length drawn from a distribution (default: that shape)
# before its write job starts, and the instruction is rewritten to say it, so the training
# pair teaches "asked for N, wrote N".

LENGTH_SOURCES = ("given", "parsed", "drawn")
LW6K_BODY = (2000, 10_000)  # uniform body of the default distribution, words
LW6K_TAIL_MAX = 32_000  # the tail runs log-uniformly from the body's top to here
LW6K_TAIL_SHARE = 0.1  # share of draws in the tail


class LongWriter6kLengths(BaseModel):
    """The default: like LongWriter-6k's answers. 90% uniform on 2,000-10,000 words, 10%
    log-uniform on 10,000-32,000 (density falling as 1/x, so the tail thins out towards
    32k); mean about 7,300, median about 6,400. Drawn lengths are rounded to 100."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["longwriter6k"] = "longwriter6k"

    def bounds(self) -> tuple[int, int]:
        return LW6K_BODY[0], LW6K_TAIL_MAX

    def quantile(self, u: float) -> float:
        body_share = 1.0 - LW6K_TAIL_SHARE
        if u < body_share:
            lo, hi = LW6K_BODY
            return lo + (hi - lo) * u / body_share
        tail_u = (u - body_share) / LW6K_TAIL_SHARE
        return LW6K_BODY[1] * (LW6K_TAIL_MAX / LW6K_BODY[1]) ** tail_u


class UniformLengths(BaseModel):
    """Uniform between `min` and `max` words (inclusive), rounded like the default."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["uniform"]
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "UniformLengths":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def bounds(self) -> tuple[int, int]:
        return self.min, self.max

    def quantile(self, u: float) -> float:
        return self.min + (self.max - self.min) * u


class FixedLengths(BaseModel):
    """Every instruction without a length gets `words`."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["fixed"]
    words: int = Field(ge=1)

    def bounds(self) -> tuple[int, int]:
        return self.words, self.words

    def quantile(self, u: float) -> float:
        return float(self.words)


LengthDistribution = Annotated[Union[LongWriter6kLengths, UniformLengths, FixedLengths], Field(discriminator="kind")]


def _round_length(words: float) -> int:
    """To 100 from 1,000 up, to 10 from 100 up: lengths a person would ask for."""
    step = 100 if words >= 1000 else 10 if words >= 100 else 1
    return int(round(words / step)) * step


def draw_unit(seed: int, instruction: str, occurrence: int = 0) -> float:
    """A number in [0, 1) fixed by (seed, instruction, occurrence): the same in every process,
    Python version and platform, and independent of the item's position, so a rebuild (or a
    longer file with the same instructions) draws the same lengths."""
    key = f"{seed}\x1f{occurrence}\x1f{instruction}".encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64


def draw_length(distribution: Any, u: float, max_target_words: int = DEFAULT_MAX_TARGET_WORDS) -> int:
    """The length for unit draw `u`: the distribution's quantile, rounded, kept within the
    distribution's bounds and at most `max_target_words`."""
    lo, hi = distribution.bounds()
    words = min(max(_round_length(distribution.quantile(u)), lo), hi)
    return max(1, min(words, max_target_words))


def assign_lengths(
    items: list[dict[str, Any]],
    distribution: Any = None,
    seed: int = 0,
    max_target_words: int = DEFAULT_MAX_TARGET_WORDS,
) -> list[dict[str, Any]]:
    """For each item ({"instruction", "target_words"?}), in order: {"target_words", "source"}.
    source "given": the item's target_words; "parsed": the instruction states it (its number);
    "drawn": neither, so drawn from `distribution` (default LongWriter6kLengths)."""
    distribution = distribution or LongWriter6kLengths()
    occurrences: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for item in items:
        instruction = item["instruction"]
        stated = parse_target_words(instruction)
        if item.get("target_words"):
            out.append({"target_words": item["target_words"], "source": "given"})
        elif stated:
            out.append({"target_words": stated, "source": "parsed"})
        else:
            n = occurrences.get(instruction, 0)
            occurrences[instruction] = n + 1
            words = draw_length(distribution, draw_unit(seed, instruction, n), max_target_words)
            out.append({"target_words": words, "source": "drawn"})
    return out


# -- instruction generation -----------------------------------------------------------------------

GENERATE_TEMPLATE = "dataset/instructions.j2"
GENERATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "instructions": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "instruction": {"type": "string"},
                    "target_words": {"type": "integer"},
                },
                "required": ["instruction", "target_words"],
            },
        }
    },
    "required": ["instructions"],
}


def normalize_text(text: str) -> str:
    """Case-, width- and punctuation-insensitive form used for exact-duplicate checks."""
    return " ".join(re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold()))


async def generate_instructions(
    ctx,
    seeds: list[str],
    count: int,
    *,
    per_call: int = 8,
    min_words: int = 1000,
    max_words: int = 10_000,
    language: str = "auto",
    model: str | None = None,
    temperature: float = 1.0,
) -> list[dict[str, Any]]:
    """`count` new writing instructions in the spirit of the seed prompts, each
    {"instruction", "target_words", "seed"}. Call k (a step `instructions/{k}`) uses seed
    k mod len(seeds); calls run concurrently in rounds until `count` distinct instructions
    exist (at most a few extra rounds, then fewer are returned). A length stated in the
    instruction text wins over the model's number; targets are clamped to [min_words, max_words]."""
    from agents.llm.structured import chat_json
    from agents.llm.types import GenOptions

    seeds = [s.strip() for s in seeds if s and s.strip()]
    if not seeds:
        raise ValueError("give at least one non-empty seed prompt")
    if count < 1:
        raise ValueError("count must be at least 1")
    per_call = max(1, min(per_call, math.ceil(count / len(seeds))))  # every seed gets a call

    async def batch(k: int) -> list[dict[str, Any]]:
        seed = seeds[k % len(seeds)]
        lang = detect_language(seed) if language == "auto" else language

        async def call() -> list[dict[str, Any]]:
            prompt = ctx.render(
                GENERATE_TEMPLATE, seed=seed, n=per_call, min_words=min_words, max_words=max_words,
                language_name={"en": "English", "zh": "Chinese"}.get(lang, lang), variant=k,
            )
            options = GenOptions(max_tokens=min(4096, 300 * per_call + 200), temperature=temperature, model=model)
            value, _ = await chat_json(ctx.llm, [{"role": "user", "content": prompt}], GENERATE_SCHEMA, options)
            return value["instructions"]

        return await ctx.step(f"instructions/{k}", call)

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    next_call = 0
    max_calls = 2 * math.ceil(count / per_call) + 2
    while len(out) < count and next_call < max_calls:
        calls = min(math.ceil((count - len(out)) / per_call), max_calls - next_call)
        results = await asyncio.gather(*(batch(k) for k in range(next_call, next_call + calls)))
        # Take at most per_call from each call, interleaved, so every seed is represented.
        interleaved = [(k, batch_items[j]) for j in range(per_call)
                       for k, batch_items in zip(range(next_call, next_call + calls), results) if j < len(batch_items)]
        for k, g in interleaved:
            if isinstance(g, dict):
                text = str(g.get("instruction", "")).strip()
                key = normalize_text(text)
                if not key or key in seen or len(out) >= count:
                    continue
                seen.add(key)
                stated = parse_target_words(text)
                asked = g.get("target_words") if isinstance(g.get("target_words"), int) else min_words
                target = stated if stated else min(max(asked, min_words), max_words)
                out.append({"instruction": text, "target_words": target, "seed": k % len(seeds)})
        next_call += calls
    if not out:
        raise ValueError("the model generated no usable instructions")
    return out


# -- refusals ------------------------------------------------------------------------------------
#
# Some generated answers are refusals ("I'm sorry, but I can't help with that", "抱歉，我无法
# 满足您的要求"); LongWriter-6k has a few. The detector is conservative: a refusal sentence must
# START a sentence (not sit inside quoted dialogue) and pair an apology, an "As an AI" frame or
# a flat "I cannot" with a verb of serving the request ("help", "fulfill", "write that", "撰写"),
# so an apology letter ("I'm sorry, but I cannot attend...", "...provide the refund") or a
# narrator ("I can't help thinking...") is not one. Strong forms count within the first
# REFUSAL_HEAD_CHARS characters of any answer; in a short answer (REFUSAL_SHORT_WORDS or
# fewer), which is then mostly refusal, the weaker forms count too, anywhere.

REFUSAL_HEAD_CHARS = 300
REFUSAL_SHORT_WORDS = 150

_APOS = "['’]"
# Where a sentence starts, with Markdown list/heading/emphasis marks allowed before it (a quote
# mark is not, so dialogue never matches).
_SENTENCE_START = r"(?:^|(?<=[.!?。！？:：…\n]))[ \t\r\n\u3000#>*_\-]*"
_NEG = (rf"(?:can(?:not|{_APOS}t| not)|(?:am|{_APOS}m) (?:unable|not able) to|won{_APOS}t(?: be able to)?"
        rf"|will not(?: be able to)?|(?:must|have to) (?:respectfully |politely )?decline(?: to)?"
        rf"|(?:am|{_APOS}m) not (?:comfortable|in a position to)|(?:do not|don{_APOS}t) feel comfortable)")
_I_NEG = rf"I\s*{_NEG}(?:\s+(?:really|currently|directly|fully|simply|ethically|in good conscience))?"
# What a refused request's object looks like after a general verb ("write that", "provide a
# 10,000-word essay"); "provide the refund" or "write anymore" is not one.
_OBJECT = (r"(?:(?:that|this|it|such|these|those|you|your|any|content|assistance|help|information|material"
           r"|responses?|more than|so many|over|with|on)\b|\d|an? (?:[\w'’,-]+\s+){0,4}?(?:essay|article|story|response"
           r"|answer|text|piece|report|novel|paper|guide|book|post|script|poem|speech|content)s?\b"
           r"|the (?:requested|full|entire|complete|whole)\b)")
_SERVE = (rf"(?:(?:fulfil+|comply|assist|accommodate|oblige)\b|help\b(?!\s+\w+ing\b)"
          rf"|(?:provide|write|create|generate|produce|compose|draft|complete|continue|do|support|answer|respond to)"
          rf"(?:\s+{_OBJECT}|\s*[.!,;]|\s*$))")
_APOLOGY = (r"(?:(?:I{0}m|I am)\s+(?:(?:really|very|so|truly|terribly|deeply|extremely)\s+)?sorry"
            r"|sorry|apologies|my apologies|I apologi[sz]e|unfortunately|regrettably)").format(_APOS)
_AS_AI = (r"As an?\s+(?:AI|artificial intelligence|(?:large )?language model|AI (?:language )?model|AI assistant"
          r"|LLM|assistant)\b[^.!?\n]{0,40}?,?\s*")

_EN_STRONG = re.compile(
    _SENTENCE_START + rf"(?:{_APOLOGY}\s*[,.!]?\s*(?:but\s+)?(?:{_AS_AI})?|{_AS_AI}|(?=I\s*{_NEG}\s+(?:fulfil|comply|(?:assist|help)(?: you)? with (?:that|this|your))))"
    + rf"{_I_NEG}\s+{_SERVE}",
    re.I,
)
# Weak (short answers only): a flat "I can't write a story about that".
_EN_WEAK = re.compile(_SENTENCE_START + rf"(?:{_APOLOGY}\s*[,.!]?\s*(?:but\s+)?)?{_I_NEG}\s+{_SERVE}", re.I)

_ZH_NEG = r"(?:无法|不能|没办法|没有办法|不可以|不便|恕难)"
_ZH_FOR = r"(?:为您|为你|帮您|帮你|给您|给你|向您|向你|替您|替你)"
_ZH_SERVE_SPECIFIC = r"(?:满足|协助|帮助|帮忙|回答|生成|撰写|创作|编写|继续|答应|遵从)"
_ZH_SERVE_GENERAL = r"(?:提供|完成|写|处理|执行|参与|做)"
_ZH_OBJECT = r"(?:这|该|此|您|你|相关|上述|此类|这类|这样|任何|如此)"
_ZH_SERVE = rf"(?:{_ZH_FOR}\S|{_ZH_SERVE_SPECIFIC}|{_ZH_SERVE_GENERAL}[^，。！？\n]{{0,2}}{_ZH_OBJECT})"
_ZH_APOLOGY = r"(?:(?:很|非常|十分|真的很)?(?:抱歉|对不起|不好意思)|很遗憾|遗憾的是)"
_ZH_AS_AI = r"作为(?:一个|一名)?(?:AI|人工智能|(?:AI|人工智能)?语言模型|(?:AI|人工智能)?(?:智能)?助手)[^。！？\n]{0,20}?"
_ZH_STRONG = re.compile(
    _SENTENCE_START + rf"(?:{_ZH_APOLOGY}[，,！!。\s]*(?:但(?:是)?[，,]?)?(?:{_ZH_AS_AI}[，,]?)?|{_ZH_AS_AI}[，,]?)"
    + rf"我(?:目前|现在)?{_ZH_NEG}{_ZH_SERVE}",
    re.I,
)
_ZH_WEAK = re.compile(_SENTENCE_START + rf"(?:{_ZH_APOLOGY}[，,！!。\s]*(?:但(?:是)?[，,]?)?)?我(?:目前|现在)?{_ZH_NEG}"
                      rf"(?:{_ZH_FOR}|{_ZH_SERVE_SPECIFIC}|{_ZH_SERVE_GENERAL})")


def is_refusal(text: str, word_count: int | None = None) -> bool:
    """Whether an answer is a refusal (see above). `word_count` (count_words) saves a count."""
    text = text.strip()
    if not text:
        return False
    head = text[:REFUSAL_HEAD_CHARS]
    if _EN_STRONG.search(head) or _ZH_STRONG.search(head):
        return True
    words = count_words(text) if word_count is None else word_count
    if words <= REFUSAL_SHORT_WORDS:
        return any(p.search(text) for p in (_EN_STRONG, _ZH_STRONG, _EN_WEAK, _ZH_WEAK))
    return False


# -- samples and gates -------------------------------------------------------------------------------


@dataclass
class Sample:
    """One finished (or failed) write job, as the gates see it."""

    instruction: str
    status: str  # the job status: "succeeded", "failed", "cancelled", ...
    text: str = ""
    target_words: int | None = None
    word_count: int = 0
    truncated: bool = False
    language: str = ""
    method: str = ""
    dropped_by: str | None = None  # set by apply_gates
    extra: dict[str, Any] = field(default_factory=dict)
    features: TextFeatures | None = None  # what the gates measure of the text, computed once

    def gate_features(self, shingle_size: int) -> TextFeatures:
        if self.features is None or self.features.shingle_size != shingle_size:
            self.features = text_features(self.text, shingle_size)
        return self.features

    @classmethod
    def from_write_job(cls, status: str, params: dict[str, Any] | None, result: dict[str, Any] | None) -> "Sample":
        params, result = params or {}, result or {}
        text = result.get("text") if isinstance(result.get("text"), str) else ""
        truncated = bool(result.get("truncated")) or any(
            isinstance(s, dict) and (s.get("truncated") or s.get("finish_reason") == "length")
            for s in result.get("sections") or []
        )
        return cls(
            instruction=str(params.get("instruction") or ""),
            status=status,
            text=text,
            target_words=result.get("target_words") or params.get("target_words"),
            word_count=int(result.get("word_count") if result.get("word_count") is not None else count_words(text)),
            truncated=truncated,
            language=str(result.get("language") or ""),
            method=str(result.get("method") or params.get("method") or ""),
        )


class GateSettings(BaseModel):
    """Quality gates applied before export, in the order of GATES.

    - truncated: drop samples where any model call ended at max_tokens.
    - refusal: drop answers that are refusals ("I'm sorry, but I can't help with that",
      "As an AI language model, I cannot...", "抱歉，我无法满足您的要求"): a refusal sentence
      starting a sentence in the first 300 characters, or anywhere in an answer of at most
      150 words. Quoted dialogue does not count (see `is_refusal`).
    - repetitive: drop when the share of repeated n-grams (occurrences beyond the first,
      over all n-grams; units are English words or CJK characters) exceeds the limit for
      4-grams or for 8-grams. CJK text uses 2n-character grams (a word is ~2 characters).
      Measured: ordinary prose and the fake model's text stay under ~0.06 (4-grams) and
      ~0.00 (8-grams) even at 50k words; a 1,000-word passage said twice gives ~0.5 for both,
      a 300-word paragraph looped three times after 3,000 good words gives ~0.15.
    - length: drop when |words / target - 1| > length_tolerance (None: off); and, when set,
      when S_l < min_length_score (the ModelScope LongWriter-6k filter used 80).
    - duplicate: exact duplicates of the response (normalized text); the first is kept.
    - near_duplicate: responses whose word-shingle Jaccard similarity with a kept one is
      >= near_duplicate_threshold (MinHash + LSH to find candidates, exact Jaccard to decide).
    """

    drop_truncated: bool = True
    drop_refusals: bool = True
    max_repeated_4gram_share: float = Field(0.3, ge=0.0, le=1.0)
    max_repeated_8gram_share: float = Field(0.1, ge=0.0, le=1.0)
    length_tolerance: float | None = Field(0.2, ge=0.0)
    min_length_score: float | None = Field(None, ge=0.0, le=100.0)
    drop_duplicates: bool = True
    near_duplicate_threshold: float | None = Field(0.8, gt=0.0, le=1.0)
    shingle_size: int = Field(5, ge=1, le=20)


_CJK_CHAR = re.compile(r"[\u4e00-\u9fff]")
_UNIT = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+")


def text_units(text: str) -> list[str]:
    """CJK characters and other word runs, case-folded: the units n-grams are made of."""
    return _UNIT.findall(unicodedata.normalize("NFKC", text).casefold())


# N-grams are compared by 64-bit hashes, computed for all positions at once with numpy:
# each unit is hashed once (crc32), and an n-gram's hash is a polynomial over its units'
# hashes (uint64 arithmetic wraps). Collisions are negligible at these sizes, and the
# hashes are the same in every process, so the gates decide the same way on every run.
_NGRAM_MULTIPLIER = 0x9E3779B97F4A7C15


def _unit_hashes(units: list[str]):
    return np.fromiter((zlib.crc32(u.encode()) for u in units), dtype=np.uint64, count=len(units))


def _ngram_hashes(unit_hashes, n: int):
    """Hash of the n-gram starting at each position (empty when there are fewer than n units)."""
    count = len(unit_hashes) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        acc = np.zeros(count, dtype=np.uint64)
        for k in range(n):
            acc = acc * np.uint64(_NGRAM_MULTIPLIER) + unit_hashes[k:k + count] + np.uint64(1)
    return acc


def _repeated_share(gram_hashes) -> float:
    """Share of n-gram occurrences that repeat an earlier one (0 for texts shorter than n)."""
    if len(gram_hashes) == 0:
        return 0.0
    return 1.0 - len(np.unique(gram_hashes)) / len(gram_hashes)


def _ngram_scale(units: list[str]) -> int:
    """2 for CJK-dominant text (a word is about two characters), else 1."""
    cjk = len(_CJK_CHAR.findall("".join(units)))  # every CJK character is a unit of its own
    return 2 if units and cjk * 2 > len(units) else 1


def repetition(text: str) -> dict[str, float]:
    """{"4gram": share, "8gram": share}; CJK-dominant text uses 8- and 16-character grams."""
    units = text_units(text)
    return _repetition(units, _unit_hashes(units))


def _repetition(units: list[str], unit_hashes) -> dict[str, float]:
    scale = _ngram_scale(units)
    return {"4gram": _repeated_share(_ngram_hashes(unit_hashes, 4 * scale)),
            "8gram": _repeated_share(_ngram_hashes(unit_hashes, 8 * scale))}


@dataclass
class TextFeatures:
    """What the gates need of one text, computed in one pass over its units."""

    repetition: dict[str, float]
    shingle_size: int
    shingles: Any  # sorted unique uint64 hashes of its word shingles


def text_features(text: str, shingle_size: int) -> TextFeatures:
    units = text_units(text)
    hashes = _unit_hashes(units)
    shingles = _ngram_hashes(hashes, min(shingle_size, len(units)))  # a short text is one shingle
    return TextFeatures(repetition=_repetition(units, hashes), shingle_size=shingle_size, shingles=np.unique(shingles))


def gate_failure(sample: Sample, settings: GateSettings) -> str | None:
    """The first per-sample gate `sample` fails (duplicates are checked across samples)."""
    if sample.status != "succeeded" or not sample.text.strip():
        return "failed"
    if settings.drop_truncated and sample.truncated:
        return "truncated"
    if settings.drop_refusals and is_refusal(sample.text, sample.word_count or None):
        return "refusal"
    rep = sample.gate_features(settings.shingle_size).repetition
    if rep["4gram"] > settings.max_repeated_4gram_share or rep["8gram"] > settings.max_repeated_8gram_share:
        return "repetitive"
    if sample.target_words:
        ratio = sample.word_count / sample.target_words
        if settings.length_tolerance is not None and abs(ratio - 1.0) > settings.length_tolerance:
            return "length"
        if settings.min_length_score is not None and length_score(sample.word_count, sample.target_words) < settings.min_length_score:
            return "length"
    return None


_MINHASH_BITS = 6
_MINHASH_PERMS = 1 << _MINHASH_BITS
_MINHASH_SEED = 0x5EED5EED5EED5EED
_LSH_BANDS = 16  # 16 bands of 4 rows: pairs at Jaccard 0.8 collide with probability > 0.999


def _minhash(shingles) -> tuple[int, ...]:
    """One-permutation MinHash: each shingle hash is mixed once and falls into one of
    _MINHASH_PERMS bins by its top bits; a bin's value is its smallest mixed hash (2**64 - 1
    when empty). Linear in the shingles, and as good for LSH candidates (exact Jaccard decides)."""
    empty = np.iinfo(np.uint64).max
    signature = np.full(_MINHASH_PERMS, empty, dtype=np.uint64)
    if len(shingles):
        with np.errstate(over="ignore"):
            mixed = (shingles ^ np.uint64(_MINHASH_SEED)) * np.uint64(_NGRAM_MULTIPLIER)
        bins = (mixed >> np.uint64(64 - _MINHASH_BITS)).astype(np.intp)
        np.minimum.at(signature, bins, mixed)
    return tuple(int(x) for x in signature)


def jaccard(a, b) -> float:
    """Jaccard similarity of two sorted unique hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def apply_gates(samples: Iterable[Sample], settings: GateSettings | None = None) -> tuple[list[Sample], dict[str, int]]:
    """Run the gates in order. Returns (kept samples in input order, {gate: dropped count}
    for every gate in GATES). Each dropped sample's `dropped_by` names its gate."""
    settings = settings or GateSettings()
    counts = {g: 0 for g in GATES}
    rows = _MINHASH_PERMS // _LSH_BANDS
    seen_exact: set[str] = set()
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    kept_shingles: list[Any] = []
    kept: list[Sample] = []
    for sample in samples:
        sample.dropped_by = gate_failure(sample, settings)
        if sample.dropped_by is None and settings.drop_duplicates:
            key = hashlib.sha256(normalize_text(sample.text).encode()).hexdigest()
            if key in seen_exact:
                sample.dropped_by = "duplicate"
            else:
                seen_exact.add(key)
        if sample.dropped_by is None and settings.near_duplicate_threshold is not None:
            shingles = sample.gate_features(settings.shingle_size).shingles  # measured by gate_failure
            signature = _minhash(shingles)
            bands = [(b, signature[b * rows:(b + 1) * rows]) for b in range(_LSH_BANDS)]
            candidates = sorted({i for band in bands for i in buckets.get(band, [])})
            if any(jaccard(shingles, kept_shingles[i]) >= settings.near_duplicate_threshold for i in candidates):
                sample.dropped_by = "near_duplicate"
            else:
                for band in bands:
                    buckets.setdefault(band, []).append(len(kept_shingles))
                kept_shingles.append(shingles)
        if sample.dropped_by is None:
            kept.append(sample)
        else:
            counts[sample.dropped_by] += 1
    return kept, counts


# -- export and stats -----------------------------------------------------------------------------


def user_turn(sample: Sample, state_length: bool = True) -> str:
    """The instruction as the user turn. state_length: when it states no length, the target
    the answer was written to is added (with_stated_length); otherwise it is left alone.
    state_length=False: never stated; a length sentence with_stated_length added at build
    time (to an instruction that had none) is taken off again."""
    if not sample.target_words:
        return sample.instruction
    if not state_length:
        return without_stated_length(sample.instruction, sample.target_words)
    if parse_target_words(sample.instruction):
        return sample.instruction
    return with_stated_length(sample.instruction, sample.target_words)


def export_record(sample: Sample, fmt: str = "longwriter", *, state_length: bool = True) -> dict[str, Any]:
    """One training record. longwriter: {"messages": [user, assistant]} (LongWriter-6k);
    alpaca: {"instruction", "input", "output"}; sharegpt: {"conversations": [human, gpt]}.
    The user turn is `user_turn(sample, state_length)`."""
    instruction = user_turn(sample, state_length)
    if fmt == "longwriter":
        return {"messages": [{"role": "user", "content": instruction},
                             {"role": "assistant", "content": sample.text}]}
    if fmt == "alpaca":
        return {"instruction": instruction, "input": "", "output": sample.text}
    if fmt == "sharegpt":
        return {"conversations": [{"from": "human", "value": instruction},
                                  {"from": "gpt", "value": sample.text}]}
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def export_records(samples: Iterable[Sample], fmt: str = "longwriter", *, state_length: bool = True) -> list[dict[str, Any]]:
    return [export_record(s, fmt, state_length=state_length) for s in samples]


def to_jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_files(out_dir: Path, records: dict[str, Iterable[dict[str, Any]]], stats: dict[str, Any]) -> dict[str, str]:
    """One `{format}.jsonl` per format and stats.json in `out_dir`; {format: path, "stats": path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {fmt: _write_atomic(out_dir / f"{fmt}.jsonl", (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
             for fmt, rows in records.items()}
    files["stats"] = _write_atomic(out_dir / "stats.json", [json.dumps(stats, indent=2, ensure_ascii=False)])
    return files


def _write_atomic(path: Path, chunks: Iterable[str]) -> str:
    """Written beside, then renamed: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.writelines(chunks)
    tmp.replace(path)
    return str(path)


def length_histogram(word_counts: Iterable[int], edges: tuple[int, ...] = HISTOGRAM_EDGES) -> dict[str, int]:
    """{"0-500": n, ..., "32000+": n}: words of the kept responses by bin."""
    labels = [f"{lo}-{hi}" for lo, hi in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    counts = {label: 0 for label in labels}
    for words in word_counts:
        index = sum(1 for edge in edges[1:] if words >= edge)
        counts[labels[index]] += 1
    return counts


def dataset_stats(samples: list[Sample], kept: list[Sample], gate_counts: dict[str, int]) -> dict[str, Any]:
    """The small stats file: item and kept counts, drops per gate, statuses, languages,
    and the length distribution of the kept responses."""
    words = [s.word_count for s in kept]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    languages: dict[str, int] = {}
    for s in kept:
        languages[s.language or "unknown"] = languages.get(s.language or "unknown", 0) + 1
    ratios = [s.word_count / s.target_words for s in kept if s.target_words]
    return {
        "items": len(samples),
        "kept": len(kept),
        "dropped": sum(gate_counts.values()),
        "gates": dict(gate_counts),
        "statuses": statuses,
        "languages": languages,
        "words": {
            "total": sum(words),
            "min": min(words) if words else None,
            "max": max(words) if words else None,
            "mean": round(fmean(words), 1) if words else None,
            "median": median(words) if words else None,
        },
        "mean_length_ratio": round(fmean(ratios), 3) if ratios else None,
        "mean_length_score": round(fmean(length_score(s.word_count, s.target_words) for s in kept if s.target_words), 2)
        if ratios else None,
        "length_histogram": length_histogram(words),
    }
