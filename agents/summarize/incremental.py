"""Incremental updating (BooookScore): a running summary updated chunk by chunk.

Steps (each checkpointed; keys are stable because every input comes from stored outputs):
- `update/0`: the first chunk summarized alone; `update/{j}`: the running summary updated
  with chunk j. Updates are inherently sequential.
- When an update is cut off or outgrows the running-summary cap (BooookScore's
  max_summary_len, here target_words / 0.65 tokens), the previous summary is compressed
  (`compress/{j}/{a}`) to max(target x j / N x (1 - 0.05 a), target / 4) words and the update
  is redone with it (`update/{j}/{a}`); at most 6 attempts. The floor is ours: the spec's
  target x j / N alone would ask for a handful of words early in a long book.
- The last update asks for about target_words; `revise/{k}` steps then bring it within
  +-10 % of the target (see nodes.fit_final_length).
The tree is the chain: each update's children are the summary it started from (the
previous update, or its compressed version) and it carries the index of the chunk it read.
"""
from __future__ import annotations

from typing import Any

import prompts
from agents.chunking import Chunk
from agents.context import JobContext
from agents.summarize import budgets as B
from agents.summarize.nodes import (
    NODE_ATTEMPTS,
    REPAIR_AFTER,
    Candidate,
    distance_to,
    fit_final_length,
    generate,
    node_output,
    repair,
    structural_problem,
    within_tokens,
)
from agents.text import count_tokens, count_words

COMPRESS_ATTEMPTS = 6
COMPRESS_SHRINK = 0.05  # each compression attempt asks 5 % x attempt less
COMPRESS_TOLERANCE = 0.2  # a compressed summary must land within +-20 % of its target
COMPRESS_FLOOR = 0.25  # ... and is never asked below this share of target_words
UPDATE_HEADROOM = 0.85  # updates ask for this share of the cap: models overshoot word limits


def update_template_tokens(overlay: prompts.Overlay | None = None) -> int:
    text = prompts.render(
        "summarize/update.j2", overlay=overlay, summary="", text="", index=999, total=999, bound="at most", words=9999
    ).text
    return count_tokens(text)


