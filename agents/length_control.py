"""The length controller: the one place where Longform counts against a target, cuts text
back, judges whether text is usable, and lengthens it. Kinds that write use these tools;
none keeps a copy of its own.

- Counting against a target: `within(words, target, tolerance)`, `length_report` (within
  10% / 20%). Counts are made by the caller's counter (agents.text.count_words by default).
- Cutting: `cut_to_sentence_end` (output cut off at max_tokens), `trim_to_budget`
  (AgentWrite's section trim: a paragraph boundary, a sentence end as a fallback) and
  `trim_to_target` (the cut nearest a target: a paragraph end within the tolerance when
  there is one, else the nearest sentence end).
- Quality filters (Self-Lengthen's `check_response`, per language): `failing_filter`
  returns the name of the first filter a text fails, or None.
- The Extender (Self-Lengthen's micro-iteration) as a tool: `extend(ctx, extender,
  instruction, text, index)` runs one micro-iteration as two checkpointed steps and returns
  the candidate; accepting it is the caller's decision.

The Extender, step by step (as the reference's `extend_response`):
1. split the current text into pieces on blank lines ("\\n\\n"); when that gives two pieces or
   fewer, on single newlines. The first half is the first floor(n/2) pieces, re-joined with
   blank lines;
2. Stage 1 (`expand/{i}`): one chat call, the extend prompt filled with the instruction and
   only the first half; keep the first floor(2/3) of the expansion's paragraphs (the tail
   tends to turn into a conclusion);
3. Stage 2 (`continue/{i}`): the extend prompt filled with the instruction and the whole
   current text, with the kept part as the start of the assistant's answer; the model goes on
   from there and writes an enlarged version of the rest. Candidate = kept part + continuation.
   When nothing was kept, Stage 2 is a plain answer to that prompt (`new_answer`).

Continuing a partial answer (Stage 2), by backend:
- vLLM: a chat request whose last message is the assistant's partial answer, with
  `extra_body={"continue_final_message": true, "add_generation_prompt": false}`; the model's
  own chat template renders it (the reference hard-codes ChatML or Llama-3 headers in a raw
  completion prompt instead; the request is the same when the template matches).
- Embedded model (`python -m modelserver`, what embedded mode runs): the same request;
  the server renders the GGUF file's chat template without a new turn and continues it.
  (The in-process `EmbeddedLlama` ignores `extra_body`; jobs never use it directly.)
- The fake server (fakellm): the same flags, vLLM's checks; it writes a continuation.
- A server that refuses the flags (HTTP 400, e.g. OpenAI's API): with `continuation: "auto"`
  the step falls back to asking by chat for the remainder (the partial answer as an
  assistant turn, then a user turn asking to go on, `selflengthen/continue.j2`); the step
  records `continued_with: "chat"` and why. A server that silently ignores the flags (and
  answers anew after the partial answer) cannot be told apart: use `continuation: "chat"`.
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal

from agents.length_target import LengthDemand
from agents.llm.tokens import count_message_tokens, output_room
from agents.llm.types import GenOptions, LLMBadRequest
from agents.metrics.ruler import (
    PM_INTERVALS,
    baseline_sentence,
    fm_hit,
    leading_mlt,
    mlt_for,
    mlt_token,
    pm_hit,
    strip_mlt,
)
from agents.text import count_word_runs, count_words

if TYPE_CHECKING:
    from agents.context import JobContext

# -- counting against a target -------------------------------------------------------------------


def within(words: int, target: int, tolerance: float) -> bool:
    """`words` is within `tolerance` (0.1: +-10%) of `target`."""
    return abs(words - target) <= tolerance * target


def length_report(words: int, target: int) -> dict[str, bool]:
    return {"within_10pct": within(words, target, 0.1), "within_20pct": within(words, target, 0.2)}


# -- cutting -------------------------------------------------------------------------------------

SENTENCE_END = re.compile(r"[.!?。！？…][\"'”’)）」』]*(?=\s|$)|[。！？][\"'”’)）」』]*")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def cut_to_sentence_end(text: str) -> str:
    """`text` up to its last complete sentence (for output cut off at max_tokens)."""
    ends = list(SENTENCE_END.finditer(text))
    if not ends:
        return text.rstrip()
    return text[:ends[-1].end()].rstrip()


def ends_at_sentence_end(text: str) -> bool:
    stripped = text.rstrip()
    return bool(stripped) and any(m.end() == len(stripped) for m in SENTENCE_END.finditer(stripped))


def split_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]


def trim_to_budget(text: str, budget: int) -> str:
    """Cut at the paragraph end nearest `budget` when one lies within 25% of it, else at the
    sentence end nearest it anywhere in the text: a looped paragraph that runs past the budget
    is cut inside, not before it. (Called once the piece is known to be over budget.)"""
    return nearest_cut(text, budget, 0.25) or text


def trim_to_target(text: str, target: int, tolerance: float = 0.1,
                   count: Callable[[str], int] = count_words) -> str:
    """`text` cut back to about `target` words: unchanged when it is not over target by more
    than `tolerance`; else at the paragraph end nearest the target when one lies within the
    tolerance, else at the sentence end nearest the target (never empty: at least the first
    sentence or paragraph)."""
    if count(text) <= (1 + tolerance) * target:
        return text
    return nearest_cut(text, target, tolerance, count) or text


def nearest_cut(text: str, target: int, tolerance: float,
                count: Callable[[str], int] = count_words) -> str | None:
    """`text` up to the paragraph end nearest `target` when one lies within `tolerance` of it,
    else up to the paragraph or sentence end nearest it; None when it has no cut point."""
    counted, paragraph_ends = cut_points(text, count)
    if not counted:
        return None
    paragraph_cuts = [(abs(w - target), e) for e, w in counted if e in paragraph_ends and within(w, target, tolerance)]
    if paragraph_cuts:
        return text[:min(paragraph_cuts)[1]].rstrip()
    return text[:min((abs(w - target), e) for e, w in counted)[1]].rstrip()


def cut_points(text: str, count: Callable[[str], int] = count_words) -> tuple[list[tuple[int, int]], set[int]]:
    """([(offset, words up to it)] for every paragraph end and sentence end, in order; the set
    of offsets that are paragraph ends). Counted one segment at a time (every cut point is a
    word boundary)."""
    paragraph_ends = {m.start() for m in _PARAGRAPH_BREAK.finditer(text)} | {len(text.rstrip())}
    sentence_ends = {m.end() for m in SENTENCE_END.finditer(text)}
    points = sorted(e for e in paragraph_ends | sentence_ends if text[:e].strip())
    counted, running, previous = [], 0, 0
    for end in points:
        running += count(text[previous:end])
        counted.append((end, running))
        previous = end
    return counted, paragraph_ends


def cut_into_window(text: str, low: int, high: int, target: int,
                    count: Callable[[str], int] = count_words) -> str | None:
    """`text` cut at a sentence end whose count is in [low, high] (a paragraph end when one
    is; else the sentence end nearest `target`), or None when no cut lands there. Only sentence
    ends count as cuts here: a paragraph that stops without one (a heading, a list item)
    is not an ending."""
    counted, paragraph_ends = cut_points(text, count)
    inside = [(e, w) for e, w in counted if low <= w <= high and ends_at_sentence_end(text[:e])]
    if not inside:
        return None
    paragraphs = [(abs(w - target), e) for e, w in inside if e in paragraph_ends]
    end = min(paragraphs)[1] if paragraphs else min((abs(w - target), e) for e, w in inside)[1]
    return text[:end].rstrip()


_CLAUSE_END = re.compile(r"[,;:](?=\s)|[，；：]")


def cut_at_clause(text: str, low: int, high: int, target: int, language: str = "en",
                  count: Callable[[str], int] = count_words) -> str | None:
    """When no sentence end lands in [low, high]: `text` cut at the clause end (a comma,
    semicolon or colon) inside it nearest `target`, its mark replaced by a full stop; None
    when there is none. ("It began with the first bicycle in 1817, but it was not until..."
    -> "It began with the first bicycle in 1817.") For short targets, where one sentence can
    be longer than the whole window."""
    best: tuple[int, int] | None = None
    for m in _CLAUSE_END.finditer(text):
        words = count(text[:m.start()])
        if words > high:
            break
        if words >= low and (best is None or abs(words - target) < best[0]):
            best = (abs(words - target), m.start())
    if best is None:
        return None
    return text[:best[1]].rstrip() + ("。" if language == "zh" else ".")


# -- quality filters (Self-Lengthen's check_response) ------------------------------------------------

# The last character of the stripped text must be one of these ("..." ends with "."):
# LLaMA version (English) and Qwen version (Chinese) of the reference.
TERMINAL_MARKS = {
    "en": frozenset(".!?,;:-\"')]}>`"),
    "zh": frozenset("。！？”’…)]}>）】`"),
}
META_WORDS = ("revised", "revision", "response", "version", "paragraph")  # English only
NGRAM = {"en": 10, "zh": 13}  # a repeated n-gram of this many tokens rejects the text
FILTERS = ("empty", "terminal_punctuation", "meta_talk", "repetition")


def cjk_tokens(text: str) -> list[str]:
    """The reference's Chinese tokenization: each non-ASCII character a token, each run of
    ASCII characters (spaces and newlines included) one token."""
    tokens: list[str] = []
    previous_ascii = False
    for ch in text:
        if ch.isascii() and previous_ascii:
            tokens[-1] += ch
        else:
            tokens.append(ch)
        previous_ascii = ch.isascii()
    return tokens


def has_repeated_ngram(tokens: list[str], n: int) -> bool:
    seen: set[tuple[str, ...]] = set()
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i:i + n])
        if gram in seen:
            return True
        seen.add(gram)
    return False


def failing_filter(text: str, language: str) -> str | None:
    """The first quality filter `text` fails, or None when it passes them all:
    "empty"; "terminal_punctuation" (it must end with a terminal mark of its language);
    "meta_talk" (English: one of META_WORDS, case as written, in the first 2 or the last 3
    lines, as the reference checks: talk about "the revised version" instead of the text);
    "repetition" (an n-gram seen twice: 10 whitespace words in English, 13 tokens of
    `cjk_tokens` in Chinese)."""
    text = text.rstrip()
    if not text:
        return "empty"
    if text[-1] not in TERMINAL_MARKS[language]:
        return "terminal_punctuation"
    if language == "en":
        lines = text.split("\n")
        edges = "\n".join(lines[:2] + lines[-3:])
        if any(word in edges for word in META_WORDS):
            return "meta_talk"
    tokens = cjk_tokens(text) if language == "zh" else text.split()
    if has_repeated_ngram(tokens, NGRAM[language]):
        return "repetition"
    return None


# -- the Extender -----------------------------------------------------------------------------------

PAPER_STOP = ["<|eot_id|>", "\n\n---", "\n\n\n", "\n---", "---", "<|im_end|>"]  # the reference's chat calls
PAPER_COMPLETION_STOP = PAPER_STOP + ["\nInstruction 4"]  # ... and its Stage-2 completion call
PAPER_MAX_TOKENS = 16384
MIN_OUTPUT_TOKENS = 128
PREFILL_FLAGS = {"continue_final_message": True, "add_generation_prompt": False}  # vLLM's
Continuation = Literal["auto", "prefill", "chat"]
ContinuedWith = Literal["prefill", "chat", "new_answer"]

TEMPLATES = {
    # controlled: Longform's Jinja templates; paper: plain-text files filled as the reference
    # fills its extend_response.md (`{prompt}`, `{response}`), so the original works overlaid.
    "controlled": {"en": "selflengthen/extend.j2", "zh": "selflengthen/extend_zh.j2"},
    "paper": {"en": "selflengthen/extend_response.txt", "zh": "selflengthen/extend_response_zh.txt"},
}
CONTINUE_TEMPLATES = {"en": "selflengthen/continue.j2", "zh": "selflengthen/continue_zh.j2"}
_SLOT = re.compile(r"\{(prompt|response)\}")


def fill_reference(template: str, prompt: str, response: str) -> str:
    """The reference's `template.format(prompt=..., response=...)`, in one pass (braces in
    the texts themselves are left alone)."""
    return _SLOT.sub(lambda m: prompt if m.group(1) == "prompt" else response, template)


def seed_for(seed: int | None, key: str) -> int | None:
    """A distinct, stable seed per step (the same seed for every call would repeat samples)."""
    return None if seed is None else (seed + zlib.crc32(key.encode())) % (2**31)


@dataclass(frozen=True)
class Extender:
    """How the Extender calls its model. Defaults are the reference's sampling settings."""

    language: str = "en"
    paper: bool = False  # the reference's prompt file and stop strings; max_tokens capped at 16384
    model: str | None = None  # None: the client's model; on vLLM a LoRA adapter name (ext_sft)
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int | None = 20  # None: not sent (servers that refuse vLLM's extras)
    repetition_penalty: float | None = 1.1
    max_tokens: int | None = None  # a cap; None: what the context leaves (paper: up to 16384)
    seed: int | None = None
    continuation: Continuation = "auto"

    @property
    def template(self) -> str:
        return TEMPLATES["paper" if self.paper else "controlled"][self.language]

    def options(self, key: str, max_tokens: int, completion: bool = False,
                extra_body: dict[str, Any] | None = None) -> GenOptions:
        stop = (PAPER_COMPLETION_STOP if completion else PAPER_STOP) if self.paper else None
        return GenOptions(
            max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            repetition_penalty=self.repetition_penalty, stop=list(stop) if stop else None,
            seed=seed_for(self.seed, key), model=self.model, extra_body=extra_body,
        )

    def render(self, ctx: "JobContext", instruction: str, text: str) -> str:
        """The extend prompt for `text` (call inside a step: the template is recorded on it)."""
        if self.paper:
            return ctx.render_text(self.template, lambda t: fill_reference(t, instruction, text))
        return ctx.render(self.template, instruction=instruction, text=text)

    async def room(self, ctx: "JobContext", messages: list[dict[str, str]]) -> int:
        return await answer_room(ctx, messages, self.max_tokens or (PAPER_MAX_TOKENS if self.paper else None))


