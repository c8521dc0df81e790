"""Book summarization as the BooookScore reference runs it (`protocol: "paper"`).

The algorithms of booookscore 0.1.3 (`booookscore.summ.Summarizer`), on Longform's job
context: every model call sits in a checkpointed step, so a resumed job re-runs only what
is missing, and the requests are the reference's (one user message holding its prompt file
filled by `str.format` with the reference's arguments, the same max_tokens, temperatures
0.5 then 1.0, no seed), so the same model answers the same way and the same number of
calls, chunks and levels come out. Chunks come from `agents.chunking.reference_chunks`.
Budgets are counted in cl100k_base tokens; `max_context_len` is the served model's context
window and `max_summary_len` the job's (900 by default).

Hierarchical merging (`chunk/0/{i}`, then `merge/{level}/{j}`):
- levels are estimated with fit = (max_context_len - tokens(merge prompt with ("", 0)) - 20)
  // chunk_limit and n = ceil(n / fit) until n = 1 (chunk_limit: chunk_size, then 450); the
  top level's limit is max_summary_len and each level below int(0.65 x the one above); a
  level past the estimate gets max_summary_len;
- at each level, when all its inputs joined with a blank line, plus max_summary_len, the
  merge prompt and 20 fit the context, the level's limit is raised to max_summary_len; the
  inputs of one merge may use num_tokens = max_context_len - limit - tokens(merge prompt) - 20;
- level 0 summarizes each chunk alone (`init.txt` with (chunk, words)); the chunks' steps
  are independent and run at once;
- a merge takes "Summary k:" blocks of consecutive inputs (joined with a blank line) while
  the count of context + blocks, plus 20, stays within num_tokens (the first block always),
  with the previous merge of its level as context (`merge_context.txt` with (context, text,
  words); `merge.txt` with (text, words) for the first merge of a level), the context cut to
  its first floor(0.2 x num_tokens) tokens and then back to its last full stop; the merges
  of a level therefore run one after another;
- a level with one summary is the end: that summary is the final one.
Each node: words = round(limit x 0.65); asked with max_tokens = limit at temperature 0.5.
An answer is valid when it is within `limit` tokens and ends in . ? ! " or '. Otherwise it
is asked again at temperature 1.0 with the previous ask's word count multiplied by
(1 - 0.1 x attempt) (attempt 0, 1, 2...: the first re-ask keeps the count, written as a
float, "585.0"; then 526.5, 421.2...), at most 6 times; then the last answer is kept and
its `problem` recorded.

Incremental updating (`update/{j}`, and `compress/{j}/{a}`, `update/{j}/{a}`):
- chunk 0 with `init.txt` (chunk); chunk j with `intermediate.txt` (chunk, summary so far);
  max_tokens = max_summary_len at temperature 0.5; the prompts state no length;
- when an update (j > 0) does not end in . ? ! " ' or has >= max_summary_len tokens, the
  summary so far is compressed (`compress.txt` with (summary, its words, target, target),
  temperature 1.0) at attempt a = 0, 1, ... to target = int(ori x (1 - 0.05 a)) words, where
  ori = int(int(0.65 x max_summary_len) x j / N); a compressed summary counts when it ends
  properly, has fewer than max_summary_len tokens and int(0.8 target) <= words <=
  int(1.2 target); then the update is redone with it (`intermediate.txt` with (chunk,
  compressed, w, w), w = int(int(0.65 x max_summary_len) x (j + 1) / N), which the file's
  two fields ignore), and a valid redone update ends the loop; after 6 attempts the attempt
  whose compressed word count is closest to ori is kept. The compressed summary replaces
  the summary of chunk j - 1.
Words are counted as the reference counts them here (`len(text.split())`).

Where the reference has no answer, Longform decides (and says so): an empty answer is asked
again at most twice and then fails the job (the reference asks again forever, or stops with
an error); a level whose merges each took one summary twice running fails with BudgetError
(the reference would go on forever); when no compression of an incremental step passed its
checks in 6 attempts, the summary so far stays uncompressed and the failing update is kept
with its problem (the reference stops with an error). Model errors raise (the LLM layer
retries them); no failure text is ever stored as a summary.
"""
from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable

from agents.context import JobContext
from agents.llm.types import GenOptions
from agents.summarize.budgets import BudgetError, measure_ratio
from agents.summarize.nodes import EmptySummaryError
from agents.text import count_tokens, count_words, decode, encode

