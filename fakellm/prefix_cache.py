"""vLLM-style automatic prefix cache: chained hashes of full token blocks in an LRU.

A block's hash covers its tokens and the hash of the block before it, so a hit on block k
means the whole prefix up to k matched. Hits are counted in tokens, like vLLM's
vllm:prefix_cache_hits_total.
"""
from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    def __init__(self, block_size: int = 16, capacity_blocks: int = 500_000):
        self.block_size = block_size
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.queries = 0  # prompt tokens looked up
        self.hits = 0  # prompt tokens found

    def __len__(self) -> int:
        return len(self._blocks)

    def _hashes(self, tokens: list[int]) -> list[int]:
        bs = self.block_size
        out, prev = [], 0
        for start in range(0, len(tokens) - bs + 1, bs):
            prev = hash((prev, tuple(tokens[start:start + bs])))
            out.append(prev)
        return out

    def lookup_and_insert(self, tokens: list[int]) -> int:
        """Cached tokens of this prompt; then its blocks become (most recently used) cached."""
        hashes = self._hashes(tokens)
        hit_blocks = 0
        for h in hashes:
            if h not in self._blocks:
                break
            hit_blocks += 1
        # Like vLLM, the last prompt token is always computed (its logits are needed).
        max_hit_blocks = max(0, (len(tokens) - 1) // self.block_size)
        cached = min(hit_blocks, max_hit_blocks) * self.block_size
        for h in hashes:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)
        self.queries += len(tokens)
        self.hits += cached
        return cached

    def clear(self) -> None:
        self._blocks.clear()
        self.queries = self.hits = 0