async def answer_room(ctx: "JobContext", messages: list[dict[str, str]], cap: int | None = None) -> int:
    """max_tokens for a request: what the model's context leaves after `messages`, at most
    `cap`; 0 when that is under MIN_OUTPUT_TOKENS (no room for an answer)."""
    room = output_room(ctx.llm.context_window, await count_message_tokens(ctx.llm, messages))
    room = min(room, cap) if cap else room
    return room if room >= MIN_OUTPUT_TOKENS else 0


def split_pieces(text: str) -> tuple[list[str], str]:
    """The reference's split: on blank lines, else (two pieces or fewer) on single newlines."""
    pieces = text.split("\n\n")
    if len(pieces) <= 2:
        return text.split("\n"), "lines"
    return pieces, "blank_lines"


def keep_two_thirds(expansion: str) -> tuple[str, int, int]:
    """(the first floor(2/3) of the expansion's paragraphs, how many kept, of how many)."""
    paragraphs = expansion.split("\n\n")
    kept = paragraphs[: len(paragraphs) * 2 // 3]
    return "\n\n".join(kept), len(kept), len(paragraphs)


def join_continuation(kept: str, continuation: str, continued_with: str) -> str:
    """Kept part + continuation. A prefilled continuation is the rest of the same token
    stream and is appended as it comes, unless it starts without a space right after a
    finished sentence (then a paragraph break goes between). A chat reply starts a new
    paragraph."""
    if not kept.strip():
        return continuation.strip()
    if not continuation.strip():
        return kept.strip()
    if continued_with == "chat":
        return f"{kept.rstrip()}\n\n{continuation.strip()}"
    if continuation[:1].isspace() or not ends_at_sentence_end(kept):
        return (kept + continuation).strip()
    return f"{kept.rstrip()}\n\n{continuation.rstrip()}"


@dataclass(frozen=True)
class Extension:
    """One micro-iteration's outcome. `no_room` names the stage ("expand"/"continue") whose
    prompt no longer left room for an answer in the model's context; the candidate is then ""."""

    split: str
    pieces: int
    first_half_pieces: int
    expansion: str
    expansion_paragraphs: int
    kept: str
    kept_paragraphs: int
    continuation: str
    continued_with: ContinuedWith | None
    fallback_reason: str | None
    candidate: str
    no_room: str | None = None


async def extend(ctx: "JobContext", extender: Extender, instruction: str, text: str, index: int,
                 key_prefix: str = "") -> Extension:
    """One micro-iteration on `text`: steps `{key_prefix}expand/{index}` and
    `{key_prefix}continue/{index}`. Later prompts are built only from `text` and stored step
    outputs, so a resumed job replays exactly."""
    pieces, how = split_pieces(text)
    half = len(pieces) // 2
    first_half = "\n\n".join(pieces[:half])
    expand_key, continue_key = f"{key_prefix}expand/{index}", f"{key_prefix}continue/{index}"

    async def expand() -> dict[str, Any]:
        messages = [{"role": "user", "content": extender.render(ctx, instruction, first_half)}]
        max_tokens = await extender.room(ctx, messages)
        if not max_tokens:
            return {"no_room": True}
        result = await ctx.llm.chat(messages, extender.options(expand_key, max_tokens))
        return {"text": result.text.strip(), "finish_reason": result.finish_reason}

    expanded = await ctx.step(expand_key, expand)
    if expanded.get("no_room"):
        return Extension(how, len(pieces), half, "", 0, "", 0, "", None, None, "", no_room="expand")
    kept, kept_count, paragraph_count = keep_two_thirds(expanded["text"])

    async def go_on() -> dict[str, Any]:
        asked = [{"role": "user", "content": extender.render(ctx, instruction, text)}]
        if not kept.strip():  # nothing to continue from: a new answer to the same prompt
            max_tokens = await extender.room(ctx, asked)
            if not max_tokens:
                return {"no_room": True}
            result = await ctx.llm.chat(asked, extender.options(continue_key, max_tokens))
            return {"text": result.text, "continued_with": "new_answer", "finish_reason": result.finish_reason}
        prefilled = asked + [{"role": "assistant", "content": kept}]
        fallback_reason = None
        if extender.continuation != "chat":
            max_tokens = await extender.room(ctx, prefilled)
            if not max_tokens:
                return {"no_room": True}
            options = extender.options(continue_key, max_tokens, completion=True, extra_body=dict(PREFILL_FLAGS))
            try:
                result = await ctx.llm.chat(prefilled, options)
                return {"text": result.text, "continued_with": "prefill", "finish_reason": result.finish_reason}
            except LLMBadRequest as err:
                if extender.continuation == "prefill":
                    raise
                fallback_reason = f"the server refused continue_final_message: {err}"
        messages = prefilled + [{"role": "user", "content": ctx.render(CONTINUE_TEMPLATES[extender.language])}]
        max_tokens = await extender.room(ctx, messages)
        if not max_tokens:
            return {"no_room": True}
        result = await ctx.llm.chat(messages, extender.options(continue_key, max_tokens))
        return {"text": result.text, "continued_with": "chat", "fallback_reason": fallback_reason,
                "finish_reason": result.finish_reason}

    went_on = await ctx.step(continue_key, go_on)
    if went_on.get("no_room"):
        return Extension(how, len(pieces), half, expanded["text"], paragraph_count, kept, kept_count, "", None, None,
                         "", no_room="continue")
    continued_with = went_on["continued_with"]
    return Extension(
        split=how, pieces=len(pieces), first_half_pieces=half, expansion=expanded["text"],
        expansion_paragraphs=paragraph_count, kept=kept, kept_paragraphs=kept_count,
        continuation=went_on["text"], continued_with=continued_with,
        fallback_reason=went_on.get("fallback_reason"),
        candidate=join_continuation(kept, went_on["text"], continued_with),
    )


# -- decisions shared by every kind that writes to a budget ---------------------------------------

CONTINUE_BELOW = 0.9  # a piece under 90% of its budget is continued
TRIM_ABOVE = 1.5  # a piece over 150% of its budget is cut back
TRIM_CUT_ABOVE = 1.1  # ... and one cut off at max_tokens already over 110%
# Output tokens per word/字, with headroom, to size max_tokens. Generous on purpose: a cap too
# tight cuts pieces short; a loose one only bounds a rambling model.
TOKENS_PER_UNIT = {"en": 1.5, "zh": 2.0}
MAX_TOKENS_HEADROOM = 1.5


def should_continue(words: int, budget: int, below: float = CONTINUE_BELOW) -> bool:
    """A piece of `words` is continued while under `below` of its budget."""
    return words < below * budget


def should_trim(words: int, budget: int, truncated: bool = False) -> bool:
    """A piece is cut back when far over budget (TRIM_ABOVE), or when it was cut off at
    max_tokens and is over budget at all (TRIM_CUT_ABOVE: it has no real ending to keep)."""
    return words > TRIM_ABOVE * budget or (truncated and words > TRIM_CUT_ABOVE * budget)


def tokens_for_words(words: float, language: str, cap: int | None = None, per_word: float | None = None) -> int:
    """max_tokens for about `words` words (字) of output, with headroom; `per_word`: the
    server's tokens per word where measured, used when its tokenizer needs more than usual."""
    rate = max(TOKENS_PER_UNIT.get(language, 1.5), per_word or 0.0)
    wanted = math.ceil(max(0.0, words) * rate * MAX_TOKENS_HEADROOM) + 32
    return min(cap, wanted) if cap else wanted


@dataclass(frozen=True)
class Grown:
    """What `grow` wrote: the text, the last call's finish reason, the calls made."""

    text: str
    finish: str
    calls: int


async def grow(call: Callable[[str, int], Awaitable[tuple[str, str]]], budget: int, *, max_calls: int,
               join: Callable[[str, str, str], str], count: Callable[[str], int] = count_words,
               first: Callable[[str], str] | None = None, continue_below: float = CONTINUE_BELOW) -> Grown:
    """Write one piece to `budget` words: `call(text so far, words still wanted)` returns
    (new text, finish reason). The first piece is cleaned by `first`; a piece cut off at
    max_tokens loses its unfinished sentence; each further piece is joined on by
    `join(text, piece, previous finish reason)`. Continued while `should_continue`, at most
    `max_calls` calls; a continuation with nothing to add ends it. An empty first piece
    returns an empty text (the caller decides what that means). AgentWrite's sections."""
    text, finish, calls = "", "", 0
    while calls < max_calls:
        piece, reason = await call(text, budget - count(text))
        calls += 1
        piece = piece.strip()
        if not text and first is not None:
            piece = first(piece)
        if not piece:
            break
        if reason == "length":
            piece = cut_to_sentence_end(piece) or piece
        text = join(text, piece, finish) if text else piece
        finish = reason
        if not should_continue(count(text), budget, continue_below):
            break
    return Grown(text, finish, calls)


# -- loops -----------------------------------------------------------------------------------------


def repetition_start(text: str, language: str) -> int | None:
    """The offset where `text` starts repeating itself: where the first n-gram seen twice
    (the repetition filter's n-gram, NGRAM[language] tokens) begins its second time; None
    when nothing repeats."""
    n = NGRAM[language]
    if language == "zh":
        tokens = cjk_tokens(text)
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token)
    else:
        found = list(re.finditer(r"\S+", text))
        tokens, offsets = [m.group() for m in found], [m.start() for m in found]
    seen: set[tuple[str, ...]] = set()
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i:i + n])
        if gram in seen:
            return offsets[i]
        seen.add(gram)
    return None


