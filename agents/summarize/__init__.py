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
Budgets are planned in cl100k tokens with a 15 % margin of the context window for the
served model's own tokenizer (budgets.py).
"""
from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.booookscore import BooookScoreOutcome, BooookScoreSkipped, score_summary
from agents.chunking import counted_chunks
from agents.context import JobContext
from agents.gutenberg import strip_gutenberg
from agents.kinds import AbsentStaysAbsent, JobKind, ResultView, Score
from agents.summarize.budgets import BudgetError
from agents.summarize.hierarchical import HierarchicalSummarizer
from agents.summarize.incremental import IncrementalSummarizer

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
    length_samples: int = Field(3, ge=1, le=8)
    # Run BooookScore on the final summary afterwards (needs a configured judge model).
    score: bool = False
    score_mode: Literal["per_sentence", "batched"] = "per_sentence"


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
    # Chunking a whole book takes a few tenths of a second: keep the event loop free.
    chunks = await asyncio.to_thread(counted_chunks, text, params.chunk_size)
    if not chunks:
        raise ValueError(f"document {params.document_id} has no text to summarize")
    if params.method == "hierarchical":
        summarizer: Any = HierarchicalSummarizer(
            ctx, chunks, params.target_words, params.merge_context, params.length_samples
        )
    else:
        summarizer = IncrementalSummarizer(ctx, chunks, params.target_words, params.length_samples)
    result = await summarizer.run()
    result.update(
        method=params.method,
        target_words=params.target_words,
        chunks=len(chunks),
        chunk_size=params.chunk_size,
        model=ctx.llm.model_name,
        context_window=ctx.llm.context_window,
    )
    if params.score:
        if ctx.judge is None:
            result["booookscore"] = {"skipped": "no judge model is configured (JUDGE_ENDPOINTS)"}
        else:
            result["booookscore"] = await score_summary(
                ctx, result["summary"], mode=params.score_mode, key_prefix="booookscore/"
            )
    return result


KIND = JobKind(
    name="summarize",
    description="book summarization (hierarchical or incremental)",
    params=SummarizeParams,
    result=SummarizeResult,
    run=run,
    version=1,
    view=ResultView(text="summary", tree="tree"),
    scores=result_scores,
)
