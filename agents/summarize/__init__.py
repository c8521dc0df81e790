"""Book summarization job (`summarize`): hierarchical merging or incremental updating (BooookScore).

`await run(ctx, params)` loads the document, optionally strips the Project Gutenberg
header/footer, chunks it by tokens (agents.chunking), summarizes it with the chosen method
and returns (typed as `SummarizeResult`):

    {"summary", "word_count", "target_words", "length_ok", "trimmed", "method",
     "chunks", "chunk_size", "levels": [{"level", "nodes", "limit_tokens", "limit_words"}],
     "tree": {"nodes": [{"id", "level", "children", "words", "tokens", "calls", "problem",
                         ["chunk"], ["context"], ["kind"], ["final"]}], "root"},
     "calls", "model", "context_window",
     hierarchical: "sequential_merges" | incremental: "updates", "compressions",
     ["booookscore": {...}]}

`length_ok` says whether the summary is within +-10 % of target_words (it is unless the
model could not write that long in any attempt); `trimmed` says the last resort was used
(a too-long final cut to its whole sentences within the bound). A tree node's `problem`
is set when no answer met that node's budget and the best one was kept. `calls` counts
every model call behind the result (stable across resumes: it comes from stored steps).

Every node is a checkpointed step (keys `chunk/0/{i}`, `merge/{level}/{j}`, `update/{j}`,
`compress/{j}/{a}`, `update/{j}/{a}`, `revise/{k}`); see hierarchical.py and incremental.py.
Budgets are planned with the served model's own token counts: step `plan/tokens` measures its
tokenizer against cl100k once per job, limits and max_tokens are converted with that ratio,
and each merge's whole prompt is counted by the model first (step `fit/{level}/{j}`) and
regrouped when it does not fit (budgets.py, hierarchical.py).

`protocol` picks the algorithm: "controlled" (the default) is the above; "paper" runs the
BooookScore reference's own (paper.py): its chunker (lines as paragraphs), its prompt files
(`get_summaries_hier/*.txt`, `get_summaries_inc/*.txt`: Longform's wording unless a prompt
overlay supplies the originals), its budgets from `max_summary_len` (900 tokens) and the
server's context window, its retries, and no length revision or sampling. Under paper,
`target_words` given without `max_summary_len` sets max_summary_len = round(target_words /
0.65) (the paper states lengths only through max_summary_len), and the result's
`target_words` is round(max_summary_len x 0.65), the final summary's word bound. Every result
records `protocol` (agents.protocol): the protocol and how this run differs from the paper.
"""
from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.booookscore import BooookScoreOutcome, BooookScoreSkipped, score_summary
from agents.chunking import counted_chunks, reference_chunks
from agents.context import JobContext
from agents.gutenberg import strip_gutenberg
from agents.kinds import AbsentStaysAbsent, JobKind, ResultView, Score
from agents.protocol import PROTOCOL_FIELD_DESCRIPTION, Protocol, ProtocolRecord, protocol_record
from agents.summarize.budgets import BudgetError
from agents.summarize.hierarchical import HierarchicalSummarizer
from agents.summarize.incremental import IncrementalSummarizer
from agents.summarize.paper import (
    DEFAULT_MAX_SUMMARY_LEN,
    HIER_INIT,
    HIER_MERGE,
    HIER_MERGE_CONTEXT,
    INC_COMPRESS,
    INC_INIT,
    INC_UPDATE,
    WORD_RATIO,
    PaperSummarizer,
)

MIN_CHUNK_SIZE = 256  # the smallest chunk_size the params accept

__all__ = ["SummarizeParams", "SummarizeResult", "BudgetError", "run", "KIND"]


class SummarizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(min_length=1)
    method: Literal["hierarchical", "incremental"] = "hierarchical"
    # Tokens (cl100k_base) per chunk; it must also fit the model's context with the prompt
    # and the answer, which is checked against the model when the job runs.
    chunk_size: int = Field(2048, ge=256, le=128_000)
    target_words: int = Field(600, ge=50, le=20_000)
    strip_gutenberg: bool = False
    # Hierarchical only: give each merge the previous merge of its level as context (the
    # reference's behaviour; it makes one level's merges sequential).
    merge_context: bool = True
    # Parallel samples of the final summary (and of each length revision); the one closest to
    # target_words is kept. Models miss lengths: sampling several at once finds one within
    # +-10 % in one round far more often, at the cost of a few calls, without adding latency.
    # Controlled protocol only (paper makes one call per ask and revises nothing).
    length_samples: int = Field(3, ge=1, le=8)
    # Run BooookScore on the final summary afterwards (needs a configured judge model).
    score: bool = False
    score_mode: Literal["per_sentence", "batched"] = "per_sentence"
    protocol: Protocol = Field("controlled", description=PROTOCOL_FIELD_DESCRIPTION)
    # Paper protocol only: the summaries' token limit (the reference's max_summary_len: the
    # final summary's, 0.65 of it for each level below). Given target_words instead (and no
    # max_summary_len), paper uses round(target_words / 0.65).
    max_summary_len: int = Field(DEFAULT_MAX_SUMMARY_LEN, ge=16, le=100_000)

    @model_validator(mode="before")
    @classmethod
    def _paper_length_from_target_words(cls, data: Any) -> Any:
        # Resolved when the params are first validated, so a stored job (its params dumped
        # with every field) reads back the same.
        if (
            isinstance(data, dict)
            and data.get("protocol") == "paper"
            and data.get("max_summary_len") is None
            and isinstance(data.get("target_words"), int)
            and not isinstance(data.get("target_words"), bool)
        ):
            data = {**data, "max_summary_len": round(data["target_words"] / WORD_RATIO)}
        return data

    @model_validator(mode="after")
    def _paper_scores_per_sentence(self) -> "SummarizeParams":
        if self.protocol == "paper" and self.score and self.score_mode != "per_sentence":
            raise ValueError("protocol paper scores with BooookScore v1, the paper's method: use score_mode per_sentence")
        return self


class SummaryLevel(BaseModel):
    """One level of the hierarchical tree (level 0: chunk summaries; the last: the final one)."""

    model_config = ConfigDict(extra="forbid")

    level: int
    nodes: int = Field(description="summaries at this level")
    limit_tokens: int = Field(description="each summary's token limit")
    limit_words: int


class TreeNode(AbsentStaysAbsent):
    """One summary (a step). Hierarchical: chunk and merge nodes, then revisions; incremental:
    update and compress nodes, then revisions. Keys that a node kind lacks are absent."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description='the step key, e.g. "chunk/0/3", "merge/1/0", "update/4/1", "revise/0"')
    level: int | None = Field(description="the tree level; null for incremental nodes")
    children: list[str] = Field(description="ids of the nodes this one summarizes or revises")
    words: int
    calls: int = Field(description="model calls behind this node")
    tokens: int | None = Field(None, description="cl100k tokens (absent on revisions)")
    problem: str | None = Field(
        None, description="why the kept answer misses its budget; null when it meets it (absent on revisions)"
    )
    chunk: int | None = Field(None, description="the chunk it read (hierarchical chunk nodes, incremental updates)")
    context: str | None = Field(None, description="the previous merge given as context (hierarchical merges)")
    kind: Literal["update", "compress", "revise"] | None = Field(
        None, description="absent on hierarchical chunk and merge nodes"
    )
    final: bool | None = Field(None, description="true on the hierarchical final merge")


class SummaryTree(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: list[TreeNode] = Field(description="hierarchical: level by level, in step-key order; incremental: in order of creation")
    root: str = Field(description="the id of the node whose text is the summary")


class SummarizeResult(AbsentStaysAbsent):
    """`protocol` says which algorithm ran (see the module doc); `max_summary_len` is present
    for the paper protocol only."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="the final summary")
    word_count: int
    length_ok: bool = Field(description="word_count is within +-10 % of target_words")
    trimmed: bool = Field(description="the summary was cut to whole sentences to fit the bound (the last resort)")
    levels: list[SummaryLevel] = Field(description="hierarchical levels; empty for incremental")
    tree: SummaryTree
    calls: int = Field(description="every model call behind the summary")
    sequential_merges: int | None = Field(
        None, description="merges, run one after another within a level (hierarchical only; null without merge_context)"
    )
    updates: int | None = Field(None, description="running-summary updates (incremental only)")
    compressions: int | None = Field(None, description="updates redone after compressing (incremental only)")
    method: Literal["hierarchical", "incremental"]
    target_words: int
    chunks: int = Field(description="chunks the document was cut into")
    chunk_size: int
    model: str = Field(description="the summarizing model")
    context_window: int
    max_summary_len: int | None = Field(
        None, description="the summaries' token limit (paper protocol only: the reference's max_summary_len)"
    )
    protocol: ProtocolRecord
    booookscore: BooookScoreOutcome | BooookScoreSkipped | None = Field(
        None, description="BooookScore of the summary, or why it was skipped (only when params.score was set)"
    )