def without_loop(text: str, language: str) -> tuple[str, bool]:
    """(the text before it starts repeating itself, cut at its last sentence end ("" when it
    has none); whether it repeated itself)."""
    start = repetition_start(text, language)
    if start is None:
        return text, False
    # The repeated n-gram may begin with the mark that ended the sentence before it ("。河水…").
    head = text[:start + 1] if text[start] in ".!?。！？…" else text[:start]
    return (cut_to_sentence_end(head) if ends_at_sentence_end(cut_to_sentence_end(head)) else ""), True


def quality_filters(text: str, language: str) -> dict[str, bool]:
    """The filters a length-controlled answer is held to: no repeated n-gram (10 words; 13
    tokens in Chinese) and an end at a sentence end."""
    tokens = cjk_tokens(text) if language == "zh" else text.split()
    repeated = has_repeated_ngram(tokens, NGRAM[language])
    ends = ends_at_sentence_end(text)
    return {"passed": bool(text.strip()) and not repeated and ends, "repeated_ngram": repeated,
            "ends_at_sentence_end": ends}


# -- the controller ----------------------------------------------------------------------------------
#
# length_mode, on `chat` (and any kind that writes one answer to a length):
# - "prompt": the length is only stated, with Ruler's baseline sentence ("The response should
#   have a word count of N words.", "more than 800" for >800); one call.
# - "mlt": for Ruler-trained models: the target's Meta Length Token ([MLT:150]) is the start of
#   the assistant turn (prefilled: continue_final_message), "[MLT:" a stop string; every MLT is
#   stripped from the output. Without a target the model writes its own MLT first, which is
#   read and reported (PM/FM against it, as Ruler scores a self-chosen MLT). A server that
#   refuses the prefill gets the length stated instead (`mlt_placed: "prompt"`).
# - "controlled": any model. See `answer_controlled`.

