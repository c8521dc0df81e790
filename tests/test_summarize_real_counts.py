"""Summaries planned with the model's own token counts (a tokenizer less efficient than cl100k)."""
from __future__ import annotations

import pytest

from agents import summarize
from agents.summarize import budgets as B
from agents.summarize.hierarchical import HierarchicalSummarizer
from tests.test_summarize import book, make_ctx, pool_for  # noqa: F401  (the book fixture)

# An unseen server: 8,192-token context, about 1.9 tokens per English word of its own output
# (the fake writes about 1.15 cl100k tokens per word; 1.65 x 1.15 = 1.9).
SCALED = dict(max_model_len=8192, token_scale=1.65)


@pytest.mark.parametrize(
    "method,protocol", [("hierarchical", "controlled"), ("incremental", "controlled"), ("hierarchical", "paper")]
)
async def test_book_summarizes_on_a_server_that_counts_more_tokens(fake_llm, book, method, protocol):  # noqa: F811
    fake_llm.update(**SCALED)
    pool = pool_for(fake_llm)
    try:
        params = {"document_id": "pp", "method": method, "strip_gutenberg": True, "protocol": protocol}
        result = await summarize.run(make_ctx(pool, book), params)
        assert result["summary"] and result["context_window"] == 8192
        stats = fake_llm.stats()
        assert stats["generation_requests"] >= result["chunks"]
        # No request was refused: every prompt and its max_tokens fit the context.
        assert not [r for r in fake_llm.requests() if r.get("status") != 200]
        differs = result["protocol"].get("differs_from_paper", [])
        if method == "hierarchical":
            levels = result["levels"]
            assert levels[0]["nodes"] == result["chunks"] and levels[-1]["nodes"] == 1 and len(levels) >= 3
        if protocol == "paper":
            assert any("so that each prompt fits" in d for d in differs)
    finally:
        await pool.aclose()


class _Counting:
    """A client whose tokenizer counts twice cl100k; no generation."""

    model_name, context_window = "tiny", 1024

    async def count_tokens(self, text: str) -> int:
        from agents.text import count_tokens

        return 2 * count_tokens(text)


async def test_a_summary_too_large_alone_fails_with_the_reason():
    ctx = make_ctx(_Counting(), "")
    summarizer = HierarchicalSummarizer.__new__(HierarchicalSummarizer)
    summarizer.ctx, summarizer.target = ctx, 100
    summarizer.tokens = {"context_window": 1024, "ratio": 2.0, "merge_template": 200}
    summarizer.plan = B.HierarchicalPlan(870, 300, 100, B.tokens_for_words(100), [100, 154], 200)
    big = {"id": "chunk/0/0", "_text": "Elizabeth walked to the house and spoke. " * 60}
    with pytest.raises(B.BudgetError, match="no grouping fits.*chunk/0/0 alone"):
        await summarizer._fit(1, 0, [big, dict(big, id="chunk/0/1")], "", final=False)