def result_scores(result: SummarizeResult) -> list[Score]:
    score = result.booookscore
    if isinstance(score, BooookScoreOutcome) and score.score is not None:
        return [Score("booookscore", score.score, {"mode": score.mode})]
    return []


async def run(ctx: JobContext, params: SummarizeParams | dict[str, Any]) -> dict[str, Any]:
    if not isinstance(params, SummarizeParams):
        params = SummarizeParams.model_validate(params)
    text = await ctx.load_document(params.document_id)
    if params.strip_gutenberg:
        text = strip_gutenberg(text)
    if params.protocol == "paper":
        result = await _run_paper(ctx, params, text)
    else:
        result = await _run_controlled(ctx, params, text)
    if params.score:
        if ctx.judge is None:
            result["booookscore"] = {"skipped": "no judge model is configured (JUDGE_ENDPOINTS)"}
        else:
            result["booookscore"] = await score_summary(
                ctx, result["summary"], mode=params.score_mode, key_prefix="booookscore/", protocol=params.protocol
            )
    return result


async def _run_paper(ctx: JobContext, params: SummarizeParams, text: str) -> dict[str, Any]:
    # The reference's chunker counts every line joined to the open chunk: a few seconds for
    # a novel, so off the event loop.
    chunks = await asyncio.to_thread(reference_chunks, text, params.chunk_size)
    if not any(c.strip() for c in chunks):
        raise ValueError(f"document {params.document_id} has no text to summarize")
    await ctx.llm.count_tokens("")  # learns the server's context window (max_context_len) first
    summarizer = PaperSummarizer(ctx, chunks, params.chunk_size, params.max_summary_len, params.merge_context)
    result = await summarizer.run(params.method)
    target = round(params.max_summary_len * WORD_RATIO)
    result.update(
        length_ok=abs(result["word_count"] - target) <= 0.1 * target,
        method=params.method,
        target_words=target,
        chunks=len(chunks),
        chunk_size=params.chunk_size,
        model=ctx.llm.model_name,
        context_window=ctx.llm.context_window,
    )
    differs = []
    if params.max_summary_len != DEFAULT_MAX_SUMMARY_LEN:
        origin = (
            f" = target_words {params.target_words} / 0.65"
            if params.max_summary_len == round(params.target_words / WORD_RATIO) else ""
        )
        differs.append(f"max_summary_len: {params.max_summary_len} tokens{origin} (paper: {DEFAULT_MAX_SUMMARY_LEN})")
    if params.method == "hierarchical" and not params.merge_context:
        differs.append("merge_context: off, merges without the previous merge (paper: on)")
    differs.extend(summarizer.deviations)
    result["protocol"] = protocol_record(ctx, "paper", differs, paper_templates(params.method, result))
    return result


def paper_templates(method: str, result: dict[str, Any]) -> list[str]:
    """The reference prompt files a paper run used (the merge prompt always: it sizes the budgets)."""
    nodes = result["tree"]["nodes"]
    if method == "hierarchical":
        used = [HIER_INIT, HIER_MERGE]
        if any(n.get("context") for n in nodes):
            used.append(HIER_MERGE_CONTEXT)
        return used
    used = [INC_INIT]
    if len(nodes) > 1:
        used.append(INC_UPDATE)
    if result["compressions"]:
        used.append(INC_COMPRESS)
    return used


def controlled_templates(method: str, result: dict[str, Any]) -> list[str]:
    """The templates a controlled run used (the merge or update one always: it sizes the budgets)."""
    nodes = result["tree"]["nodes"]
    used = ["summarize/chunk.j2", "summarize/merge.j2" if method == "hierarchical" else "summarize/update.j2"]
    if any(n.get("kind") == "compress" for n in nodes):
        used.append("summarize/compress.j2")
    if any(n.get("kind") == "revise" for n in nodes):
        used.append("summarize/revise.j2")
    return used