LengthMode = Literal["prompt", "mlt", "controlled"]
CounterName = Literal["words", "runs"]
COUNTERS: dict[str, Callable[[str], int]] = {"words": count_words, "runs": count_word_runs}
TOLERANCE = 0.1
DEFAULT_SINGLE_CALL_WORDS = 1500  # Settings.length_single_call_words: above it, plan sections
DEFAULT_MAX_ATTEMPTS = 6  # model calls of one controlled answer (an extension counts two) ...
ATTEMPTS_PER_WORDS = 150  # ... and one more per 150 words of the aim beyond 300 (`max_attempts_for`)
BASELINE_MAX_TOKENS = 2048  # Ruler's TLG decoding, for prompt and mlt modes
FIRST_ANSWER_SLACK = 1.25  # the first answer may run to 1.25 x the aim before max_tokens stops it
LOOP_REPETITION_PENALTY = 1.15  # sent on calls after a loop was seen
MLT_STOP = "[MLT:"
MLT_FLAGS = {"skip_special_tokens": False}  # vLLM: keep MLT special tokens in the text
TEMPLATES_STATED, TEMPLATE_CONTINUE, TEMPLATE_SHORTEN = "length/stated.j2", "length/continue.j2", "length/shorten.j2"


@dataclass(frozen=True)
class Goal:
    """What a controlled answer must hit: `aim` words, accepted in [low, high] (counts of the
    job's counter); `tlg` is the TLG target PM and FM are scored against (None: not one of
    the nine)."""

    aim: int
    low: int
    high: int
    tlg: str | None = None


