"""KV blocks of prompt prefixes seen before (system prompts, tools, earlier turns), reused by later requests.

A prompt is cut into blocks of `block` tokens; a block is keyed by its parent block's id and its own tokens, so a
key names the whole prefix exactly (no hash collisions) and a block is found only after all blocks before it.
Only full blocks are kept: of prompts, as the prefill computed them, and of finished sequences' prompts and answers
(the next turn of a conversation starts with both). The store is bounded by a byte budget and
evicts the least recently used block first; a lookup refreshes a prefix's blocks from the last to the first, so
a parent always outlives its children. The engine thread alone uses it (no locking).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(eq=False)
class Block:
    id: int
    kv: torch.Tensor  # [layers, 2 (k, v), kv_heads, block, head_dim]


class PrefixCache:
    def __init__(self, budget_bytes: int, block: int = 32) -> None:
        self.budget = budget_bytes
        self.block = block
        self.used = 0
        self._blocks: collections.OrderedDict[tuple[int, tuple[int, ...]], Block] = collections.OrderedDict()
        self._next_id = 1
        self.hits = self.lookups = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def _keys(self, tokens: list[int], limit: int):
        parent = 0
        for start in range(0, limit - self.block + 1, self.block):
            key = (parent, tuple(tokens[start : start + self.block]))
            yield start, key
            found = self._blocks.get(key)
            if found is None:
                return
            parent = found.id

    def lookup(self, tokens: list[int], limit: int) -> list[Block]:
        """The cached blocks that start `tokens`, covering at most `limit` tokens."""
        found = []
        for _, key in self._keys(tokens, limit):
            block = self._blocks.get(key)
            if block is None:
                break
            found.append(block)
        for block_key in reversed([k for _, k in self._keys(tokens, len(found) * self.block)]):
            self._blocks.move_to_end(block_key)
        self.lookups += 1
        self.hits += bool(found)
        return found

    def insert(self, tokens: list[int], limit: int, read: Callable[[int, int], torch.Tensor]) -> int:
        """Keep the full blocks of `tokens[:limit]` not kept yet; `read(start, end)` copies their KV out. Returns
        how many blocks were added."""
        added = 0
        for start, key in self._keys(tokens, limit):
            if key in self._blocks:
                self._blocks.move_to_end(key)
                continue
            kv = read(start, start + self.block)
            size = kv.numel() * kv.element_size()
            if size > self.budget:
                return added
            while self.used + size > self.budget:
                _, evicted = self._blocks.popitem(last=False)
                self.used -= evicted.kv.numel() * evicted.kv.element_size()
            self._blocks[key] = Block(self._next_id, kv)
            self._next_id += 1
            self.used += size
            added += 1
        return added
