"""The arena allocator: best fit, coalescing, and its tiling invariant under random use."""
from __future__ import annotations

import random

import pytest

from ember.object_store.allocator import Allocator


def check_invariants(alloc: Allocator) -> None:
    """Free and allocated blocks tile the arena; free blocks never touch; sizes add up."""
    free = alloc.free_ranges()
    used = alloc.allocated_ranges()
    blocks = sorted([(o, s, "free") for o, s in free] + [(o, s, "used") for o, s in used])
    position = 0
    for offset, size, _ in blocks:
        assert offset == position, f"gap or overlap at {position}: next block at {offset}"
        assert size > 0 and size % alloc.alignment == 0 and offset % alloc.alignment == 0
        position += size
    assert position == alloc.capacity
    for (a, sa, ka), (b, _, kb) in zip(blocks, blocks[1:]):
        assert not (ka == kb == "free"), f"adjacent free blocks at {a} and {b}"
    assert alloc.used == sum(s for _, s in used)
    assert alloc.largest_free() == max((s for _, s in free), default=0)


def test_allocate_rounds_up_to_alignment_and_packs_from_zero():
    alloc = Allocator(1024, alignment=64)
    assert alloc.allocate(1) == 0
    assert alloc.allocate(64) == 64
    assert alloc.allocate(65) == 128
    assert alloc.used == 64 + 64 + 128
    check_invariants(alloc)


def test_zero_size_gets_its_own_block():
    alloc = Allocator(1024)
    a, b = alloc.allocate(0), alloc.allocate(0)
    assert a != b
    assert alloc.size_of(a) == alloc.alignment


def test_capacity_is_rounded_down_and_must_hold_one_block():
    assert Allocator(1000, alignment=64).capacity == 960
    with pytest.raises(ValueError, match="at least the alignment"):
        Allocator(10, alignment=64)
    with pytest.raises(ValueError, match="power of two"):
        Allocator(1024, alignment=48)


def test_full_arena_returns_none():
    alloc = Allocator(256)
    assert alloc.allocate(256) == 0
    assert alloc.allocate(1) is None
    assert alloc.largest_free() == 0


def test_negative_size_and_bad_free_raise():
    alloc = Allocator(256)
    with pytest.raises(ValueError, match="negative"):
        alloc.allocate(-1)
    with pytest.raises(ValueError, match="no block is allocated at offset 64"):
        alloc.free(64)


def test_free_coalesces_with_both_neighbours():
    alloc = Allocator(64 * 4)
    a, b, c, d = (alloc.allocate(64) for _ in range(4))
    alloc.free(a)
    alloc.free(c)
    assert alloc.free_ranges() == [(0, 64), (128, 64)]
    alloc.free(b)  # joins a and c
    assert alloc.free_ranges() == [(0, 192)]
    alloc.free(d)
    assert alloc.free_ranges() == [(0, 256)]
    assert alloc.used == 0


def test_best_fit_prefers_the_smallest_block_then_the_lowest_offset():
    alloc = Allocator(64 * 16)
    blocks = [alloc.allocate(64 * n) for n in (3, 1, 2, 1, 2, 1)]
    for i in (0, 2, 4):  # holes of 3, 2 and 2 units
        alloc.free(blocks[i])
    assert alloc.allocate(64 * 2) == blocks[2]  # the lower of the two 2-unit holes
    assert alloc.allocate(64 * 2) == blocks[4]
    assert alloc.allocate(64) == blocks[0]      # only the 3-unit hole is left
    check_invariants(alloc)


def test_freed_block_is_reused_for_same_size():
    """Repeated put/free of one size lands on the same (already faulted-in) pages."""
    alloc = Allocator(1 << 20)
    first = alloc.allocate(300_000)
    alloc.allocate(1000)
    for _ in range(5):
        alloc.free(first)
        assert alloc.allocate(300_000) == first


def test_is_free():
    alloc = Allocator(64 * 4)
    a = alloc.allocate(64)
    assert not alloc.is_free(a, 64)
    assert alloc.is_free(64, 192)
    assert not alloc.is_free(64, 256)


@pytest.mark.parametrize("seed", range(12))
def test_random_allocate_free_keeps_invariants(seed):
    rng = random.Random(seed)
    alignment = rng.choice([8, 64, 4096])
    alloc = Allocator(alignment * rng.randint(50, 400), alignment=alignment)
    live: dict[int, int] = {}
    for _ in range(1500):
        if live and rng.random() < 0.45:
            offset = rng.choice(list(live))
            alloc.free(offset)
            del live[offset]
        else:
            size = rng.choice([0, 1, alignment - 1, alignment, alignment + 1,
                               rng.randint(1, alignment * 30)])
            fits = alloc.largest_free() >= alloc.block_size(size)
            before_free = alloc.free_ranges()
            offset = alloc.allocate(size)
            assert (offset is not None) == fits
            if offset is not None:
                need = alloc.block_size(size)
                # Best fit: no free block that fits was smaller than the chosen one.
                chosen = next(s for o, s in before_free if o == offset)
                assert chosen == min(s for _, s in before_free if s >= need)
                assert alloc.size_of(offset) == need
                for other, other_size in live.items():
                    assert offset + need <= other or other + other_size <= offset
                live[offset] = need
        check_invariants(alloc)
    for offset in list(live):
        alloc.free(offset)
    assert alloc.free_ranges() == [(0, alloc.capacity)]
    assert alloc.used == 0


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_trim_candidates_are_old_dirty_large_blocks():
    clock = FakeClock()
    alloc = Allocator(64 * 100, clock=clock)
    assert alloc.trim_candidates(10, 64) == []  # never used: clean
    a = alloc.allocate(64 * 50)
    alloc.allocate(64)
    alloc.free(a)
    assert alloc.trim_candidates(10, 64) == []  # dirty but too recent
    clock.now += 11
    assert alloc.trim_candidates(10, 64) == [(0, 64 * 50)]
    assert alloc.trim_candidates(10, 64 * 51) == []  # too small
    alloc.mark_clean(0, 64 * 50)
    assert alloc.trim_candidates(10, 64) == []
    # A split keeps the remainder clean; a merge makes a fresh dirty block.
    b = alloc.allocate(64 * 10)  # best fit: from the 49-unit tail, not the 50-unit hole
    assert b == 64 * 51
    assert alloc.trim_candidates(0, 64) == []
    alloc.free(b)
    assert alloc.trim_candidates(0, 64) == [(b, 64 * 49)]


def test_mark_clean_ignores_a_block_that_changed():
    clock = FakeClock()
    alloc = Allocator(64 * 10, clock=clock)
    a = alloc.allocate(64 * 4)
    alloc.allocate(64)
    alloc.free(a)
    alloc.allocate(64)  # splits the free block: (64, 192) remains
    alloc.mark_clean(0, 64 * 4)
    clock.now += 1
    assert alloc.trim_candidates(0, 64) == [(64, 192)]