def goal_for(demand: LengthDemand, tlg: str | None = None, tolerance: float = TOLERANCE) -> Goal:
    """The window of a demand: +-tolerance around its aim, inside its interval; for one of the
    eight numeric TLG targets, its PM interval (lo, hi] instead; for >800, above 800."""
    aim = demand.aim
    if tlg is not None and tlg != ">800" and str(aim) == tlg:
        lo, hi = PM_INTERVALS[tlg]
        return Goal(aim, int(lo) + 1, int(hi), tlg)
    low = max(math.ceil(aim * (1 - tolerance)), demand.low)
    high = min(math.floor(aim * (1 + tolerance)), demand.high)
    if tlg == ">800":
        low = max(low, 801)
    low, high = min(low, aim), max(high, aim)
    return Goal(aim, low, high, tlg)


def length_outcome(text: str, counter: str, language: str, aim: int | None, tlg: str | None) -> dict[str, Any]:
    """What every length-controlled result reports: the count, within 10% / 20% of the aim,
    PM and FM (always on Ruler's `\\w+` runs, its definition, whatever the job's counter),
    and the quality filters."""
    words = COUNTERS[counter](text)
    out: dict[str, Any] = {"counter": counter, "word_count": words}
    if aim is not None:
        out.update(length_report(words, aim))
    else:
        out.update({"within_10pct": None, "within_20pct": None})
    runs = count_word_runs(text)
    out["tlg_target"] = tlg
    out["PM"] = pm_hit(tlg, runs) if tlg else None
    out["FM"] = fm_hit(tlg, runs) if tlg else None
    filters = quality_filters(text, language)
    out["passes_filters"] = filters.pop("passed")
    out["filters"] = filters
    return out


@dataclass(frozen=True)
class Controller:
    """How the controller calls its model."""

    language: str = "en"
    counter: str = "words"
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    model: str | None = None
    stop: tuple[str, ...] | None = None
    max_attempts: int | None = None  # None: max_attempts_for(the aim)
    single_call_words: int = DEFAULT_SINGLE_CALL_WORDS
    max_tokens: int | None = None  # a cap per call; None: what the target and the context allow
    continuation: Continuation = "auto"

    @property
    def count(self) -> Callable[[str], int]:
        return COUNTERS[self.counter]

    def options(self, key: str, max_tokens: int, *, after_loop: bool = False, extra_body: dict | None = None,
                stop: list[str] | None = None) -> GenOptions:
        return GenOptions(
            max_tokens=max_tokens, temperature=max(self.temperature, 0.7) if after_loop else self.temperature,
            top_p=self.top_p, seed=seed_for(self.seed, key), model=self.model,
            repetition_penalty=LOOP_REPETITION_PENALTY if after_loop else None,
            stop=stop if stop is not None else (list(self.stop) if self.stop else None), extra_body=extra_body,
        )


async def call_room(ctx: "JobContext", messages: list[dict[str, str]], wanted: int) -> int:
    """max_tokens for a call that wants `wanted`: lowered to what the context leaves; 0 when
    not even min(wanted, MIN_OUTPUT_TOKENS) fits."""
    room = output_room(ctx.llm.context_window, await count_message_tokens(ctx.llm, messages))
    return min(room, wanted) if room >= min(wanted, MIN_OUTPUT_TOKENS) else 0


def _call_record(result: Any, **extra: Any) -> dict[str, Any]:
    return {"text": result.text, "finish_reason": result.finish_reason, "model": result.model,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens, **extra}


