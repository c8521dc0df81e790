"""Token and word budgets of book summarization (BooookScore's rules, adapted to a word target).

All budgets are in cl100k_base tokens (agents.text.count_tokens, BooookScore's tokenizer).
The served model's tokenizer may count more tokens for the same text (SmolLM2's does for
English), so only `1 - SAFETY_MARGIN` of the context window is planned with, and output
caps get `OUTPUT_SLACK` above each limit. A model whose tokenizer is much less efficient
than cl100k on the book's language needs a bigger margin (a smaller chunk_size).

From the spec:
- words = tokens x 0.65 (`WORD_RATIO`);
- levels are estimated with fit = (context - template - 20) // chunk_limit, n = ceil(n / fit)
  until n = 1, where chunk_limit is the chunk size at the first level and 450 afterwards;
- the top level's limit is the final summary's; each level below gets 0.65 x the one above;
- a merge call has `context - limit - template - 20` tokens for its inputs; the previous
  merged summary of the same level (context) takes at most 20 % of that;
- the final merge (all remaining inputs fit at once) gets the top limit.
Here the top limit comes from the user's `target_words`: ceil(target_words / 0.65) tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

WORD_RATIO = 0.65  # words per token (BooookScore)
LEVEL_RATIO = 0.65  # each level's limit relative to the level above
SAFETY_MARGIN = 0.15  # share of the context window kept free for tokenizer differences
OUTPUT_SLACK = 1.2  # max_tokens = limit x this: room for the other tokenizer and a long answer
PROMPT_PAD = 20  # BooookScore's fixed allowance for message framing
CONTEXT_SHARE = 0.2  # the previous merged summary may use this share of a merge's input budget
LATER_CHUNK_LIMIT = 450  # BooookScore's assumed summary size above the first level
FINAL_TOLERANCE = 0.10  # the final summary lands within +-10 % of target_words


class BudgetError(ValueError):
    """The requested sizes do not fit the model's context window. `chunk_size_hint`: the
    largest chunk size that would fit, when a smaller chunk size is the remedy."""

    def __init__(self, message: str, chunk_size_hint: int | None = None):
        super().__init__(message)
        self.chunk_size_hint = chunk_size_hint


def words_for(tokens: int) -> int:
    return max(1, round(tokens * WORD_RATIO))


def tokens_for_words(words: int) -> int:
    return math.ceil(words / WORD_RATIO)


def output_cap(limit_tokens: int) -> int:
    """max_tokens for a call whose answer should stay within `limit_tokens`."""
    return math.ceil(limit_tokens * OUTPUT_SLACK)


def usable_context(context_window: int) -> int:
    return int(context_window * (1 - SAFETY_MARGIN))


def estimate_levels(n_chunks: int, usable: int, chunk_size: int, template_tokens: int) -> int:
    """How many summary levels (level 0 included) merging `n_chunks` chunk summaries takes."""
    # Each round of the loop is one level of summaries (the first round sizes inputs by the
    # chunk size, as the reference does); one chunk means one level: its summary is final.
    levels, n, chunk_limit = 0, n_chunks, chunk_size
    room = usable - template_tokens - PROMPT_PAD
    while n > 1:
        fit = max(2, room // chunk_limit)  # a merge takes at least two summaries
        n = math.ceil(n / fit)
        chunk_limit = LATER_CHUNK_LIMIT
        levels += 1
    return max(1, levels)


def level_limits(top_tokens: int, n_levels: int) -> list[int]:
    """Token limit per level, level 0 first: top x 0.65^(distance from the top)."""
    return [max(1, round(top_tokens * LEVEL_RATIO ** (n_levels - 1 - k))) for k in range(n_levels)]


def input_budget(usable: int, limit_tokens: int, template_tokens: int) -> int:
    """Tokens a merge call may spend on its inputs (context and summaries)."""
    return usable - output_cap(limit_tokens) - template_tokens - PROMPT_PAD


def context_cap(budget: int) -> int:
    return int(budget * CONTEXT_SHARE)


def within_target(words: int, target_words: int) -> bool:
    return abs(words - target_words) <= FINAL_TOLERANCE * target_words


def pack_groups(sizes: list[int], budget: int, context_sizes: list[int] | None = None) -> list[list[int]]:
    """Greedy packing of consecutive inputs (token sizes) into groups of at most `budget`
    tokens, the j-th group also carrying `context_sizes[j]` tokens of context. A group
    always takes at least one input, so an input bigger than the budget gets a group alone.
    Returns the groups as lists of input indices. (The live merge loop packs the same way,
    one group at a time, because the context of group j is the output of group j-1.)"""
    groups: list[list[int]] = []
    i = 0
    while i < len(sizes):
        context = context_sizes[len(groups)] if context_sizes and len(groups) < len(context_sizes) else 0
        used = context + PROMPT_PAD
        group: list[int] = []
        while i < len(sizes) and (not group or used + sizes[i] <= budget):
            used += sizes[i]
            group.append(i)
            i += 1
        groups.append(group)
    return groups


@dataclass(frozen=True)
class HierarchicalPlan:
    """Per-level limits for one book; `limits[k]` is the token limit of level-k summaries."""

    usable: int
    chunk_size: int
    target_words: int
    top_tokens: int
    limits: list[int]
    merge_template_tokens: int

    @property
    def n_levels(self) -> int:
        return len(self.limits)

    def limit(self, level: int) -> int:
        # A book may need more levels than estimated: levels past the estimate get the top
        # limit (their inputs are already small, so the merges still make progress).
        return self.limits[min(level, len(self.limits) - 1)]

    def merge_budget(self, level: int) -> int:
        return input_budget(self.usable, self.limit(level), self.merge_template_tokens)

    def final_budget(self) -> int:
        return input_budget(self.usable, self.top_tokens, self.merge_template_tokens)


def plan_hierarchical(
    n_chunks: int,
    context_window: int,
    chunk_size: int,
    target_words: int,
    chunk_template_tokens: int,
    merge_template_tokens: int,
) -> HierarchicalPlan:
    """Levels and limits for a book, or BudgetError when the sizes cannot work."""
    usable = usable_context(context_window)
    top = tokens_for_words(target_words)
    n_levels = estimate_levels(n_chunks, usable, chunk_size, merge_template_tokens)
    limits = level_limits(top, n_levels)
    # Level 0 reads a whole chunk (the only level when the book is one chunk: then it is final).
    chunk_need = chunk_template_tokens + chunk_size + output_cap(limits[0]) + PROMPT_PAD
    if chunk_need > usable:
        most = usable - chunk_template_tokens - output_cap(limits[0]) - PROMPT_PAD
        raise BudgetError(
            f"chunk_size {chunk_size} does not fit the model context of {context_window} tokens "
            f"with the prompt and a {limits[0]}-token summary (planning with {usable} tokens, "
            f"a {int(SAFETY_MARGIN * 100)}% margin): use chunk_size <= {max(most, 0)}"
        )
    plan = HierarchicalPlan(usable, chunk_size, target_words, top, limits, merge_template_tokens)
    # Every merge must take at least two summaries of the level below, next to its context;
    # the final merge must take at least two summaries of the level under the top.
    for level in range(1, n_levels):
        budget = plan.merge_budget(level)
        need = 2 * output_cap(plan.limit(level - 1)) + context_cap(budget) + PROMPT_PAD
        if need > budget:
            raise BudgetError(
                f"target_words {target_words} is too large for a context of {context_window} tokens: "
                f"a level-{level} merge cannot hold two summaries of the level below"
            )
    if n_levels > 1 and 2 * output_cap(plan.limit(n_levels - 2)) + PROMPT_PAD > plan.final_budget():
        raise BudgetError(
            f"target_words {target_words} is too large for a context of {context_window} tokens: "
            "the final merge cannot hold two summaries next to its output"
        )
    return plan


@dataclass(frozen=True)
class IncrementalPlan:
    usable: int
    chunk_size: int
    target_words: int
    top_tokens: int  # the running summary's token cap (BooookScore's max_summary_len)


def plan_incremental(
    context_window: int, chunk_size: int, target_words: int, update_template_tokens: int
) -> IncrementalPlan:
    """An update call holds the running summary, one chunk and the updated summary."""
    usable = usable_context(context_window)
    top = tokens_for_words(target_words)
    need = update_template_tokens + chunk_size + 2 * output_cap(top) + PROMPT_PAD
    if need > usable:
        most = usable - update_template_tokens - 2 * output_cap(top) - PROMPT_PAD
        raise BudgetError(
            f"chunk_size {chunk_size} and target_words {target_words} do not fit the model context "
            f"({context_window} cl100k tokens as the model counts them) for incremental updating (the "
            f"running summary, the chunk and the updated summary share it; planning with {usable} tokens, a "
            f"{int(SAFETY_MARGIN * 100)}% margin): use chunk_size <= {max(most, 0)} or a smaller target",
            chunk_size_hint=max(most, 0),
        )
    return IncrementalPlan(usable, chunk_size, target_words, top)


# ----- the model's own token counts ------------------------------------------------------------

RATIO_STEP = 0.05  # the measured ratio is rounded up to this grid ...
RATIO_TOLERANCE = 0.01  # ... after this much is forgiven (a client's count may be an estimate + slack)


async def measure_ratio(client, samples: list[str]) -> float:
    """The model's tokens per cl100k token, counted with the client's `count_tokens` (the
    server's /tokenize or the embedded tokenizer) on the samples joined, rounded up to a 0.05
    grid (the same value whether the client counted exactly or estimated with a few tokens of
    slack; jobs store it, so a resumed job plans with the same one)."""
    from agents.text import count_tokens

    text = "\n\n".join(samples)
    local = count_tokens(text)
    if not local:
        return 1.0
    ratio = await client.count_tokens(text) / local
    return max(RATIO_STEP, math.ceil(round((ratio - RATIO_TOLERANCE) / RATIO_STEP, 6)) * RATIO_STEP)


def to_model(cl100k_tokens: int, ratio: float) -> int:
    """cl100k tokens as the model's tokenizer counts them (at the measured ratio)."""
    return math.ceil(cl100k_tokens * ratio)


def effective_context(context_window: int, ratio: float) -> int:
    """The model's context window in cl100k tokens: what the cl100k plan may use. A tokenizer
    at least as efficient as cl100k (ratio <= 1) leaves the window as it is."""
    return int(context_window / max(1.0, ratio))