# How the controlled protocol differs from the reference, knob by knob.
_CONTROLLED_COMMON = [
    "paragraphs: blocks between blank lines, joined with a blank line (paper: every non-empty line, joined "
    "with a newline)",
    "oversized paragraphs: cut at sentence ends (pysbd), then at spaces, no text lost (paper: cut back to the "
    "second-to-last . ? ! or quote, then commas)",
    "length: the final summary is aimed at target_words +-10 % (paper: max_summary_len 900 tokens, an upper "
    "bound stated in the prompt)",
    "budgets: 15 % of the context window kept free for the model's tokenizer (paper: the whole window)",
    "max_tokens: 1.2 x each limit (paper: the limit)",
    "retries: a seed per call; from the second failed round an over-long answer is cut to its finished "
    "sentences (paper: re-asked up to 6 times at temperature 1)",
    "length revisions: up to 6 revise rounds of length_samples parallel samples after the final draft "
    "(paper: none)",
    "prompts: Longform's summarize/*.j2 with chunk numbers and a length bound (paper: its own prompt files)",
]
_CONTROLLED_HIERARCHICAL = [
    "top limit: ceil(target_words / 0.65) tokens (paper: max_summary_len 900)",
    "level limits: round(top x 0.65^k) from the top (paper: int() at each step down)",
    "merges: the budget must hold two summaries of the level below (else BudgetError), packed by their "
    "counted sizes (paper: as many as fit by counting the joined text, no such check)",
    "final merge: the first merge of a level whose inputs all fit next to the top limit (paper: a whole level "
    "is written at the top limit when all its inputs fit)",
    "context: the previous merge cut to whole sentences within 20 % of the budget (paper: cut at a token, "
    "then back to the last full stop)",
    "final length: the final summary is asked for about target_words, with length_samples samples (paper: "
    "within max_summary_len x 0.65 words, one call)",
]
_CONTROLLED_INCREMENTAL = [
    "running-summary cap: ceil(target_words / 0.65) tokens (paper: max_summary_len 900)",
    "updates ask for at most 85 % of the cap in words, the last one about target_words (paper: no length "
    "in the update prompt)",
    "first summary: checked and re-asked up to 6 times (paper: not checked)",
    "compression target: max(target x j / N x (1 - 0.05 a), target / 4) words (paper: int(0.65 x 900 x j / N) "
    "x (1 - 0.05 a))",
    "compression choice: the smallest relative word error, valid redone updates first (paper: the compressed "
    "word count closest to the first target)",
]


async def _run_controlled(ctx: JobContext, params: SummarizeParams, text: str) -> dict[str, Any]:
    # Chunking a whole book takes a few tenths of a second: keep the event loop free.
    chunks = await asyncio.to_thread(counted_chunks, text, params.chunk_size)
    if not chunks:
        raise ValueError(f"document {params.document_id} has no text to summarize")
    chunk_size = params.chunk_size
    if params.method == "hierarchical":
        summarizer: Any = HierarchicalSummarizer(
            ctx, chunks, params.target_words, params.merge_context, params.length_samples
        )
        result = await summarizer.run()
    else:
        try:
            result = await IncrementalSummarizer(ctx, chunks, params.target_words, params.length_samples).run()
        except BudgetError as exc:
            # The chunk, the running summary and the update do not fit the context as the model
            # counts it: re-cut the book into chunks that do (the plan is stored, so a resumed
            # job re-cuts the same way), and fail only when no chunk size would.
            hint = exc.chunk_size_hint
            if hint is None or hint < MIN_CHUNK_SIZE or hint >= chunk_size:
                raise
            chunk_size = hint
            chunks = await asyncio.to_thread(counted_chunks, text, chunk_size)
            result = await IncrementalSummarizer(ctx, chunks, params.target_words, params.length_samples).run()
    result.update(
        method=params.method,
        target_words=params.target_words,
        chunks=len(chunks),
        chunk_size=chunk_size,
        model=ctx.llm.model_name,
        context_window=ctx.llm.context_window,
    )
    differs = _CONTROLLED_COMMON + (
        _CONTROLLED_HIERARCHICAL if params.method == "hierarchical" else _CONTROLLED_INCREMENTAL
    )
    if params.method == "hierarchical" and not params.merge_context:
        differs = differs + ["merge_context: off, merges without the previous merge (paper: on)"]
    if chunk_size != params.chunk_size:
        differs = differs + [
            f"chunk_size: {chunk_size} tokens, the largest that fits the model's context as its tokenizer "
            f"counts (asked: {params.chunk_size})"
        ]
    result["protocol"] = protocol_record(ctx, "controlled", differs, controlled_templates(params.method, result))
    return result


KIND = JobKind(
    name="summarize",
    description="book summarization (hierarchical or incremental)",
    params=SummarizeParams,
    result=SummarizeResult,
    run=run,
    version=2,
    view=ResultView(text="summary", tree="tree", node_step="text"),
    scores=result_scores,
)
