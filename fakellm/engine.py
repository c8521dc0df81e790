"""What the fake model writes for one request: prompt tokens, text, finish reason, faults.

Pure and synchronous (no HTTP, no clocks): the app turns OpenAI request bodies into a
`GenRequest`, calls `generate`, and applies timing and the prefix cache around it.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from agents.text import decode, detect_language, encode
from fakellm.config import FakeConfig
from fakellm.lengths import parse_length
from fakellm.schema_gen import SchemaError, dumps, generate_json
from fakellm.textgen import generate_text, seed_from, topic_words

FAULTS = ("500", "429", "hang", "truncate", "malformed_json", "die")
MALFORMED_VARIANTS = ("cut", "prose", "trailing_comma", "missing_required", "single_quotes")


class BadRequest(ValueError):
    """The request is invalid (HTTP 400), with a vLLM-like message."""


@dataclass
class JsonMode:
    kind: str  # "schema" | "object" | "choice"
    schema: dict[str, Any] | None = None
    choices: list[str] | None = None


@dataclass
class GenRequest:
    prompt_tokens: list[int]
    instruction: str  # last user message (chat) or the prompt (completions)
    seed_material: str  # the whole prompt: same prompt + seeds -> same text
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: list[str] = field(default_factory=list)
    include_stop: bool = False
    json_mode: JsonMode | None = None
    request_seed: int | None = None
    faults: frozenset[str] = frozenset()
    malformed_variant: str | None = None
    prefix: str = ""  # continue_final_message: the start of the answer, already written


@dataclass
class GenResult:
    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int
    stop_reason: str | None = None
    faults_applied: list[str] = field(default_factory=list)


# -- prompts to tokens ------------------------------------------------------------------------

@lru_cache(maxsize=1024)  # shared system prompts and plans repeat; book chunks do not
def _encode_cached(text: str) -> tuple[int, ...]:
    return tuple(encode(text))


def message_text(content: Any) -> str:
    """OpenAI message content: a string, None, or a list of parts ({"type": "text", ...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise BadRequest("message content must be a string or a list of content parts")


# A scaled tokenizer (FakeConfig.token_scale) follows each cl100k token with filler tokens:
# ids from FILLER_BASE up, which decode to nothing.
FILLER_BASE = 1 << 24


def scale_tokens(tokens: list[int] | tuple[int, ...], scale: float = 1.0) -> list[int]:
    """cl100k tokens as the scaled tokenizer counts them: token i is followed by
    floor((i + 1) x scale) - floor(i x scale) - 1 fillers, so n tokens become floor(n x scale)
    and a prefix stays a prefix."""
    if scale == 1.0:
        return list(tokens)
    out: list[int] = []
    for i, t in enumerate(tokens):
        out.append(t)
        extra = math.floor((i + 1) * scale) - math.floor(i * scale) - 1
        out.extend(FILLER_BASE + t for _ in range(extra))
    return out


def unscale_tokens(tokens: list[int]) -> list[int]:
    return [t for t in tokens if t < FILLER_BASE]


def encode_scaled(text: str, scale: float = 1.0) -> list[int]:
    return scale_tokens(_encode_cached(text), scale)


def chat_prompt_tokens(
    messages: list[dict[str, Any]], add_generation_prompt: bool = True, scale: float = 1.0
) -> list[int]:
    """Tokens of a simple chat template, one message at a time, so that equal leading messages
    always give equal leading tokens (what the prefix cache keys on)."""
    tokens: list[int] = []
    for m in messages:
        tokens.extend(encode_scaled(f"<|{m.get('role', 'user')}|>\n{message_text(m.get('content'))}\n", scale))
    if add_generation_prompt:
        tokens.extend(encode_scaled("<|assistant|>\n", scale))
    return tokens


def text_prompt_tokens(prompt: str, scale: float = 1.0) -> list[int]:
    return encode_scaled(prompt, scale)


# -- length ----------------------------------------------------------------------------------

def planned_words(cfg: FakeConfig, rng: random.Random, instruction: str) -> tuple[int, int | None]:
    """(words to write, total words the prompt mentions). The natural length always caps."""
    natural = rng.randint(cfg.natural_min_words, cfg.natural_max_words)
    asked = parse_length(instruction)
    if asked is None:
        return min(rng.randint(cfg.default_min_words, cfg.default_max_words), natural), None
    if asked.bound == "at_most":
        aim = asked.words * rng.uniform(0.6, 0.95)
    elif asked.bound == "at_least":
        aim = asked.words * rng.uniform(1.0, 1.0 + cfg.length_noise)
    else:
        aim = asked.words * rng.uniform(1.0 - cfg.length_noise, 1.0 + cfg.length_noise)
    return max(1, min(round(aim), natural)), asked.largest


# -- generation ------------------------------------------------------------------------------

def generate(cfg: FakeConfig, req: GenRequest) -> GenResult:
    rng = random.Random(seed_from(req.seed_material, req.request_seed, cfg.seed))
    lang = detect_language(req.instruction)
    topics = topic_words(req.instruction, lang)
    words, total = planned_words(cfg, rng, req.instruction)
    applied: list[str] = []

    if req.json_mode is not None:
        text = _json_text(req.json_mode, rng, lang, topics, total)
        if "malformed_json" in req.faults:
            text = malform_json(text, req.json_mode, rng, req.malformed_variant)
            applied.append("malformed_json")
    else:
        text = _prose(rng.getrandbits(64), lang, topics, words, req, cfg.token_scale)
        if req.prefix:
            text = continuation_joint(req.prefix, lang) + text

    finish, stop_reason = "stop", None
    if req.stop:
        text, stop_reason = _apply_stop(text, req.stop, req.include_stop)

    tokens = scale_tokens(encode(text), cfg.token_scale)
    if req.max_tokens is not None and len(tokens) > req.max_tokens:
        tokens = tokens[: req.max_tokens]
        text, finish, stop_reason = _decode_prefix(tokens), "length", None
    if "truncate" in req.faults and len(tokens) > 1:
        keep = max(1, int(len(tokens) * rng.uniform(0.3, 0.7)))
        tokens = tokens[:keep]
        text, finish, stop_reason = _decode_prefix(tokens), "length", None
        applied.append("truncate")
    return GenResult(text=text, finish_reason=finish, completion_tokens=len(tokens),
                     stop_reason=stop_reason, faults_applied=applied)


_FINISHED = re.compile(r"[.!?。！？…][\"'”’)）」』]*$")


def continuation_joint(prefix: str, lang: str) -> str:
    """What comes between an answer's given start and the text the fake writes after it: a
    new paragraph after a finished sentence, else the space that goes on with the sentence.
    The continuation's length follows the same rule as any answer (what the user turn asks
    for, capped by the natural length): the fake does not model how a prefill changes it."""
    if not prefix or prefix[-1].isspace():
        return ""
    if _FINISHED.search(prefix):
        return "\n\n"
    return "" if lang == "zh" else " "


def _prose(seed: int, lang: str, topics: list[str], words: int, req: GenRequest, scale: float = 1.0) -> str:
    if req.ignore_eos and req.max_tokens:
        words = req.max_tokens + 1  # never stops by itself: max_tokens ends it
    if req.max_tokens is not None:
        # Every English word is at least one token; a few common CJK pairs share one.
        words = min(words, req.max_tokens + 1 if lang == "en" else 2 * req.max_tokens + 16)
    text = generate_text(random.Random(seed), lang, topics, words)
    # min_tokens (vLLM) holds back the end of the text until that many tokens exist.
    tries = 0
    while req.min_tokens and tries < 8:
        have = len(scale_tokens(encode(text), scale))
        if have >= req.min_tokens:
            break
        words += max(8, int((req.min_tokens - have) * 0.8))
        text = generate_text(random.Random(seed), lang, topics, words)
        tries += 1
    return text


def _json_text(mode: JsonMode, rng: random.Random, lang: str, topics: list[str], total: int | None) -> str:
    if mode.kind == "choice":
        return rng.choice(mode.choices or [""])
    if mode.kind == "object" or mode.schema is None:
        return dumps({"response": generate_text(rng, lang, topics, rng.randint(15, 40))})
    try:
        return dumps(generate_json(mode.schema, rng, lang=lang, topics=topics, total_words=total))
    except SchemaError as exc:
        raise BadRequest(f"Unsupported JSON schema: {exc}") from exc


def _apply_stop(text: str, stops: list[str], include: bool) -> tuple[str, str | None]:
    best = None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is None:
        return text, None
    i, s = best
    return (text[: i + len(s)] if include else text[:i]), s


def _decode_prefix(tokens: list[int]) -> str:
    # A cut can split a multi-byte character; drop the dangling replacement character.
    return decode(unscale_tokens(tokens)).rstrip("\ufffd")


def malform_json(text: str, mode: JsonMode, rng: random.Random, variant: str | None = None) -> str:
    """Broken output under a JSON schema, in one of the ways real models break it."""
    variant = variant if variant in MALFORMED_VARIANTS else rng.choice(MALFORMED_VARIANTS)
    if variant == "missing_required":
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        required = (mode.schema or {}).get("required") or []
        if isinstance(value, dict) and required and required[0] in value:
            value.pop(required[0])
            return dumps(value)
        variant = "cut"
    if variant == "prose":
        return "Sure! Here is the JSON you asked for:\n```json\n" + text + "\n```"
    if variant == "trailing_comma" and text[-1:] in "}]" and len(text) > 2:
        return text[:-1] + ", " + text[-1]
    if variant == "single_quotes" and '"' in text:
        return text.replace('"', "'")
    return text[: max(1, int(len(text) * rng.uniform(0.4, 0.8)))]
