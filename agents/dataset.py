"""SFT dataset builds (LongWriter-6k style): instruction input, generated instructions,
quality gates, exporters and stats. Pure functions; the `dataset` job kind (agents/dataset_kind.py)
spawns one `write` job per instruction and calls these.

- `parse_instruction_jsonl(text)` -> (items, rejected): one {"instruction"|"prompt"|"messages",
  optional "target_words"|"length"} per line; a bad line is reported with its number and
  the good lines are kept.
- `generate_instructions(ctx, seeds, count)`: new instructions from seed prompts, one
  checkpointed step per model call (`instructions/{k}`).
- `Sample.from_write_job(status, params, result)`, then `apply_gates(samples, GateSettings())`
  -> (kept, counts per gate). Gates run in order and each sample is dropped by the first
  one it fails: failed, truncated, repetitive, length, duplicate, near_duplicate.
- `export_records(kept, "longwriter"|"alpaca"|"sharegpt")`, `dataset_stats(samples, kept, counts)`.
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
from statistics import fmean, median
from typing import Any, Iterable

import numpy as np
from pydantic import BaseModel, Field

from agents.length_target import parse_target_words
from agents.metrics.longbench_write import length_score
from agents.text import count_words, detect_language

GATES = ("failed", "truncated", "repetitive", "length", "duplicate", "near_duplicate")
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
            items.append({**_instruction_from_row(json.loads(line), max_target_words), "line": number})
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


def export_record(sample: Sample, fmt: str = "longwriter") -> dict[str, Any]:
    """One training record. longwriter: {"messages": [user, assistant]} (LongWriter-6k);
    alpaca: {"instruction", "input", "output"}; sharegpt: {"conversations": [human, gpt]}."""
    if fmt == "longwriter":
        return {"messages": [{"role": "user", "content": sample.instruction},
                             {"role": "assistant", "content": sample.text}]}
    if fmt == "alpaca":
        return {"instruction": sample.instruction, "input": "", "output": sample.text}
    if fmt == "sharegpt":
        return {"conversations": [{"from": "human", "value": sample.instruction},
                                  {"from": "gpt", "value": sample.text}]}
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def export_records(samples: Iterable[Sample], fmt: str = "longwriter") -> list[dict[str, Any]]:
    return [export_record(s, fmt) for s in samples]


def to_jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


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
