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

import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from agents.llm.tokens import count_message_tokens, output_room
from agents.llm.types import GenOptions, LLMBadRequest
from agents.text import count_words

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
    """Cut at the paragraph boundary whose running word count is closest to `budget` (at
    least one paragraph); when that is still more than 25% off, at the closest sentence end."""
    paragraphs = split_paragraphs(text)
    best, best_gap, running = 1, None, 0
    for k, p in enumerate(paragraphs, 1):
        running += count_words(p)
        gap = abs(running - budget)
        if best_gap is None or gap < best_gap:
            best, best_gap = k, gap
    cut = "\n\n".join(paragraphs[:best])
    if best_gap is None or best_gap <= 0.25 * budget:
        return cut or text
    ends = [m.end() for m in SENTENCE_END.finditer(cut)]
    if not ends:
        return cut
    end = min(ends, key=lambda e: abs(count_words(cut[:e]) - budget))
    return cut[:end].rstrip() if abs(count_words(cut[:end]) - budget) < best_gap else cut


def trim_to_target(text: str, target: int, tolerance: float = 0.1,
                   count: Callable[[str], int] = count_words) -> str:
    """`text` cut back to about `target` words: unchanged when it is not over target by more
    than `tolerance`; else at the paragraph end nearest the target when one lies within the
    tolerance, else at the sentence end nearest the target (never empty: at least the first
    sentence or paragraph)."""
    if count(text) <= (1 + tolerance) * target:
        return text
    paragraph_ends = {m.start() for m in _PARAGRAPH_BREAK.finditer(text)} | {len(text.rstrip())}
    sentence_ends = {m.end() for m in SENTENCE_END.finditer(text)}
    points = sorted(e for e in paragraph_ends | sentence_ends if text[:e].strip())
    if not points:
        return text
    # Running counts, one segment at a time (every cut point is a word boundary).
    counted, running, previous = [], 0, 0
    for end in points:
        running += count(text[previous:end])
        counted.append((end, running))
        previous = end
    paragraph_cuts = [(abs(w - target), e) for e, w in counted if e in paragraph_ends and within(w, target, tolerance)]
    if paragraph_cuts:
        return text[:min(paragraph_cuts)[1]].rstrip()
    return text[:min((abs(w - target), e) for e, w in counted)[1]].rstrip()


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
