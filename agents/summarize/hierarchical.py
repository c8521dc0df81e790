"""Hierarchical merging (BooookScore): summarize every chunk, then merge summaries level by level.

Steps (each a checkpointed node, so a resumed job re-runs only what is missing):
- `chunk/0/{i}`: the summary of chunk i. All of them are independent and start at once;
  the LLM client's in-flight limits bound how many run together.
- `merge/{level}/{j}`: the j-th merge at `level`, over as many consecutive summaries of
  the level below as fit the context budget, with the previous merge of the same level
  (`merge/{level}/{j-1}`, cut to 20 % of the budget) as context. That context makes the
  merges of one level sequential, as in the reference; `merge_context=False` drops it and
  runs them concurrently. A level starts merging as soon as its first inputs exist, so
  level 1 overlaps the tail of level 0.
- the final merge: the first merge of a level whose inputs all fit one call with the
  top (target) limit. Then `revise/{k}` steps bring it within +-10 % of target_words.
Every node's inputs come from stored outputs of earlier nodes, grouped by deterministic
rules, so a re-run forms the same groups and step keys.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable

from agents.chunking import Chunk
from agents.context import JobContext
from agents.llm.tokens import SAFETY_MARGIN_TOKENS, count_message_tokens
from agents.summarize import budgets as B
from agents.summarize.nodes import (
    Candidate,
    cut_to_tokens,
    distance_to,
    fit_final_length,
    generate,
    structural_problem,
    within_tokens,
)
from agents.text import count_tokens

LABEL_TOKENS = 10  # 'Summary 12:\n"""\n...\n"""' around each merged input
JOIN_SLACK_TOKENS = 8  # a text inside a template may count a few tokens more than apart
FIT_MARGIN_TOKENS = 64  # kept free when a merge prompt is counted by the model: counts may be estimates


def _template_tokens(template: str, overlay: Any = None, **variables: Any) -> int:
    import prompts

    return count_tokens(prompts.render(template, overlay=overlay, **variables).text)


def chunk_template_tokens(overlay: Any = None) -> int:
    """Tokens of the chunk prompt without its text (under the job's prompt overlay, if any)."""
    return _template_tokens("summarize/chunk.j2", overlay, text="", index=999, total=999, bound="at most", words=9999)


def merge_template_tokens(overlay: Any = None) -> int:
    return _template_tokens("summarize/merge.j2", overlay, context="x", summaries=[], bound="at most", words=9999)


class _Stream:
    """Nodes of one level, in order, as awaitables; None marks the end."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()

    def put(self, item: Awaitable[dict[str, Any]]) -> None:
        self._queue.put_nowait(item)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def get(self) -> Awaitable[dict[str, Any]] | None:
        return await self._queue.get()


class HierarchicalSummarizer:
    def __init__(
        self,
        ctx: JobContext,
        chunks: list[Chunk],
        target_words: int,
        merge_context: bool = True,
        length_samples: int = 1,
    ):
        self.ctx = ctx
        self.chunks = [c.text for c in chunks]
        self.chunk_tokens = [c.tokens for c in chunks]
        self.chunk_template_tokens = chunk_template_tokens(ctx.prompt_overlay)
        self.target = target_words
        self.merge_context = merge_context
        self.length_samples = length_samples
        self.plan: B.HierarchicalPlan | None = None  # set by run(), from the model's token counts
        self.tokens: dict[str, Any] = {}  # the `plan/tokens` step's output
        self.nodes: dict[str, dict[str, Any]] = {}  # tree nodes by id
        self.level_groups: dict[int, int] = {}  # merges per level
        self.regrouped: list[str] = []  # merges whose group the model's count made smaller
        self.done = 0
        self.total = len(chunks)
        self._tasks: list[asyncio.Task] = []
        self._failure: asyncio.Future | None = None

    # ----- planning --------------------------------------------------------------------------

    async def _plan(self) -> None:
        """Measure the model's tokenizer (step `plan/tokens`, stored, so a resumed job plans the
        same), then plan the levels in cl100k tokens against the context as the model counts it."""
        self.tokens = await self.ctx.step("plan/tokens", self._measure_tokens)
        self.plan = B.plan_hierarchical(
            len(self.chunks),
            B.effective_context(self.tokens["context_window"], self.tokens["ratio"]),
            max(self.chunk_tokens),
            self.target,
            self.chunk_template_tokens,
            merge_template_tokens(self.ctx.prompt_overlay),
        )
        self.total = len(self.chunks) + sum(self.expected_merges())

    async def _measure_tokens(self) -> dict[str, Any]:
        llm = self.ctx.llm
        n = len(self.chunks)
        ratio = await B.measure_ratio(llm, [self.chunks[i] for i in sorted({0, n // 2, n - 1})])
        import prompts

        empty = prompts.render(
            "summarize/merge.j2", overlay=self.ctx.prompt_overlay, context="", summaries=[], bound="at most", words=9999
        ).text
        template = await count_message_tokens(llm, [{"role": "user", "content": empty}])
        return {"context_window": llm.context_window, "ratio": ratio, "merge_template": template}

    @property
    def ratio(self) -> float:
        return self.tokens["ratio"]

    def model_limit(self, level: int, final: bool = False) -> int:
        """A level's token limit in the model's tokens (the plan's is in cl100k tokens)."""
        return B.to_model(self.plan.top_tokens if final else self.plan.limit(level), self.ratio)

    def model_budget(self, level: int, final: bool = False) -> int:
        """Model tokens a merge at `level` may spend on its inputs (context and summaries)."""
        usable = B.usable_context(self.tokens["context_window"])
        return usable - B.output_cap(self.model_limit(level, final)) - self.tokens["merge_template"] - B.PROMPT_PAD

    def model_size(self, node: dict[str, Any]) -> int:
        """A summary's model tokens inside a merge prompt (its label included)."""
        return node["_model_tokens"] + B.to_model(LABEL_TOKENS, self.ratio)

    def expected_merges(self) -> list[int]:
        """Merges per level if every summary used exactly its limit (a progress estimate)."""
        counts, n, level = [], len(self.chunks), 1
        while n > 1:
            size = B.output_cap(self.model_limit(level - 1)) + B.to_model(LABEL_TOKENS, self.ratio)
            if n * size + B.PROMPT_PAD <= self.model_budget(level, final=True):
                counts.append(1)
                break
            budget = self.model_budget(level)
            context = [0] + [min(B.context_cap(budget), B.output_cap(self.model_limit(level)))] * n
            groups = B.pack_groups([size] * n, budget, context if self.merge_context else None)
            if len(groups) >= n:  # no progress: the real run raises BudgetError
                break
            counts.append(len(groups))
            n, level = len(groups), level + 1
        return counts

    # ----- running ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self._failure = asyncio.get_running_loop().create_future()
        await self._plan()
        try:
            if len(self.chunks) == 1:
                final = await self._chunk_node(0, final=True)
            else:
                level0 = _Stream()
                for i in range(len(self.chunks)):
                    level0.put(self._spawn(self._chunk_node(i)))
                level0.close()
                top = self._spawn(self._level(1, level0))
                await asyncio.wait([top, self._failure], return_when=asyncio.FIRST_COMPLETED)
                if self._failure.done():
                    raise self._failure.result()
                final = top.result()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return await self._finish(final)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.append(task)

        def report(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None and not self._failure.done():
                self._failure.set_result(t.exception())

        task.add_done_callback(report)
        return task

    async def _node_done(self, node: dict[str, Any], phase: str) -> None:
        self.nodes[node["id"]] = node
        self.done += 1
        self.total = max(self.total, self.done)
        await self.ctx.progress(self.done, self.total, phase=phase)

    async def _chunk_node(self, i: int, final: bool = False) -> dict[str, Any]:
        key = f"chunk/0/{i}"
        limit = self.plan.top_tokens if final else self.plan.limit(0)
        words = self.target if final else B.words_for(limit)
        # Template (counted with the widest numbers) and chunk: no need to count each prompt.
        prompt_tokens = B.to_model(self.chunk_template_tokens + self.chunk_tokens[i] + JOIN_SLACK_TOKENS, self.ratio)
        max_tokens = B.output_cap(B.to_model(limit, self.ratio))

        async def summarize() -> dict[str, Any]:
            def render(asked: int) -> str:
                return self.ctx.render(
                    "summarize/chunk.j2",
                    text=self.chunks[i],
                    index=i + 1,
                    total=len(self.chunks),
                    bound="about" if final else "at most",
                    words=asked,
                )

            if final:
                out = await generate(
                    self.ctx, key, render, words, max_tokens, structural_problem,
                    samples=self.length_samples, prefer=distance_to(self.target), prompt_tokens=prompt_tokens,
                )
            else:
                out = await generate(
                    self.ctx, key, render, words, max_tokens, within_tokens(limit), repair_limit=limit,
                    prompt_tokens=prompt_tokens,
                )
            return out

        out = await self.ctx.step(key, summarize)
        node = self._make_node(key, 0, out, children=[], chunk=i)
        await self._node_done(node, "chunks")
        return node

    def _make_node(self, key: str, level: int, out: dict[str, Any], children: list[str], **extra: Any) -> dict[str, Any]:
        node = {
            "id": key,
            "level": level,
            "children": children,
            "words": out["words"],
            "tokens": out["tokens"],
            "calls": out["calls"],
            "problem": out["problem"],
            **extra,
        }
        # Kept in memory for the next level and for length control; dropped from the tree.
        node["_text"], node["_samples"] = out["text"], out["samples"]
        # The model's count of the summary at the job's measured (stored) ratio: the same on a
        # resumed job whatever the client's count cache holds; the fit step counts whole prompts.
        node["_model_tokens"] = B.to_model(out["tokens"], self.ratio)
        return node

    async def _level(self, level: int, source: _Stream) -> dict[str, Any]:
        """Merge the nodes of `source` (level - 1); returns the final node of the whole tree."""
        # Budgets in the model's tokens: summaries are packed by the model's counts of them.
        budget = self.model_budget(level)
        final_budget = self.model_budget(level, final=True)
        pending: deque[dict[str, Any]] = deque()
        ended = False

        async def take() -> dict[str, Any] | None:
            nonlocal ended
            if pending:
                return pending.popleft()
            if ended:
                return None
            item = await source.get()
            if item is None:
                ended = True
                return None
            return await item

        size = self.model_size
        out = _Stream()
        next_level: asyncio.Task | None = None
        previous: dict[str, Any] | None = None
        j = 0
        inputs = 0
        while True:
            first = await take()
            if first is None:
                break
            context = ""
            if self.merge_context and previous is not None:
                context = cut_to_tokens(previous["_text"], int(B.context_cap(budget) / self.ratio))
            used = B.PROMPT_PAD + (B.to_model(count_tokens(context), self.ratio) if context else 0) + size(first)
            final_used = B.PROMPT_PAD + size(first)
            final_possible = j == 0
            group, closed = [first], False
            while True:
                nxt = await take()
                if nxt is None:
                    break
                if final_used + size(nxt) > final_budget:
                    final_possible = False
                if used + size(nxt) > budget:
                    pending.appendleft(nxt)
                    closed = True
                    break
                group.append(nxt)
                used += size(nxt)
                final_used += size(nxt)
            final = False
            if not closed and j == 0:
                if final_possible or len(group) == 1:
                    final = True
                else:
                    # Everything fits one ordinary merge but not the final one (its output is
                    # bigger): merge in two halves, and the next level makes the final merge.
                    half = len(group) // 2
                    pending.extendleft(reversed(group[half:]))
                    group = group[:half]
            # The whole prompt as the model counts it: a group that does not fit is made smaller.
            fit = await self._fit(level, j, group, context, final)
            if fit["final"]:
                return await self._final_merge(level, group)
            if fit["inputs"] < len(group):
                pending.extendleft(reversed(group[fit["inputs"]:]))
                group = group[: fit["inputs"]]
                self.regrouped.append(f"merge/{level}/{j}")
            if not fit["context"]:
                context = ""
            inputs += len(group)
            if self.merge_context:
                node = await self._merge_node(level, j, group, context, previous)
                previous = node
                out.put(_ready(node))
            else:
                out.put(self._spawn(self._merge_node(level, j, group, "", None)))
            if next_level is None:
                next_level = self._spawn(self._level(level + 1, out))
            j += 1
        out.close()
        if next_level is None:
            raise RuntimeError(f"level {level} got no input")
        if j == inputs:  # every merge took a single summary: the next level would do the same
            next_level.cancel()
            raise B.BudgetError(
                f"level {level}: no two summaries fit one merge call in the model's "
                f"{self.tokens['context_window']}-token context; use a smaller target_words"
            )
        return await next_level

    def _merge_messages(self, group: list[dict[str, Any]], context: str, final: bool, words: int) -> list[dict[str, str]]:
        import prompts

        text = prompts.render(
            "summarize/merge.j2", overlay=self.ctx.prompt_overlay, context=context,
            summaries=[n["_text"] for n in group], bound="about" if final else "at most", words=words,
        ).text
        return [{"role": "user", "content": text}]

    async def _fit(
        self, level: int, j: int, group: list[dict[str, Any]], context: str, final: bool
    ) -> dict[str, Any]:
        """How many of `group` merge/{level}/{j} takes, counted by the model (step `fit/{level}/{j}`,
        stored so that a resumed job groups the same): {"inputs", "final", "context"}. The
        whole prompt with max_tokens must fit the context window: the final merge becomes an
        ordinary one over half the group if it does not; an ordinary merge drops summaries
        from its end, then its context. BudgetError when one summary alone cannot fit."""
        window = self.tokens["context_window"]

        async def fits(members: list[dict[str, Any]], with_context: str, is_final: bool) -> tuple[bool, int, int]:
            limit = self.model_limit(level, final=is_final)
            words = self.target if is_final else B.words_for(self.plan.limit(level))
            prompt = await count_message_tokens(self.ctx.llm, self._merge_messages(members, with_context, is_final, words))
            answer = B.output_cap(limit)
            return prompt + answer + FIT_MARGIN_TOKENS <= window, prompt, answer

        async def decide() -> dict[str, Any]:
            members = group
            if final:
                if (await fits(members, "", True))[0]:
                    return {"inputs": len(members), "final": True, "context": False}
                members = members[: max(1, len(members) // 2)]
            with_context = context
            n = len(members)
            while True:
                ok, prompt, answer = await fits(members[:n], with_context, False)
                if ok:
                    return {"inputs": n, "final": False, "context": bool(with_context)}
                if n > 1:
                    n -= 1
                elif with_context:
                    with_context = ""
                else:
                    raise B.BudgetError(
                        f"merge/{level}/{j}: no grouping fits the model's {window}-token context: the summary "
                        f"{members[0]['id']} alone makes a {prompt}-token prompt, which leaves less than the "
                        f"{answer} tokens its answer needs; use a smaller target_words or a model with a "
                        f"larger context"
                    )

        return await self.ctx.step(f"fit/{level}/{j}", decide)

    async def _merge_node(
        self, level: int, j: int, group: list[dict[str, Any]], context: str, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        key = f"merge/{level}/{j}"
        limit = self.plan.limit(level)
        summaries = [n["_text"] for n in group]

        async def merge() -> dict[str, Any]:
            def render(asked: int) -> str:
                return self.ctx.render(
                    "summarize/merge.j2", context=context, summaries=summaries, bound="at most", words=asked
                )

            out = await generate(
                self.ctx, key, render, B.words_for(limit), B.output_cap(self.model_limit(level)),
                within_tokens(limit), repair_limit=limit, token_ratio=self.ratio,
            )
            return out

        out = await self.ctx.step(key, merge)
        extra = {"context": previous["id"]} if context and previous else {}
        node = self._make_node(key, level, out, children=[n["id"] for n in group], **extra)
        self.level_groups[level] = self.level_groups.get(level, 0) + 1
        await self._node_done(node, f"merge level {level}")
        return node

    async def _final_merge(self, level: int, group: list[dict[str, Any]]) -> dict[str, Any]:
        key = f"merge/{level}/0"
        limit = self.plan.top_tokens
        summaries = [n["_text"] for n in group]

        async def merge() -> dict[str, Any]:
            def render(asked: int) -> str:
                return self.ctx.render("summarize/merge.j2", context="", summaries=summaries, bound="about", words=asked)

            out = await generate(
                self.ctx, key, render, self.target, B.output_cap(self.model_limit(level, final=True)),
                structural_problem, samples=self.length_samples, prefer=distance_to(self.target),
                token_ratio=self.ratio,
            )
            return out

        out = await self.ctx.step(key, merge)
        node = self._make_node(key, level, out, children=[n["id"] for n in group], final=True)
        self.level_groups[level] = 1
        await self._node_done(node, "final merge")
        return node

    async def _finish(self, final: dict[str, Any]) -> dict[str, Any]:
        draft = Candidate(final["id"], final["_text"], final["words"], final["_samples"])

        def max_tokens_for(words: int) -> int:
            return B.output_cap(B.to_model(B.tokens_for_words(words), self.ratio))

        async def on_revision(node: dict[str, Any]) -> None:
            node["level"] = final["level"]
            await self._node_done(node, "length revision")

        chosen, report = await fit_final_length(
            self.ctx, draft, self.target, max_tokens_for, self.length_samples, on_revision
        )
        for rev in report["revisions"]:
            self.nodes[rev["id"]] = rev
        root = chosen.id
        # Nodes finish in any order; list them level by level, in step-key order.
        tree_nodes = [
            {k: v for k, v in n.items() if not k.startswith("_")}
            for n in sorted(self.nodes.values(), key=_tree_order)
        ]
        levels = []
        top_level = final["level"]
        for level in range(top_level + 1):
            limit = self.plan.top_tokens if level == top_level else self.plan.limit(level)
            count = len(self.chunks) if level == 0 else self.level_groups.get(level, 0)
            levels.append({"level": level, "nodes": count, "limit_tokens": limit, "limit_words": B.words_for(limit)})
        return {
            "summary": chosen.text,
            "word_count": chosen.words,
            "length_ok": report["length_ok"],
            "trimmed": report["trimmed"],
            "levels": levels,
            "tree": {"nodes": tree_nodes, "root": root},
            "calls": sum(n.get("calls", 0) for n in self.nodes.values()),
            "sequential_merges": sum(v for k, v in self.level_groups.items()) if self.merge_context else None,
        }


async def _ready(node: dict[str, Any]) -> dict[str, Any]:
    return node


def _tree_order(node: dict[str, Any]) -> tuple:
    kind, *numbers = node["id"].split("/")
    return (node["level"], ("chunk", "merge", "revise").index(kind), *map(int, numbers))
