"""A model of PyTorch's CUDA caching allocator, replayed over a trace of tensor allocations and frees.

What it models (c10/cuda/CUDACachingAllocator.cpp, default settings): requests rounded up to 512 B; requests
up to 1 MiB come from a small pool of 2 MiB segments, larger ones from a large pool; a new large segment is
20 MiB for requests under 10 MiB and the request rounded up to 2 MiB otherwise; best-fit search of cached free
blocks (smallest block that fits, then lowest address); a block is split when the rest is >= 512 B (small pool)
or > 1 MiB (large pool); freed blocks merge with free neighbours in their segment; segments are never returned
(no ``empty_cache``, no out-of-memory retry: the device is assumed large enough). What it does not model:
expandable segments, ``max_split_size_mb`` and other ``PYTORCH_CUDA_ALLOC_CONF`` settings, per-stream pools.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_REQUEST = 1 << 20
SMALL_SEGMENT = 2 << 20
LARGE_SEGMENT = 20 << 20
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


def round_size(size: int) -> int:
    """Bytes the allocator hands out for a request of ``size`` bytes (multiples of 512)."""
    return max(MIN_BLOCK, -(-size // MIN_BLOCK) * MIN_BLOCK)


def segment_size(size: int) -> int:
    """Bytes of the new segment reserved when no cached block fits a rounded request of ``size`` bytes."""
    if size <= SMALL_REQUEST:
        return SMALL_SEGMENT
    if size < MIN_LARGE_ALLOC:
        return LARGE_SEGMENT
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass(eq=False)
class _Block:
    segment: int
    offset: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


@dataclass
class CachingAllocatorModel:
    """Replays ``malloc``/``free`` and keeps the allocated and reserved bytes and their peaks."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    _pools: dict[bool, list[tuple[int, int, int]]] = field(default_factory=lambda: {True: [], False: []})
    _blocks: dict[tuple[int, int, int], _Block] = field(default_factory=dict)
    _segments: int = 0

    def malloc(self, size: int) -> _Block:
        """Allocate ``size`` bytes; returns the block (pass it to :meth:`free`)."""
        size = round_size(size)
        small = size <= SMALL_REQUEST
        pool = self._pools[small]
        index = bisect.bisect_left(pool, (size, -1, -1))
        if index < len(pool):
            block = self._blocks.pop(pool.pop(index))
        else:
            block = _Block(self._segments, 0, segment_size(size), small)
            self._segments += 1
            self.reserved += block.size
        rest = block.size - size
        if rest >= MIN_BLOCK if small else rest > SMALL_REQUEST:
            tail = _Block(block.segment, block.offset + size, rest, small, True, block, block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next, block.size = tail, size
            self._insert(tail)
        block.free = False
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return block

    def free(self, block: _Block) -> None:
        """Return a block to its pool, merging it with free neighbours."""
        self.allocated -= block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._insert(block)

    def _insert(self, block: _Block) -> None:
        bisect.insort(self._pools[block.small], block.key())
        self._blocks[block.key()] = block

    def _remove(self, block: _Block) -> None:
        pool = self._pools[block.small]
        del pool[bisect.bisect_left(pool, block.key())]
        del self._blocks[block.key()]