# The reference's constants.
WORD_RATIO = 0.65  # words per token
DEFAULT_MAX_SUMMARY_LEN = 900  # tokens
PAD = 20  # tokens kept free in every budget
LATER_CHUNK_LIMIT = 450  # the size estimate_levels assumes for a summary above level 0
CONTEXT_SHARE = 0.2  # the previous merge may use this share of a merge's input budget
ATTEMPTS = 6  # re-asks of an invalid hierarchical node; compression attempts
SHRINK = 0.1  # each hierarchical re-ask multiplies the word count by (1 - 0.1 x attempt)
COMPRESS_SHRINK = 0.05  # each compression attempt asks 5 % x attempt less
COMPRESS_TOLERANCE = 0.2  # a compressed summary's words within int(0.8 t) .. int(1.2 t)
FIRST_TEMPERATURE = 0.5
RETRY_TEMPERATURE = 1.0  # hierarchical re-asks and every compression
TERMINAL = (".", "?", "!", '"', "'")  # a valid summary's last character

FIT_MARGIN_TOKENS = 64  # Longform: kept free when prompts are fitted to the model's own count

# Longform's bound where the reference asks again forever.
EMPTY_ASKS = 3

HIER_INIT = "get_summaries_hier/init.txt"
HIER_MERGE = "get_summaries_hier/merge.txt"
HIER_MERGE_CONTEXT = "get_summaries_hier/merge_context.txt"
INC_INIT = "get_summaries_inc/init.txt"
INC_UPDATE = "get_summaries_inc/intermediate.txt"
INC_COMPRESS = "get_summaries_inc/compress.txt"


def word_limit(token_limit: int) -> int:
    return round(token_limit * WORD_RATIO)


def estimate_levels(
    n_chunks: int, chunk_size: int, max_context_len: int, merge_template_tokens: int, max_summary_len: int
) -> tuple[int, list[int]]:
    """(levels, token limit per level, level 0 first), as the reference estimates them."""
    room = max_context_len - merge_template_tokens - PAD
    levels, n, chunk_limit = 0, n_chunks, chunk_size
    while n > 1:
        fit = room // chunk_limit
        if fit < 1:
            raise BudgetError(
                f"a {max_context_len}-token context holds no {chunk_limit}-token input next to the merge "
                f"prompt (the reference divides by zero here): use a smaller chunk_size"
            )
        n = math.ceil(n / fit)
        chunk_limit = LATER_CHUNK_LIMIT
        levels += 1
    limits = [max_summary_len]
    for _ in range(levels - 1):
        limits.append(int(limits[-1] * WORD_RATIO))
    limits.reverse()
    return levels, limits


def cut_context(context: str, max_tokens: int) -> str:
    """The previous merge as context: its first `max_tokens` tokens, then back to its last
    full stop (when it has one)."""
    if count_tokens(context) > max_tokens:
        context = decode(encode(context)[:max_tokens])
        if "." in context:
            context = context.rsplit(".", 1)[0] + "."
    return context


def hierarchical_problem(text: str, token_limit: int) -> str | None:
    """Why a hierarchical summary is not valid (the reference's check), or None."""
    tokens = count_tokens(text)
    if tokens > token_limit:
        return f"{tokens} tokens, over its {token_limit}-token limit"
    if text[-1] not in TERMINAL:
        return "does not end with . ? ! \" or '"
    return None


def update_problem(text: str, max_summary_len: int) -> str | None:
    """Why an incremental summary calls for compression (the reference's check), or None."""
    if text[-1] not in TERMINAL:
        return "does not end with . ? ! \" or '"
    tokens = count_tokens(text)
    if tokens >= max_summary_len:
        return f"{tokens} tokens, not under max_summary_len {max_summary_len}"
    return None


def compress_problem(text: str, max_summary_len: int, expected: int) -> str | None:
    problem = update_problem(text, max_summary_len)
    if problem is None:
        words = len(text.split())
        low, high = int(expected * (1 - COMPRESS_TOLERANCE)), int(expected * (1 + COMPRESS_TOLERANCE))
        if words < low or words > high:
            problem = f"{words} words, not within {low}..{high} (asked {expected})"
    return problem


def node_output(text: str, calls: int, problem: str | None, **extra: Any) -> dict[str, Any]:
    return {"text": text, "words": count_words(text), "tokens": count_tokens(text), "calls": calls,
            "problem": problem, **extra}