def with_last_user(messages: list[dict[str, str]], content: str) -> list[dict[str, str]]:
    """`messages` with the last user message's content replaced."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = content
            break
    return out


def last_user(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def _usage(records: list[dict[str, Any]]) -> dict[str, int]:
    return {"prompt_tokens": sum(r.get("prompt_tokens", 0) for r in records),
            "completion_tokens": sum(r.get("completion_tokens", 0) for r in records)}


async def answer_prompt(ctx: "JobContext", messages: list[dict[str, str]], target: int | str | None,
                        ctl: Controller, max_tokens: int | None = None) -> dict[str, Any]:
    """length_mode "prompt": Ruler's baseline sentence after the last user message (none when
    `target` is None: the message states its length itself); one call (step `chat`);
    max_tokens Ruler's 2048 unless given (less when the context leaves less)."""
    asked = messages if target is None else \
        with_last_user(messages, f"{last_user(messages)}\n{baseline_sentence(target)}")

    async def call() -> dict[str, Any]:
        room = await call_room(ctx, asked, max_tokens or BASELINE_MAX_TOKENS)
        if not room:
            raise LLMBadRequest(f"the messages do not fit the model's {ctx.llm.context_window}-token context")
        result = await ctx.llm.chat(asked, ctl.options("chat", room))
        return _call_record(result)

    record = await ctx.step("chat", call)
    return {"text": record["text"].strip(), "strategy": "single", "finish_reason": record["finish_reason"],
            "model": record["model"], "usage": _usage([record]), "calls": 1,
            "attempts": [{"step": "chat", "action": "answer", "words": ctl.count(record["text"]), "looped": False}]}


async def answer_mlt(ctx: "JobContext", messages: list[dict[str, str]], target: int | str | None, ctl: Controller,
                     max_tokens: int | None = None) -> dict[str, Any]:
    """length_mode "mlt" (see the section comment): one call, step `chat`."""
    mlt = None
    if target is not None:
        mlt = ">800" if target == ">800" else mlt_for(int(target))

    async def call() -> dict[str, Any]:
        stop = [MLT_STOP] + list(ctl.stop or ()) if mlt else (list(ctl.stop) if ctl.stop else None)
        if mlt is None:
            room = await call_room(ctx, messages, max_tokens or BASELINE_MAX_TOKENS)
            if not room:
                raise LLMBadRequest(f"the messages do not fit the model's {ctx.llm.context_window}-token context")
            result = await ctx.llm.chat(messages, ctl.options("chat", room, extra_body=dict(MLT_FLAGS), stop=stop))
            return _call_record(result, placed=None)
        prefilled = [dict(m) for m in messages] + [{"role": "assistant", "content": mlt_token(mlt)}]
        reason = None
        if ctl.continuation != "chat":
            room = await call_room(ctx, prefilled, max_tokens or BASELINE_MAX_TOKENS)
            if not room:
                raise LLMBadRequest(f"the messages do not fit the model's {ctx.llm.context_window}-token context")
            try:
                result = await ctx.llm.chat(prefilled, ctl.options(
                    "chat", room, extra_body={**PREFILL_FLAGS, **MLT_FLAGS}, stop=stop))
                return _call_record(result, placed="prefill")
            except LLMBadRequest as err:
                if ctl.continuation == "prefill":
                    raise
                reason = f"the server refused continue_final_message: {err}"
        stated = with_last_user(messages, f"{last_user(messages)}\n{baseline_sentence(target)}")
        room = await call_room(ctx, stated, max_tokens or BASELINE_MAX_TOKENS)
        if not room:
            raise LLMBadRequest(f"the messages do not fit the model's {ctx.llm.context_window}-token context")
        result = await ctx.llm.chat(stated, ctl.options("chat", room, stop=stop))
        return _call_record(result, placed="prompt", fallback_reason=reason)

    record = await ctx.step("chat", call)
    raw = record["text"]
    chosen = mlt if mlt is not None else leading_mlt(raw)
    text = strip_mlt(raw).strip()
    return {"text": text, "strategy": "mlt", "finish_reason": record["finish_reason"], "model": record["model"],
            "usage": _usage([record]), "calls": 1, "mlt": chosen,
            "mlt_source": "target" if mlt is not None else ("model" if chosen else None),
            "mlt_placed": record.get("placed"),
            "attempts": [{"step": "chat", "action": "answer", "words": ctl.count(text), "looped": False}]}


def max_attempts_for(aim: int) -> int:
    """The default bound on a controlled answer's calls: 6, and more for longer aims (a small
    model writes a long answer in several continuations): 500 words 8, 700 9, 1,500 14."""
    return max(DEFAULT_MAX_ATTEMPTS, 4 + math.ceil(aim / ATTEMPTS_PER_WORDS))


def single_call_limit(ctl: Controller, context_window: int, prompt_tokens: int) -> int:
    """The most words one call is asked for: the setting, and never more than the model's
    context leaves for the answer."""
    room = output_room(context_window, prompt_tokens)
    fits = int(room / (TOKENS_PER_UNIT.get(ctl.language, 1.5) * MAX_TOKENS_HEADROOM))
    return max(1, min(ctl.single_call_words, fits))


def _distance(words: int, goal: Goal) -> int:
    return 0 if goal.low <= words <= goal.high else (goal.low - words if words < goal.low else words - goal.high)


