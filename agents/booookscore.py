"""BooookScore (Chang et al., ICLR 2024): the share of summary sentences a judge finds no confusion in.

score = 1 - flagged / scored, where a sentence is flagged when the judge names at least one
of the eight error types for it (with the questions a confused reader would ask), and
`scored` leaves out sentences whose verdict never parsed (reported, never guessed).

Two modes, labelled in the result because their numbers are not comparable:
- "per_sentence" (the paper's v1): one judge call per sentence (`judge/{i}` steps, run
  concurrently), the whole summary in the prompt and the sentence to check last;
- "batched" (v2-style, about batch_size times fewer calls; ran 1-10 points higher than v1 on
  the released annotations): numbered sentences judged batch_size at a time (`judge/batch/{j}`).
Two reply formats: "json" (default; schema-constrained through agents.llm.structured.chat_json,
then checked here: closed label set, questions and types both present or both empty) and
"text" (the paper's two lines "Questions: ...\\nTypes: ..."; v2's JSON list for batches) for
judges asked without schemas. A verdict that fails the checks is asked again, then the
sentence is marked unparseable; in a batch the valid verdicts are kept and only the rest
are asked again.
Sentences come from agents.sentences (pysbd; the paper used NLTK punkt, so counts can
differ slightly).

`protocol: "paper"` runs v1 as the reference package does: its prompt file
`get_annotations.txt` filled with (summary, sentence), a two-line text reply checked by its
rules (`parse_verdict_reference`), max_tokens 100 at temperature 0 on every ask, verdicts
kept per distinct sentence text (a repeated sentence counts once, its last verdict wins),
and every distinct sentence in the denominator. The reference asks again without end; here
the asks stay bounded, and a sentence whose verdict never parsed counts as not confusing
(recorded as a difference). The controlled protocol (the default) leaves unparsed sentences
out of the denominator instead, and reports them.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.context import JobContext
from agents.kinds import JobKind, ResultView, Score
from agents.llm.structured import chat_json, json_candidates
from agents.llm.types import GenOptions, LLMClient, LLMResult, StructuredOutputError
from agents.protocol import PROTOCOL_FIELD_DESCRIPTION, Protocol, ProtocolRecord, protocol_record
from agents.sentences import split_sentences

LABELS = (
    "entity omission",
    "event omission",
    "causal omission",
    "salience",
    "discontinuity",
    "duplication",
    "inconsistency",
    "language",
)
NO_CONFUSION = "no confusion"
JUDGE_ATTEMPTS = 3  # asks per sentence (or per missing part of a batch) before "unparseable"
STRUCTURED_ATTEMPTS = 2  # chat_json's own schema repairs within one ask
SENTENCE_MAX_TOKENS = 400
BATCH_ITEM_MAX_TOKENS = 250
PAPER_TEMPLATE = "get_annotations.txt"  # the reference's prompt file name
PAPER_MAX_TOKENS = 100

_QUESTIONS_LINE = re.compile(r"^[ \t>*_#-]*questions?[ \t*_]*:[ \t*_]*(.*)$", re.I | re.M)
_TYPES_LINE = re.compile(r"^[ \t>*_#-]*types?[ \t*_]*:[ \t*_]*(.*)$", re.I | re.M)


class VerdictError(ValueError):
    """A judge reply that cannot be used as a verdict (format, unknown label, contradiction)."""


@dataclass(frozen=True)
class Verdict:
    questions: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.types)

    def to_json(self) -> dict[str, Any]:
        return {"questions": list(self.questions), "types": list(self.types)}


# ----- parsing (pure) ----------------------------------------------------------------------------

def _is_no_confusion(value: str) -> bool:
    return value.strip().strip(".\"'`*").strip().lower() in (NO_CONFUSION, "none", "")


def _normalize_label(raw: str) -> str:
    label = re.sub(r"\s+", " ", raw.strip().strip(".\"'`*[]").strip().lower())
    if label not in LABELS:
        raise VerdictError(f"unknown error type {raw.strip()!r}")
    return label


def _split_questions(text: str) -> list[str]:
    parts = re.split(r"(?<=\?)\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def _verdict(questions: list[str], types: list[str]) -> Verdict:
    """Check consistency: both empty (no confusion) or both present."""
    questions = [q for q in (q.strip() for q in questions) if q and not _is_no_confusion(q)]
    labels: list[str] = []
    for t in types:
        if _is_no_confusion(t):
            continue
        label = _normalize_label(t)
        if label not in labels:
            labels.append(label)
    if bool(questions) != bool(labels):
        raise VerdictError(
            "questions without error types" if questions else "error types without questions"
        )
    return Verdict(questions, labels)


def parse_verdict_text(text: str) -> Verdict:
    """The paper's two-line reply: "Questions: <questions | no confusion>" then
    "Types: <comma-separated labels | no confusion>". Raises VerdictError."""
    q_match = _QUESTIONS_LINE.search(text)
    t_match = _TYPES_LINE.search(text)
    if q_match is None or t_match is None:
        raise VerdictError("expected a 'Questions:' line and a 'Types:' line")
    if len(_QUESTIONS_LINE.findall(text)) > 1 or len(_TYPES_LINE.findall(text)) > 1:
        raise VerdictError("more than one 'Questions:' or 'Types:' line")
    if t_match.start() < q_match.start():
        raise VerdictError("'Types:' comes before 'Questions:'")
    # Questions may wrap onto further lines, up to the Types line.
    questions_text = " ".join((q_match.group(1) + " " + text[q_match.end():t_match.start()]).split())
    types_text = t_match.group(1).strip()
    q_none, t_none = _is_no_confusion(questions_text), _is_no_confusion(types_text)
    if q_none != t_none:
        raise VerdictError("'no confusion' in one line but not in the other")
    if q_none:
        return Verdict()
    return _verdict(_split_questions(questions_text), re.split(r"[,;]", types_text))


def parse_verdict_reference(text: str) -> Verdict:
    """The reference package's check of a two-line reply: of the lines holding "Questions: "
    or "Types: ", the first must hold "Questions: " and the second "Types: "; "no confusion"
    in the questions needs it in the types too; types are split on ", " and each must be one
    of the eight labels. Raises VerdictError."""
    lines = [line for line in text.split("\n") if "Questions: " in line or "Types: " in line]
    if len(text.split("\n")) < 2 or len(lines) < 2:
        raise VerdictError("expected a 'Questions: ' line and a 'Types: ' line")
    q_pos, t_pos = lines[0].find("Questions: "), lines[1].find("Types: ")
    if q_pos == -1 or t_pos == -1:
        raise VerdictError("expected 'Questions: ' then 'Types: '")
    questions = lines[0][q_pos + len("Questions: "):].strip()
    types = lines[1][t_pos + len("Types: "):].strip().lower()
    if NO_CONFUSION in questions:
        if NO_CONFUSION not in types:
            raise VerdictError("'no confusion' in the questions but not in the types")
        return Verdict()
    labels = types.split(", ")
    unknown = [t for t in labels if t not in LABELS]
    if unknown:
        raise VerdictError(f"unknown error type {unknown[0]!r}")
    return Verdict([questions] if questions else [], list(dict.fromkeys(labels)))


def _as_list(value: Any, what: str, split_text) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [] if _is_no_confusion(value) else split_text(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise VerdictError(f"{what} must be a list of strings, a string or null")


def verdict_from_json(value: Any) -> Verdict:
    """A verdict object {"questions": [...], "types": [...]} (strings and null accepted, as in
    BooookScore v2). Raises VerdictError."""
    if not isinstance(value, dict):
        raise VerdictError("a verdict must be a JSON object")
    if "questions" not in value or "types" not in value:
        raise VerdictError("a verdict needs both 'questions' and 'types'")
    questions = _as_list(value["questions"], "questions", _split_questions)
    types = _as_list(value["types"], "types", lambda s: re.split(r"[,;]", s))
    return _verdict(questions, types)


@dataclass
class BatchParse:
    verdicts: dict[int, Verdict]  # sentence number -> verdict, for the valid items
    problems: dict[int, str]  # sentence number -> why it has no verdict (missing, invalid...)


def parse_batch(value: Any, expected: list[int]) -> BatchParse:
    """Verdicts for the sentence numbers in `expected` from a batched reply: a JSON value (a
    list of items, or {"verdicts": [...]}) or the raw reply text (v2: the list between the
    first '[' and the last ']'). Items carry "sentence" or "sentence_num". Valid items are
    kept even when others are broken; numbers not asked for are ignored; a number answered
    twice with different verdicts is a problem."""
    items = _batch_items(value)
    found: dict[int, list[Any]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        number = item.get("sentence", item.get("sentence_num"))
        if isinstance(number, str) and number.strip().isdigit():
            number = int(number.strip())
        if isinstance(number, bool) or not isinstance(number, int) or number not in expected:
            continue
        found.setdefault(number, []).append(item)
    verdicts: dict[int, Verdict] = {}
    problems: dict[int, str] = {}
    for number in expected:
        answers = found.get(number)
        if not answers:
            problems[number] = "no verdict for this sentence"
            continue
        try:
            parsed = [verdict_from_json(a) for a in answers]
        except VerdictError as exc:
            problems[number] = str(exc)
            continue
        if any(p != parsed[0] for p in parsed[1:]):
            problems[number] = "conflicting verdicts for this sentence"
            continue
        verdicts[number] = parsed[0]
    return BatchParse(verdicts, problems)


def _batch_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        text = value
        start, end = text.find("["), text.rfind("]")
        candidates = []
        if start >= 0 and end > start:
            try:
                candidates.append(json.loads(text[start:end + 1]))
            except ValueError:
                pass
        candidates.extend(json_candidates(text))
        for candidate in candidates:
            items = _batch_items_or_none(candidate)
            if items is not None:
                return items
        return []
    return _batch_items_or_none(value) or []


def _batch_items_or_none(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and isinstance(value.get("verdicts"), list):
        return value["verdicts"]
    return None


# ----- schemas -----------------------------------------------------------------------------------

_QUESTIONS_SCHEMA = {"type": "array", "items": {"type": "string"}}
_TYPES_SCHEMA = {"type": "array", "items": {"type": "string", "enum": list(LABELS)}, "uniqueItems": True}
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"questions": _QUESTIONS_SCHEMA, "types": _TYPES_SCHEMA},
    "required": ["questions", "types"],
    "additionalProperties": False,
}


def batch_schema(numbers: list[int]) -> dict[str, Any]:
    """One verdict per sentence to check, in order, each pinned to its sentence number
    (prefixItems + const), so a constrained judge cannot skip, repeat or renumber one."""
    def item(number: int) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"sentence": {"const": number}, "questions": _QUESTIONS_SCHEMA, "types": _TYPES_SCHEMA},
            "required": ["sentence", "questions", "types"],
            "additionalProperties": False,
        }

    return {
        "type": "object",
        "properties": {
            "verdicts": {
                "type": "array",
                "prefixItems": [item(n) for n in numbers],
                "items": False,
                "minItems": len(numbers),
                "maxItems": len(numbers),
            }
        },
        "required": ["verdicts"],
        "additionalProperties": False,
    }


# ----- the job -----------------------------------------------------------------------------------

class BooookScoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: str | None = None  # the summary text itself
    job_id: str | None = None  # a finished summarize job: its result.summary is judged
    document_id: str | None = None  # an uploaded document holding the summary
    mode: Literal["per_sentence", "batched"] = "per_sentence"
    batch_size: int = Field(10, ge=1, le=50)
    # The judge's reply format; default: "json" (controlled), "text" (paper, the reference's two lines).
    output: Literal["json", "text"] | None = None
    protocol: Protocol = Field("controlled", description=PROTOCOL_FIELD_DESCRIPTION)

    @model_validator(mode="after")
    def _one_source(self) -> "BooookScoreParams":
        if self.protocol == "paper" and self.mode != "per_sentence":
            raise ValueError("protocol paper is BooookScore v1, the paper's method: use mode per_sentence")
        sources = [s for s in (self.summary, self.job_id, self.document_id) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of summary, job_id, document_id")
        if self.summary is not None and not self.summary.strip():
            raise ValueError("summary is empty")
        return self


ErrorType = Literal[LABELS]  # the eight labels, as a type


class FlaggedSentence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(description="0-based position of the sentence in the summary")
    sentence: str
    types: list[ErrorType] = Field(description="the error types the judge named (at least one)")
    questions: list[str] = Field(description="the questions a confused reader would ask")


class BooookScoreOutcome(BaseModel):
    """What `score_summary` returns (a summarize job's `booookscore` when it scored)."""

    model_config = ConfigDict(extra="forbid")

    score: float | None = Field(
        description="1 - flagged / scored (controlled) or 1 - flagged / distinct sentences (paper); null when "
        "no verdict parsed"
    )
    mode: Literal["per_sentence", "batched"]
    comparable_to: str = Field(description="which published BooookScore numbers this one can be compared with, if any")
    output: Literal["json", "text"] = Field(description="the judge's reply format")
    sentences: int = Field(description="sentences in the summary")
    scored: int = Field(description="sentences with a parsed verdict")
    flagged: list[FlaggedSentence] = Field(description="sentences the judge found confusing, in order")
    unparseable: list[int] = Field(description="indices of sentences whose verdict never parsed")
    type_counts: dict[ErrorType, int] = Field(description="flagged sentences per error type (all eight)")
    judge: Literal["judge", "llm"] = Field(description='"judge" when a judge model is configured, else "llm" (the job model)')
    judge_model: str
    calls: int = Field(description="judge calls, retries included")
    splitter: str = Field(description="the sentence splitter")
    protocol: ProtocolRecord


class BooookScoreSkipped(BaseModel):
    """A summarize job's `booookscore` when scoring was asked for but could not run."""

    model_config = ConfigDict(extra="forbid")

    skipped: str = Field(description="why")


class BooookScoreResult(BooookScoreOutcome):
    source: str = Field(description='what was judged: "summary", "job <id>" or "document <id>"')


def outcome_scores(outcome: BooookScoreOutcome) -> list[Score]:
    return [Score("booookscore", outcome.score, {"mode": outcome.mode})]


async def run(ctx: JobContext, params: BooookScoreParams | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(params, BooookScoreParams):
        params = BooookScoreParams.model_validate(params)
    if params.summary is not None:
        summary, source = params.summary, "summary"
    elif params.job_id is not None:
        result = await ctx.load_job_result(params.job_id)
        summary = result.get("summary") if isinstance(result, dict) else None
        if not isinstance(summary, str) or not summary.strip():
            raise ValueError(f"job {params.job_id} has no summary in its result")
        source = f"job {params.job_id}"
    else:
        summary, source = await ctx.load_document(params.document_id), f"document {params.document_id}"
    result = await score_summary(
        ctx, summary, mode=params.mode, batch_size=params.batch_size, output=params.output, protocol=params.protocol
    )
    result["source"] = source
    return result


async def score_summary(
    ctx: JobContext,
    summary: str,
    mode: str = "per_sentence",
    batch_size: int = 10,
    output: str | None = None,
    key_prefix: str = "",
    protocol: Protocol = "controlled",
) -> dict[str, Any]:
    """Judge every sentence of `summary` and compute BooookScore (see the module doc)."""
    paper = protocol == "paper"
    if paper and mode != "per_sentence":
        raise ValueError("protocol paper is BooookScore v1: one judge call per sentence")
    output = output or ("text" if paper else "json")
    judge, judge_role = (ctx.judge, "judge") if ctx.judge is not None else (ctx.llm, "llm")
    sentences = split_sentences(summary)
    if not sentences:
        raise ValueError("the summary has no sentences to judge")
    done = 0

    async def progress() -> None:
        nonlocal done
        done += 1
        await ctx.progress(done, total, phase="judging")

    verdicts: dict[int, dict[str, Any]] = {}
    unparseable: list[int] = []
    calls = 0
    if mode == "per_sentence":
        total = len(sentences)

        async def one(i: int) -> dict[str, Any]:
            judge_one = _judge_sentence_paper if paper else _judge_sentence
            out = await ctx.step(
                f"{key_prefix}judge/{i}", lambda: judge_one(ctx, judge, summary, sentences[i], output, i)
            )
            await progress()
            return out

        outs = await asyncio.gather(*(one(i) for i in range(len(sentences))))
        for i, out in enumerate(outs):
            calls += out["calls"]
            if out.get("verdict") is None:
                unparseable.append(i)
            else:
                verdicts[i] = out["verdict"]
    elif mode == "batched":
        batches = [list(range(s, min(s + batch_size, len(sentences)))) for s in range(0, len(sentences), batch_size)]
        total = len(batches)

        async def batch(j: int, indices: list[int]) -> dict[str, Any]:
            out = await ctx.step(
                f"{key_prefix}judge/batch/{j}",
                lambda: _judge_batch(ctx, judge, sentences, indices, output, j),
            )
            await progress()
            return out

        outs = await asyncio.gather(*(batch(j, b) for j, b in enumerate(batches)))
        for out in outs:
            calls += out["calls"]
            verdicts.update({int(i): v for i, v in out["verdicts"].items()})
            unparseable.extend(out["unparseable"])
    else:
        raise ValueError(f"unknown mode {mode!r}")

    flagged = [
        {"index": i, "sentence": sentences[i], "types": v["types"], "questions": v["questions"]}
        for i, v in sorted(verdicts.items())
        if v["types"]
    ]
    scored = len(verdicts)
    if paper:
        # The reference keeps one verdict per distinct sentence text (the last one asked) and
        # divides by the distinct sentences; a verdict that never parsed counts as no confusion.
        last = {sentences[i]: i for i in range(len(sentences))}
        flagged = [f for f in flagged if last[f["sentence"]] == f["index"]]
        score: float | None = 1 - len(flagged) / len(last)
    else:
        score = (1 - len(flagged) / scored) if scored else None
    type_counts = Counter(t for f in flagged for t in f["types"])
    template = PAPER_TEMPLATE if paper else "booookscore/sentence.j2" if mode == "per_sentence" else "booookscore/batch.j2"
    record = protocol_record(ctx, protocol, _differences(paper, mode, output, bool(unparseable)), [template])
    return {
        "score": score,
        "mode": mode,
        "comparable_to": _comparable_to(mode, record),
        "output": output,
        "sentences": len(sentences),
        "scored": scored,
        "flagged": flagged,
        "unparseable": sorted(unparseable),
        "type_counts": {label: type_counts.get(label, 0) for label in LABELS},
        "judge": judge_role,
        "judge_model": judge.model_name,
        "calls": calls,
        "splitter": "pysbd",
        "protocol": record,
    }


def _differences(paper: bool, mode: str, output: str, any_unparsed: bool) -> list[str]:
    out = ["sentences: split by pysbd (paper: NLTK punkt)"]
    if paper:
        out.append(f"re-asks: at most {JUDGE_ATTEMPTS} per sentence (paper: until the reply parses)")
        if any_unparsed:
            out.append("sentences whose verdict never parsed: counted as not confusing (paper: asked until parsed)")
        if output != "text":
            out.append("reply: JSON (paper: two text lines)")
        return out
    out.append("denominator: sentences with a parsed verdict, each occurrence (paper: every distinct sentence)")
    out.append(f"re-asks: up to {JUDGE_ATTEMPTS}, sampling after the first (paper: temperature 0 until parsed)")
    if mode == "batched":
        out.append("mode: batched, v2 (paper: one call per sentence, v1)")
    if output == "json":
        out.append("reply: schema-constrained JSON (paper: two text lines)")
    return out


def _comparable_to(mode: str, record: dict[str, Any]) -> str:
    if record["comparable_to_paper"]:
        return "BooookScore v1 (the paper's method and prompt)"
    if mode == "batched":
        return "none: v2 batched judging is not comparable with v1, the paper's (it ran 1-10 points higher)"
    why = "Longform's own judge prompt" if "bundled" in record["prompts"].values() else "its settings differ"
    return f"none: v1 per-sentence judging, but {why}; compare only with runs of the same protocol and prompts"


class _CallCounter:
    """Counts the calls made through a client (chat_json may make several)."""

    def __init__(self, inner: LLMClient):
        self.inner = inner
        self.calls = 0

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def context_window(self) -> int:
        return self.inner.context_window

    async def chat(self, messages, options: GenOptions | None = None) -> LLMResult:
        self.calls += 1
        return await self.inner.chat(messages, options)

    async def complete(self, prompt: str, options: GenOptions | None = None) -> LLMResult:
        self.calls += 1
        return await self.inner.complete(prompt, options)

    async def count_tokens(self, text: str) -> int:
        return await self.inner.count_tokens(text)

    async def aclose(self) -> None:
        pass


async def _ask(
    client: _CallCounter, prompt: str, schema: dict[str, Any] | None, max_tokens: int, attempt: int, seed: int
) -> tuple[Any | None, str]:
    """One ask: (parsed JSON or None, reply text or the schema failure). Temperature 0 first,
    as in the paper; later asks sample, so a stubborn judge can answer differently."""
    # Imported here: agents.summarize imports this module's result models, and importing
    # agents.summarize.nodes at the top would run agents/summarize/__init__.py first (a cycle).
    from agents.summarize.nodes import room_for_answer

    messages = [{"role": "user", "content": prompt}]
    room = await room_for_answer(client, messages, max_tokens)
    if room < 16:
        raise ValueError(f"the judge prompt does not fit the judge's {client.context_window}-token context")
    options = GenOptions(max_tokens=room, temperature=0.0 if attempt == 0 else 0.7, seed=seed + attempt)
    if schema is None:
        result = await client.chat(messages, options)
        return None, result.text
    try:
        value, result = await chat_json(client, messages, schema, options, attempts=STRUCTURED_ATTEMPTS)
    except StructuredOutputError as exc:
        return None, f"schema: {exc}"
    return value, result.text


async def _judge_sentence(
    ctx: JobContext, judge: LLMClient, summary: str, sentence: str, output: str, index: int
) -> dict[str, Any]:
    client = _CallCounter(judge)
    prompt = ctx.render("booookscore/sentence.j2", summary=summary, sentence=sentence, output=output)
    problems: list[str] = []
    for attempt in range(JUDGE_ATTEMPTS):
        value, text = await _ask(
            client, prompt, VERDICT_SCHEMA if output == "json" else None, SENTENCE_MAX_TOKENS, attempt, index * 31
        )
        try:
            if output == "json":
                if value is None:
                    raise VerdictError(text)
                verdict = verdict_from_json(value)
            else:
                verdict = parse_verdict_text(text)
        except VerdictError as exc:
            problems.append(str(exc)[:300])
            continue
        return {"verdict": verdict.to_json(), "calls": client.calls, "attempts": attempt + 1}
    return {"verdict": None, "problems": problems, "calls": client.calls, "attempts": JUDGE_ATTEMPTS}


async def _judge_sentence_paper(
    ctx: JobContext, judge: LLMClient, summary: str, sentence: str, output: str, index: int
) -> dict[str, Any]:
    """The reference's v1 ask: its prompt file, max_tokens 100, temperature 0 every time."""
    client = _CallCounter(judge)
    prompt = ctx.render_text(PAPER_TEMPLATE, lambda t: t.format(summary, sentence))
    problems: list[str] = []
    for attempt in range(JUDGE_ATTEMPTS):
        result = await client.chat([{"role": "user", "content": prompt}],
                                   GenOptions(max_tokens=PAPER_MAX_TOKENS, temperature=0.0))
        try:
            verdict = parse_verdict_reference(result.text) if output == "text" else verdict_from_json(
                json.loads(result.text))
        except (VerdictError, ValueError) as exc:
            problems.append(str(exc)[:300])
            continue
        return {"verdict": verdict.to_json(), "calls": client.calls, "attempts": attempt + 1}
    return {"verdict": None, "problems": problems, "calls": client.calls, "attempts": JUDGE_ATTEMPTS}


async def _judge_batch(
    ctx: JobContext, judge: LLMClient, sentences: list[str], indices: list[int], output: str, j: int
) -> dict[str, Any]:
    """Numbers in prompts are 1-based sentence positions; indices in results are 0-based."""
    client = _CallCounter(judge)
    numbered = [{"number": i + 1, "text": s} for i, s in enumerate(sentences)]
    pending = [i + 1 for i in indices]
    found: dict[int, Verdict] = {}
    problems: dict[int, str] = {}
    for attempt in range(JUDGE_ATTEMPTS):
        if not pending:
            break
        prompt = ctx.render("booookscore/batch.j2", numbered=numbered, numbers=pending, output=output)
        value, text = await _ask(
            client, prompt, batch_schema(pending) if output == "json" else None,
            BATCH_ITEM_MAX_TOKENS * len(pending), attempt, j * 131,
        )
        parsed = parse_batch(value if value is not None else text, pending)
        found.update(parsed.verdicts)
        problems = parsed.problems
        pending = [n for n in pending if n not in found]
    return {
        "verdicts": {str(n - 1): v.to_json() for n, v in sorted(found.items())},
        "unparseable": [n - 1 for n in pending],
        "problems": {str(n - 1): p for n, p in problems.items() if n in pending},
        "calls": client.calls,
    }


KIND = JobKind(
    name="booookscore",
    description="BooookScore coherence of a summary",
    params=BooookScoreParams,
    result=BooookScoreResult,
    run=run,
    version=2,
    view=ResultView(flagged="flagged"),
    scores=outcome_scores,
)
