"""``remote.memory``: glibc's view of the heap, which tells a leak (in use grows) from memory the
allocator keeps (the heap grows, in use does not): what the soak records (issue 23)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from remote.memory import malloc_stats

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2")


def test_a_block_held_shows_in_use_and_goes_when_freed():
    libc = ctypes.CDLL(None)  # the malloc this process uses
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = malloc_stats()
    assert before is not None and before["in_use_mib"] > 0 and before["python_blocks"] > 0
    block = libc.malloc(96 << 20)  # over any mmap threshold: a mapping of its own
    try:
        held = malloc_stats()
        assert held["in_use_mib"] - before["in_use_mib"] >= 95 and held["mmapped_mib"] - before["mmapped_mib"] >= 95
    finally:
        libc.free(block)
    after = malloc_stats()
    assert abs(after["in_use_mib"] - before["in_use_mib"]) < 8
    assert 0 <= after["top_mib"] <= after["free_mib"] <= after["heap_mib"]