async def gather_or_cancel(coros: list[Awaitable[Any]]) -> list[Any]:
    """Results in order; on the first failure the others are cancelled and it is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class PaperSummarizer:
    """Runs one book through the reference's hierarchical or incremental algorithm."""

    def __init__(
        self,
        ctx: JobContext,
        chunks: list[str],
        chunk_size: int,
        max_summary_len: int = DEFAULT_MAX_SUMMARY_LEN,
        merge_context: bool = True,
    ):
        self.ctx = ctx
        self.chunks = chunks
        self.chunk_size = chunk_size
        self.max_summary_len = max_summary_len
        self.merge_context = merge_context
        self.max_context_len = ctx.llm.context_window
        self.done = 0
        self.total = len(chunks)
        self.deviations: list[str] = []  # where this run had to leave the reference's plan

    # ----- model calls -------------------------------------------------------------------------

    def fill(self, template: str, *args: Any) -> str:
        """The reference's prompt file filled as it fills it: `str.format(*args)`."""
        return self.ctx.render_text(template, lambda source: source.format(*args))

    async def ask(self, prompt: str, max_tokens: int, temperature: float, key: str) -> tuple[str, int]:
        """(answer, calls): one user message, as the reference sends it. An empty answer is
        asked again (the reference re-asks forever); EMPTY_ASKS empty answers fail the job."""
        options = GenOptions(max_tokens=max_tokens, temperature=temperature)
        for calls in range(1, EMPTY_ASKS + 1):
            result = await self.ctx.llm.chat([{"role": "user", "content": prompt}], options)
            if result.text:
                return result.text, calls
        raise EmptySummaryError(f"{key}: the model returned an empty answer {EMPTY_ASKS} times")

    async def progress(self, phase: str) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        await self.ctx.progress(self.done, self.total, phase=phase)

    # ----- the model's tokenizer ---------------------------------------------------------------

    async def _token_ratio(self) -> float:
        """The model's tokens per cl100k token (measured on three chunks; rounded to a 0.05
        grid, so a resumed job measures the same)."""
        n = len(self.chunks)
        return await measure_ratio(self.ctx.llm, [self.chunks[i] for i in sorted({0, n // 2, n - 1})])

    # ----- hierarchical merging ------------------------------------------------------------------

    async def hierarchical_node(self, key: str, build: Callable[[Any], str], token_limit: int) -> dict[str, Any]:
        """One summary: asked, then re-asked while invalid (see the module doc)."""
        words: Any = word_limit(token_limit)
        text, calls = await self.ask(build(words), token_limit, FIRST_TEMPERATURE, key)
        attempt = 0
        while (problem := hierarchical_problem(text, token_limit)) is not None and attempt < ATTEMPTS:
            words = words * (1 - SHRINK * attempt)  # an int times a float: the prompt says "585.0"
            text, n = await self.ask(build(words), token_limit, RETRY_TEMPERATURE, key)
            calls += n
            attempt += 1
        return node_output(text, calls, problem, limit=token_limit, asked_words=words)

    async def run_hierarchical(self) -> dict[str, Any]:
        msl, mcl = self.max_summary_len, self.max_context_len
        merge_tokens = count_tokens(self.fill(HIER_MERGE, "", 0))
        ratio = await self._token_ratio()
        n_levels, limits = estimate_levels(len(self.chunks), self.chunk_size, mcl, merge_tokens, msl)
        self.total = len(self.chunks) + max(0, n_levels - 1)
        nodes: list[dict[str, Any]] = []
        levels: list[dict[str, Any]] = []
        inputs = list(self.chunks)
        input_ids: list[str] = []
        level, stalled = 0, 0
        while True:
            limit = limits[level] if level < len(limits) else msl
            if count_tokens("\n\n".join(inputs)) + msl + merge_tokens + PAD <= mcl:
                limit = msl  # everything at this level fits one call: write at the final size
            num_tokens = mcl - limit - merge_tokens - PAD
            # Longform: the reference counts in cl100k; a model whose tokenizer counts more would
            # refuse its merges. Where the reference's budget overflows the context as the model
            # counts it, merges are packed within what fits, and the result says so.
            fitting = math.floor((mcl - limit - FIT_MARGIN_TOKENS) / ratio) - merge_tokens - PAD
            if level > 0 and ratio > 1.0 and fitting < num_tokens:
                self.deviations.append(
                    f"level {level} merges: inputs packed within {fitting} cl100k tokens so that each prompt fits "
                    f"the model's {mcl}-token context (its tokenizer counts {ratio:g} tokens per cl100k token) "
                    f"(paper: {num_tokens})"
                )
                num_tokens = fitting
            if level == 0:
                outs = await self._chunk_level(limit)
            else:
                outs = await self._merge_level(level, inputs, input_ids, limit, num_tokens)
            nodes.extend(outs)
            levels.append({"level": level, "nodes": len(outs), "limit_tokens": limit, "limit_words": word_limit(limit)})
            if len(outs) == 1:
                break
            if level > 0 and len(outs) == len(inputs):
                stalled += 1
                if stalled >= 2:
                    raise BudgetError(
                        f"level {level}: no merge could hold two summaries, twice running (the reference "
                        "would go on forever): use a larger context or a smaller max_summary_len"
                    )
            else:
                stalled = 0
            inputs = [n["_text"] for n in outs]
            input_ids = [n["id"] for n in outs]
            level += 1
        root = nodes[-1]
        if root["level"] > 0:
            root["final"] = True
        merges = sum(lv["nodes"] for lv in levels[1:])
        return self._result(nodes, root, levels, sequential_merges=merges if self.merge_context else None)

    async def _chunk_level(self, limit: int) -> list[dict[str, Any]]:
        async def one(i: int) -> dict[str, Any]:
            key = f"chunk/0/{i}"
            out = await self.ctx.step(
                key, lambda: self.hierarchical_node(key, lambda w: self.fill(HIER_INIT, self.chunks[i], w), limit)
            )
            await self.progress("chunks")
            return self._tree_node(key, 0, out, children=[], chunk=i)

        return await gather_or_cancel([one(i) for i in range(len(self.chunks))])

    def _group(self, inputs: list[str], i: int, context: str, num_tokens: int) -> tuple[str, int]:
        """The merge text starting at input i ("Summary 1:" ...) and the index after it."""
        j = 1
        text = f"Summary {j}:\n\n{inputs[i]}"
        while i + 1 < len(inputs) and (
            count_tokens(context + text + f"\n\nSummary {j + 1}:\n\n{inputs[i + 1]}") + PAD <= num_tokens
        ):
            i += 1
            j += 1
            text += f"\n\nSummary {j}:\n\n{inputs[i]}"
        return text, i + 1

    async def _merge_level(
        self, level: int, inputs: list[str], input_ids: list[str], limit: int, num_tokens: int
    ) -> list[dict[str, Any]]:
        context_len = math.floor(CONTEXT_SHARE * num_tokens)

        async def merge(j: int, start: int, end: int, text: str, context: str, previous: str | None) -> dict[str, Any]:
            key = f"merge/{level}/{j}"

            def build(words: Any) -> str:
                if context:
                    return self.fill(HIER_MERGE_CONTEXT, context, text, words)
                return self.fill(HIER_MERGE, text, words)

            out = await self.ctx.step(key, lambda: self.hierarchical_node(key, build, limit))
            await self.progress(f"merge level {level}")
            extra = {"context": previous} if context and previous else {}
            return self._tree_node(key, level, out, children=input_ids[start:end], **extra)

        if not self.merge_context:  # Longform's option: no context, so the groups are known at once
            groups, i = [], 0
            while i < len(inputs):
                text, end = self._group(inputs, i, "", num_tokens)
                groups.append((i, end, text))
                i = end
            return await gather_or_cancel(
                [merge(j, start, end, text, "", None) for j, (start, end, text) in enumerate(groups)]
            )
        outs: list[dict[str, Any]] = []
        i = 0
        while i < len(inputs):
            context = cut_context(outs[-1]["_text"], context_len) if outs else ""
            text, end = self._group(inputs, i, context, num_tokens)
            outs.append(await merge(len(outs), i, end, text, context, outs[-1]["id"] if outs else None))
            i = end
        return outs

    # ----- incremental updating ------------------------------------------------------------------

    async def _update(self, key: str, j: int, summary: str | None, *extra_args: Any) -> dict[str, Any]:
        msl = self.max_summary_len

        async def update() -> dict[str, Any]:
            if summary is None:
                prompt = self.fill(INC_INIT, self.chunks[j])
            else:
                prompt = self.fill(INC_UPDATE, self.chunks[j], summary, *extra_args)
            text, calls = await self.ask(prompt, msl, FIRST_TEMPERATURE, key)
            return node_output(text, calls, update_problem(text, msl))

        return await self.ctx.step(key, update)

    async def _compress(self, key: str, summary: str, expected: int) -> dict[str, Any]:
        msl = self.max_summary_len

        async def compress() -> dict[str, Any]:
            prompt = self.fill(INC_COMPRESS, summary, len(summary.split()), expected, expected)
            text, calls = await self.ask(prompt, msl, RETRY_TEMPERATURE, key)
            return node_output(text, calls, compress_problem(text, msl, expected), asked_words=expected)

        return await self.ctx.step(key, compress)

    async def run_incremental(self) -> dict[str, Any]:
        n = len(self.chunks)
        total_words = int(self.max_summary_len * WORD_RATIO)
        nodes: dict[str, dict[str, Any]] = {}
        calls = 0
        compressions = 0
        previous: dict[str, Any] | None = None  # tree node of the summary so far
        for j in range(n):
            out = await self._update(f"update/{j}", j, previous["_text"] if previous else None)
            calls += out["calls"]
            children = [previous["id"]] if previous else []
            node = self._tree_node(f"update/{j}", None, out, children=children, kind="update", chunk=j)
            if previous is not None and out["problem"] is not None:
                compressions += 1
                node, extra_calls = await self._compress_and_redo(j, n, total_words, previous, nodes)
                calls += extra_calls
            nodes[node["id"]] = node
            previous = node
            await self.progress("updates")
        result = self._result(list(nodes.values()), previous, [], updates=n, compressions=compressions)
        result["calls"] = calls
        return result

    async def _compress_and_redo(
        self, j: int, n: int, total_words: int, previous: dict[str, Any], nodes: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any], int]:
        """Compress the summary so far and redo update j (the reference's `compress`); returns
        the tree node of the kept update (its compressed child is added to `nodes`) and the
        calls made."""
        summary = previous["_text"]
        original = int(total_words * j / n)
        calls = 0
        # (compressed, redone update, attempt) by the compressed summary's words, as the
        # reference keys them (a later attempt of the same length takes the earlier's place).
        tried: dict[int, tuple[dict[str, Any], dict[str, Any], int]] = {}
        kept: tuple[dict[str, Any], dict[str, Any], int] | None = None
        for a in range(ATTEMPTS):
            expected = int(original * (1 - a * COMPRESS_SHRINK))
            compressed = await self._compress(f"compress/{j}/{a}", summary, expected)
            calls += compressed["calls"]
            if compressed["problem"] is not None:
                continue
            next_words = int(total_words * (j + 1) / n)
            redone = await self._update(f"update/{j}/{a}", j, compressed["text"], next_words, next_words)
            calls += redone["calls"]
            tried[len(compressed["text"].split())] = (compressed, redone, a)
            if redone["problem"] is None:
                kept = (compressed, redone, a)
                break
        if kept is None and tried:
            # No redone update was valid: the attempt whose compressed length is closest to the
            # first target (the first such attempt on a tie).
            kept = tried[min(tried, key=lambda words: abs(words - original))]
        if kept is None:
            # Longform's choice where the reference stops with an error: no compressed summary
            # passed its checks, so the summary so far stays and the failing update is kept.
            failed = f"update/{j}"
            out = await self._update(failed, j, summary)  # stored: no call
            out = {**out, "problem": f"{out['problem']}; no compression passed its checks in {ATTEMPTS} attempts"}
            return self._tree_node(failed, None, out, children=[previous["id"]], kind="update", chunk=j), calls
        compressed, redone, a = kept
        ckey = f"compress/{j}/{a}"
        nodes[ckey] = self._tree_node(ckey, None, compressed, children=[previous["id"]], kind="compress")
        update = self._tree_node(f"update/{j}/{a}", None, redone, children=[ckey], kind="update", chunk=j)
        return update, calls

    # ----- result ----------------------------------------------------------------------------------

    @staticmethod
    def _tree_node(
        key: str, level: int | None, out: dict[str, Any], children: list[str], **extra: Any
    ) -> dict[str, Any]:
        return {
            "id": key, "level": level, "children": children, "words": out["words"], "tokens": out["tokens"],
            "calls": out["calls"], "problem": out["problem"], **extra, "_text": out["text"],
        }

    def _result(self, nodes: list[dict[str, Any]], root: dict[str, Any], levels: list[dict[str, Any]],
                **counters: Any) -> dict[str, Any]:
        tree = [{k: v for k, v in n.items() if not k.startswith("_")} for n in nodes]
        summary = root["_text"]
        return {
            "summary": summary,
            "word_count": count_words(summary),
            "trimmed": False,
            "levels": levels,
            "tree": {"nodes": tree, "root": root["id"]},
            "calls": sum(n["calls"] for n in nodes),
            "max_summary_len": self.max_summary_len,
            **counters,
        }

    async def run(self, method: str) -> dict[str, Any]:
        if method == "hierarchical":
            return await self.run_hierarchical()
        return await self.run_incremental()