async def answer_controlled(ctx: "JobContext", messages: list[dict[str, str]], goal: Goal,
                            ctl: Controller) -> dict[str, Any]:
    """length_mode "controlled": hit `goal` with any model. Every model call is a step.

    1. Ask (`answer/1`) with the length stated after the last user message (`length/stated.j2`),
       max_tokens sized for FIRST_ANSWER_SLACK x the aim. Output cut off at max_tokens loses
       its unfinished sentence.
    2. Loops: a text that repeats itself (the repetition filter's n-gram) is cut back to
       before the repetition (at a sentence end); its repeated part is never counted. When too
       little is left (under a third of the window's low end), the answer is regenerated
       (`answer/{n}`). Every call after a loop, and every regeneration, runs at temperature
       at least 0.7 with a repetition penalty (LOOP_REPETITION_PENALTY).
    3. Short (under the window): continue the answer (`continue/{n}`): the text so far is the
       start of the assistant turn (continue_final_message), followed by a blank line (a
       small model given its finished answer alone often ends it at once; the blank line opens
       the next paragraph); a server that refuses the prefill is asked by chat for the rest
       (`length/continue.j2`). When a continuation adds (almost) nothing, the next one runs
       with the repetition penalty; after a second stall the question is asked anew
       with a larger stated length, in the ratio the draft fell short by, at most 3x
       (`reask/{n}`: small models write more when asked for more, and a long answer is then
       cut); after a third the answer is extended by the Extender (`extend/expand/{n}`,
       `extend/continue/{n}`, max_tokens bounded by the aim); after a fourth it stops.
    4. Long (over the window): cut at a sentence end inside the window (a paragraph end when
       there is one in it, else the sentence end nearest the aim); when no sentence end lands
       in it (one sentence longer than the window, typically for targets of 10-30 words), at
       a clause end (comma, semicolon, colon) inside it, made a full stop (`cut_at_clause`).
       A cut keeps the text verbatim and costs no call, so it is always the first choice;
       only when no cut lands in the window is the answer rewritten shorter by a call
       (`shorten/{n}`, `length/shorten.j2`), and then cut or continued like any answer.
    5. At most `ctl.max_attempts` calls (default `max_attempts_for(aim)`: 6, one more per 150
       words beyond 300; an extension counts two); then the candidate
       nearest the window among those that pass the filters (else among all) is the answer.
    6. When the aim is more than one call writes (`single_call_limit`: the setting, default
       1,500 words, and what the context leaves), AgentWrite plans and writes sections
       (`plan`, `section/{i}`, each continued under 90% and trimmed over 150% of its budget),
       and the whole is cut into the window when over.

    `strategy` names what produced the final text: "single" (the first answer as it came),
    "continued", "reasked", "extended", "rewritten", "trimmed" (cut at a sentence end),
    "sections"."""
    instruction = last_user(messages)
    count = ctl.count
    base_tokens = await count_message_tokens(ctx.llm, messages)
    if goal.aim > single_call_limit(ctl, ctx.llm.context_window, base_tokens + 32):
        return await _answer_in_sections(ctx, instruction, goal, ctl)

    def stated_messages(words: int = goal.aim) -> list[dict[str, str]]:  # in a step: the template is recorded
        return with_last_user(messages, ctx.render(TEMPLATES_STATED, instruction=instruction, words=words,
                                                   language=ctl.language))

    def no_room() -> LLMBadRequest:
        return LLMBadRequest(f"the messages do not fit the model's {ctx.llm.context_window}-token context")

    async def ask(key: str, hardened: bool, words: int = goal.aim) -> dict[str, Any]:
        asked = stated_messages(words)
        room = await call_room(ctx, asked, tokens_for_words(words * FIRST_ANSWER_SLACK, ctl.language,
                                                            ctl.max_tokens))
        if not room:
            if words != goal.aim:
                return {"no_room": True}
            raise no_room()
        return _call_record(await ctx.llm.chat(asked, ctl.options(key, room, after_loop=hardened)))

    async def go_on(key: str, kept: str, more: int, hardened: bool) -> dict[str, Any]:
        wanted = tokens_for_words(more * FIRST_ANSWER_SLACK, ctl.language, ctl.max_tokens)
        # The draft ends at a sentence end; a blank line after it opens the next paragraph (a
        # small model given the finished answer alone often ends it at once).
        prefilled = stated_messages() + [{"role": "assistant", "content": f"{kept}\n\n"}]
        asked = prefilled[:-1] + [{"role": "assistant", "content": kept}]
        reason = None
        if ctl.continuation != "chat":
            room = await call_room(ctx, prefilled, wanted)
            if not room:
                return {"no_room": True}
            try:
                result = await ctx.llm.chat(prefilled, ctl.options(key, room, after_loop=hardened,
                                                                   extra_body=dict(PREFILL_FLAGS)))
                return _call_record(result, continued_with="prefill")
            except LLMBadRequest as err:
                if ctl.continuation == "prefill":
                    raise
                reason = f"the server refused continue_final_message: {err}"
        chat = asked + [{"role": "user", "content": ctx.render(TEMPLATE_CONTINUE, more=more,
                                                               language=ctl.language)}]
        room = await call_room(ctx, chat, wanted)
        if not room:
            return {"no_room": True}
        result = await ctx.llm.chat(chat, ctl.options(key, room, after_loop=hardened))
        return _call_record(result, continued_with="chat", fallback_reason=reason)

    async def shorten(key: str, source: str) -> dict[str, Any]:
        prompt = ctx.render(TEMPLATE_SHORTEN, instruction=instruction, text=source, words=goal.aim,
                            language=ctl.language)
        asked = [{"role": "user", "content": prompt}]
        room = await call_room(ctx, asked, tokens_for_words(goal.aim * FIRST_ANSWER_SLACK, ctl.language,
                                                            ctl.max_tokens))
        if not room:
            return {"no_room": True}
        return _call_record(await ctx.llm.chat(asked, ctl.options(key, room)))

    def finished(text: str) -> str:
        """Output cut off at max_tokens loses its unfinished sentence ("" when it has none)."""
        cut = cut_to_sentence_end(text)
        return cut if ends_at_sentence_end(cut) else ""

    records: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    candidates: list[tuple[str, str]] = []  # (text, strategy), every text that came out
    extender = Extender(language=ctl.language, temperature=ctl.temperature, top_p=ctl.top_p, top_k=None,
                        repetition_penalty=None, seed=ctl.seed, model=ctl.model, continuation=ctl.continuation,
                        max_tokens=tokens_for_words(goal.aim * FIRST_ANSWER_SLACK, ctl.language, ctl.max_tokens))
    draft, draft_strategy = "", "single"
    calls, stalls, hardened = 0, 0, False
    done: tuple[str, str] | None = None
    max_attempts = ctl.max_attempts or max_attempts_for(goal.aim)

    def settle(text: str, strategy: str) -> tuple[str, str] | None:
        """Note `text` as a candidate; the answer when it is in the window and passes the
        filters as it is, or once cut at a sentence end inside the window."""
        candidates.append((text, strategy))
        words = count(text)
        if goal.low <= words <= goal.high and quality_filters(text, ctl.language)["passed"]:
            return text, strategy
        if words >= goal.low:
            cut = cut_into_window(text, goal.low, goal.high, goal.aim, count) \
                or cut_at_clause(text, goal.low, goal.high, goal.aim, ctl.language, count)
            if cut is not None and quality_filters(cut, ctl.language)["passed"]:
                candidates.append((cut, "trimmed"))
                return cut, "trimmed"
        return None

    while calls < max_attempts and done is None and stalls < 4:
        n = calls + 1
        if not draft:
            key, action, strategy = f"answer/{n}", "answer", "single"
            record = await ctx.step(key, lambda key=key, h=hardened or n > 1: ask(key, h))
            calls += 1
            records.append(record)
            text = finished(record["text"]) if record["finish_reason"] == "length" else record["text"].strip()
        elif stalls == 2:  # ask anew for more than the aim, in the ratio the draft fell short by
            key, action, strategy = f"reask/{n}", "reask", "reasked"
            stated = min(3 * goal.aim, math.ceil(goal.aim * goal.aim / max(count(draft), goal.aim / 3)))
            record = await ctx.step(key, lambda key=key, stated=stated: ask(key, True, stated))
            calls += 1
            if record.get("no_room"):
                stalls += 1
                continue
            records.append(record)
            text = finished(record["text"]) if record["finish_reason"] == "length" else record["text"].strip()
        elif stalls >= 3:
            if calls + 2 > max_attempts:  # an extension is two calls
                break
            key, action, strategy = f"extend/continue/{n}", "extend", "extended"
            outcome = await extend(ctx, extender, instruction, draft, n, key_prefix="extend/")
            calls += 2
            if outcome.no_room:
                break
            text = outcome.candidate
        else:
            key, action, strategy = f"continue/{n}", "continue", "continued"
            more = max(1, goal.aim - count(draft))
            record = await ctx.step(key, lambda key=key, kept=draft, more=more, h=hardened or stalls > 0:
                                    go_on(key, kept, more, h))
            calls += 1
            if record.get("no_room"):
                break
            records.append(record)
            piece = finished(record["text"]) if record["finish_reason"] == "length" else record["text"]
            text = join_continuation(draft, piece, "chat")  # a new paragraph either way

        text, looped = without_loop(text, ctl.language)
        hardened = hardened or looped
        words = count(text)
        attempts.append({"step": key, "action": action, "words": words, "looped": looped})
        if action != "answer":
            gained = words - count(draft)
            stalls = stalls + 1 if gained < max(2, 0.1 * (goal.aim - count(draft))) else 0
            if gained <= 0:
                continue  # nothing gained: the draft stays as it was
        done = settle(text, strategy)
        if done is not None:
            break
        if words > goal.high:  # over, with no sentence end inside the window: rewrite it shorter
            if calls >= max_attempts:
                break
            key = f"shorten/{calls + 1}"
            record = await ctx.step(key, lambda key=key, source=text: shorten(key, source))
            calls += 1
            if record.get("no_room"):
                break
            records.append(record)
            short = finished(record["text"]) if record["finish_reason"] == "length" else record["text"].strip()
            short, looped = without_loop(short, ctl.language)
            attempts.append({"step": key, "action": "shorten", "words": count(short), "looped": looped})
            if short:
                done = settle(short, "rewritten")
                if done is None and count(short) < goal.low:
                    draft, draft_strategy, stalls = short, "rewritten", 0
            continue
        if looped and words < goal.low / 3:  # a loop left too little to build on: start again
            draft, draft_strategy = "", "single"
            continue
        draft, draft_strategy = text, strategy
    if done is None:
        done = _nearest(candidates, goal, count, ctl.language) or (draft, draft_strategy)
    text, strategy = done
    last = records[-1] if records else {"finish_reason": "", "model": ""}
    return {"text": text, "strategy": strategy, "finish_reason": last["finish_reason"],
            "model": last.get("model") or ctl.model or ctx.llm.model_name, "usage": _usage(records),
            "calls": calls, "attempts": attempts}