class IncrementalSummarizer:
    def __init__(self, ctx: JobContext, chunks: list[Chunk], target_words: int, length_samples: int = 1):
        self.ctx = ctx
        self.length_samples = length_samples
        self.chunks = [c.text for c in chunks]
        self.target = target_words
        self.chunk_tokens = [c.tokens for c in chunks]
        self.plan: B.IncrementalPlan | None = None  # set by run(), from the model's token counts
        self.ratio = 1.0  # the model's tokens per cl100k token (step `plan/tokens`)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.compressions = 0
        self.done = 0
        self.total = len(chunks)

    async def _progress(self, phase: str) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        await self.ctx.progress(self.done, self.total, phase=phase)

    def _add(self, node: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        node = {**node, "words": out["words"], "tokens": out["tokens"], "calls": out["calls"], "problem": out["problem"]}
        self.nodes[node["id"]] = node
        return node

    async def _update_step(self, key: str, summary: str | None, j: int) -> dict[str, Any]:
        """One update (or the first chunk's summary) as step `key`."""
        final = j == len(self.chunks) - 1
        cap = self.plan.top_tokens
        words = self.target if final else round(B.words_for(cap) * UPDATE_HEADROOM)
        bound = "about" if final else "at most"

        async def update() -> dict[str, Any]:
            def render(asked: int) -> str:
                common = dict(text=self.chunks[j], index=j + 1, total=len(self.chunks), bound=bound, words=asked)
                if summary is None:
                    return self.ctx.render("summarize/chunk.j2", **common)
                return self.ctx.render("summarize/update.j2", summary=summary, **common)

            # The final update's length is fixed afterwards by revisions; others must fit the cap.
            check = structural_problem if final else within_tokens(cap)
            # Only the first summary retries on its own: a bad update is repaired by compressing
            # the summary it started from (BooookScore), below.
            attempts = NODE_ATTEMPTS if summary is None else 1
            if final:
                return await generate(
                    self.ctx, key, render, words, self._max_tokens(cap), check, attempts=attempts,
                    samples=self.length_samples, prefer=distance_to(self.target), token_ratio=self.ratio,
                )
            # The first summary may be cut to the cap after two failed tries; an update may not:
            # its end holds the new part, and compressing the old summary is the remedy.
            repair_limit = cap if summary is None and not final else None
            return await generate(
                self.ctx, key, render, words, self._max_tokens(cap), check, attempts=attempts,
                repair_limit=repair_limit, token_ratio=self.ratio,
            )

        out = await self.ctx.step(key, update)
        self.calls += out["calls"]
        return out

    async def _compress_step(self, key: str, summary: str, words: int) -> dict[str, Any]:
        cap = self.plan.top_tokens

        def check(text: str, result) -> str | None:
            problem = within_tokens(cap)(text, result)
            if problem is None:
                got = count_words(text)
                if abs(got - words) > COMPRESS_TOLERANCE * words:
                    problem = f"{got} words, not within 20% of {words}"
            return problem

        async def compress() -> dict[str, Any]:
            def render(asked: int) -> str:
                return self.ctx.render(
                    "summarize/compress.j2", summary=summary, current_words=count_words(summary), words=asked
                )

            out = await generate(
                self.ctx, key, render, words, self._max_tokens(cap), check, attempts=1, token_ratio=self.ratio
            )
            return {**out, "asked": words}

        out = await self.ctx.step(key, compress)
        self.calls += out["calls"]
        return out

    async def _plan(self) -> None:
        """Measure the model's tokenizer (step `plan/tokens`, stored so a resumed job plans the
        same) and plan in cl100k tokens against the context as the model counts it."""

        async def measure() -> dict[str, Any]:
            n = len(self.chunks)
            ratio = await B.measure_ratio(self.ctx.llm, [self.chunks[i] for i in sorted({0, n // 2, n - 1})])
            return {"context_window": self.ctx.llm.context_window, "ratio": ratio}

        tokens = await self.ctx.step("plan/tokens", measure)
        self.ratio = tokens["ratio"]
        self.plan = B.plan_incremental(
            B.effective_context(tokens["context_window"], self.ratio), max(self.chunk_tokens), self.target,
            update_template_tokens(self.ctx.prompt_overlay),
        )

    def _max_tokens(self, limit: int) -> int:
        """max_tokens for an answer within `limit` cl100k tokens, in the model's tokens."""
        return B.output_cap(B.to_model(limit, self.ratio))

    async def run(self) -> dict[str, Any]:
        await self._plan()
        n = len(self.chunks)
        previous: dict[str, Any] | None = None  # tree node of the running summary
        previous_text: str | None = None
        for j in range(n):
            key = f"update/{j}"
            out = await self._update_step(key, previous_text, j)
            children = [previous["id"]] if previous else []
            if out["problem"] is not None and previous is not None:
                node, out = await self._repair(j, previous, previous_text or "")
            else:
                node = self._add({"id": key, "kind": "update", "chunk": j, "children": children}, out)
            previous, previous_text, final_samples = node, out["text"], out["samples"]
            await self._progress("updates")

        draft = Candidate(previous["id"], previous_text or "", previous["words"], final_samples)

        def max_tokens_for(words: int) -> int:
            return self._max_tokens(B.tokens_for_words(words))

        async def on_revision(node: dict[str, Any]) -> None:
            self.nodes[node["id"]] = node
            self.calls += node["calls"]
            await self._progress("length revision")

        chosen, report = await fit_final_length(
            self.ctx, draft, self.target, max_tokens_for, self.length_samples, on_revision
        )
        tree_nodes = [{**n, "level": None} for n in self.nodes.values()]
        return {
            "summary": chosen.text,
            "word_count": chosen.words,
            "length_ok": report["length_ok"],
            "trimmed": report["trimmed"],
            "levels": [],
            "tree": {"nodes": tree_nodes, "root": chosen.id},
            "calls": self.calls,
            "updates": n,
            "compressions": self.compressions,
        }

    async def _repair(self, j: int, previous: dict[str, Any], previous_text: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Compress the previous summary and redo update j; pick the best attempt.

        As in BooookScore, up to 6 attempts, stopping at the first where both the compressed
        summary and the redone update are valid. Ours: from the second attempt on, a redone
        update that is only too long (or cut off) is cut to its finished sentences within the
        cap when enough is left (nodes.repair), since a model that never stops by itself
        would otherwise spend all six attempts on every chunk."""
        n = len(self.chunks)
        final = j == n - 1
        floor = max(1, round(self.target * COMPRESS_FLOOR))
        repair_limit = B.output_cap(self.plan.top_tokens) if final else self.plan.top_tokens
        attempts: list[tuple[dict[str, Any], dict[str, Any], int]] = []
        for a in range(COMPRESS_ATTEMPTS):
            words = max(floor, int(self.target * j / n * (1 - COMPRESS_SHRINK * a)))
            compressed = await self._compress_step(f"compress/{j}/{a}", previous_text, words)
            updated = await self._update_step(f"update/{j}/{a}", compressed["text"], j)
            if updated["problem"] is not None and a + 1 >= REPAIR_AFTER:
                cut = repair(updated["text"], repair_limit, updated["asked"])
                if cut is not None:
                    updated = {**node_output(cut, updated["calls"], updated["attempts"], None),
                               "asked": updated["asked"], "samples": updated["samples"], "repaired": True}
            attempts.append((compressed, updated, a))
            if updated["problem"] is None and (compressed["problem"] is None or updated.get("repaired")):
                break
        valid = [x for x in attempts if x[1]["problem"] is None]
        compressed, updated, a = min(
            valid or attempts, key=lambda x: abs(x[0]["words"] - x[0]["asked"]) / max(1, x[0]["asked"])
        )
        self.compressions += 1
        ckey = f"compress/{j}/{a}"
        self._add({"id": ckey, "kind": "compress", "children": [previous["id"]]}, compressed)
        node = self._add({"id": f"update/{j}/{a}", "kind": "update", "chunk": j, "children": [ckey]}, updated)
        return node, updated