def _nearest(candidates: list[tuple[str, str]], goal: Goal, count: Callable[[str], int],
             language: str) -> tuple[str, str] | None:
    """The candidate nearest the window among those that pass the filters (else among all)."""
    usable = [c for c in candidates if c[0].strip()]
    if not usable:
        return None
    passing = [c for c in usable if quality_filters(c[0], language)["passed"]] or usable
    return min(passing, key=lambda c: _distance(count(c[0]), goal))


async def _answer_in_sections(ctx: "JobContext", instruction: str, goal: Goal, ctl: Controller) -> dict[str, Any]:
    """AgentWrite's plan and sections for an aim beyond one call, then cut into the window."""
    from agents import agentwrite  # agentwrite imports this module

    params = agentwrite.WriteParams(instruction=instruction, target_words=goal.aim, language=ctl.language,
                                    temperature=ctl.temperature, top_p=ctl.top_p, seed=ctl.seed,
                                    write_model=ctl.model, max_tokens_per_call=ctl.max_tokens, judge=False)
    plan, _repairs, outputs = await agentwrite.write_planned(ctx, params, goal.aim, ctl.language)
    text = "\n\n".join(o["text"] for o in outputs)
    strategy = "sections"
    if ctl.count(text) > goal.high:
        text = cut_into_window(text, goal.low, goal.high, goal.aim, ctl.count) or text
    attempts = [{"step": f"section/{i}", "action": "section", "words": o["words"], "looped": False}
                for i, o in enumerate(outputs, 1)]
    return {"text": text, "strategy": strategy, "finish_reason": outputs[-1]["finish_reason"] if outputs else "",
            "model": ctl.model or ctx.llm.model_name,
            "usage": {"prompt_tokens": 0, "completion_tokens": sum(o.get("tokens", 0) for o in outputs)},
            "calls": sum(o["calls"] for o in outputs) + (1 if len(plan) > 1 else 0), "attempts": attempts,
            "sections": len(outputs)}
