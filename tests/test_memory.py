"""``remote.memory``: glibc's view of the heap, which tells a leak (in use grows) from memory the
allocator keeps (the heap grows, in use does not): what the soak records (issue 23)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from remote.memory import JEMALLOC, JEMALLOC_CONF, TRIED, jemalloc_env, jemalloc_option, malloc_stats

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2")


def test_a_large_block_is_a_mapping_of_its_own_and_goes_when_freed():
    libc = ctypes.CDLL(None)  # the malloc this process uses
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = malloc_stats()
    assert before is not None and before["in_use_mib"] > 0 and before["python_blocks"] > 0
    block = libc.malloc(96 << 20)  # over any mmap threshold: a mapping of its own
    try:
        held = malloc_stats()
        assert held["mmapped_mib"] - before["mmapped_mib"] >= 95  # a mapping of its own
    finally:
        libc.free(block)
    after = malloc_stats()
    assert abs(after["mmapped_mib"] - before["mmapped_mib"]) < 8
    assert 0 <= after["free_mib"] <= after["heap_mib"]
    if after["allocator"] == "glibc":  # the releasable top is part of the free space
        assert after["top_mib"] <= after["free_mib"]


def test_small_blocks_held_show_in_use_in_the_heap():
    """What a leak of small objects looks like: in use grows with the heap, by what is held."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = malloc_stats()
    blocks = [libc.malloc(1024) for _ in range(32_000)]  # 31 MiB in 1 KiB blocks: heap, not mappings
    try:
        held = malloc_stats()
        assert held["in_use_mib"] - before["in_use_mib"] >= 30 and held["heap_mib"] >= held["in_use_mib"]
    finally:
        for b in blocks:
            libc.free(b)
    assert malloc_stats()["in_use_mib"] - before["in_use_mib"] < 8
    if before["allocator"] == "glibc":
        assert jemalloc_option("dirty_decay_ms") is None  # no jemalloc, no options to read


PROBE = """
import ctypes, json
from remote.memory import allocator, describe_allocator, jemalloc_env, jemalloc_option, malloc_stats
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
before = malloc_stats()
blocks = [libc.malloc(1024) for _ in range(32_000)]
print(json.dumps({"allocator": allocator(), "before": before, "held": malloc_stats(),
                  "again": jemalloc_env({"PATH": "x"}),
                  "decay": jemalloc_option("dirty_decay_ms"), "background": jemalloc_option("background_thread"),
                  "oversize": jemalloc_option("oversize_threshold"), "arenas": jemalloc_option("narenas"),
                  "banner": describe_allocator()}))
"""


KEPT = """
import ctypes, json, threading
from remote.memory import release_freed
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
SIZES = [1 << 20] * 48 + [96 << 20]  # 1 MiB blocks, one oversized
def turn(hold=None):
    blocks = [libc.malloc(n) for n in SIZES]
    for b, n in zip(blocks, SIZES):
        ctypes.memset(b, 1, n)  # touched: resident
    if hold is not None:
        hold.append(rss())
    for b in blocks:
        libc.free(b)
before, held = rss(), []
turn(held)
freed = rss()
# two more threads, alive together as the server's are, take turns: they reuse the same pages
go = [threading.Semaphore(0), threading.Semaphore(0)]
done, finish = threading.Semaphore(0), threading.Event()
def worker(i):
    go[i].acquire(); turn(); done.release(); finish.wait()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
for t in ts:
    t.start()
for g in go:
    g.release(); done.acquire()
threads = rss()
finish.set()
for t in ts:
    t.join()
print(json.dumps({"before": before, "held": held[0], "freed": freed, "threads": threads,
                  "released": release_freed(), "after": rss()}))
"""


def test_under_jemalloc_freed_pages_stay_for_reuse_until_released():
    """``JEMALLOC_CONF``: what a turn frees stays resident for the next turn (no decay, no arena
    that gives large blocks back at once), so RSS does not swing with the turns; other threads
    reuse those pages (one arena: with jemalloc's default eight here, two more threads taking
    turns grew RSS by 290 MiB); the server's one purge after loading (``release_freed``) gives
    them back."""
    env = jemalloc_env({**os.environ, "LD_PRELOAD": ""})
    assert env is not None, f"{JEMALLOC} is not installed: scripts/setup.sh installs it (apt-get install libjemalloc2)"
    proc = subprocess.run([sys.executable, "-c", KEPT], env=env, capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads(proc.stdout)
    assert got["held"] - got["before"] >= 130  # 144 MiB touched
    assert got["freed"] >= got["held"] - 16  # freed, and still resident: kept for reuse
    assert got["threads"] <= got["freed"] + 16  # other threads reused them (one arena), no new pages
    assert got["released"] and got["after"] <= got["freed"] - 100  # the purge gave it back


def test_the_server_can_start_again_under_jemalloc():
    """``--allocator auto|jemalloc`` (``remote.cli``): the environment that preloads jemalloc
    (scripts/setup.sh installs libjemalloc2), and a process started with it reports jemalloc's
    own figures, and is not started again."""
    env = jemalloc_env({**os.environ, "LD_PRELOAD": ""})
    assert env is not None, f"{JEMALLOC} is not installed: scripts/setup.sh installs it (apt-get install libjemalloc2)"
    assert env["LD_PRELOAD"].split()[0].startswith("libjemalloc") and env[TRIED] == "1"
    assert jemalloc_env({**os.environ, TRIED: "1"}) is None  # tried once: never again
    assert env["MALLOC_CONF"] == JEMALLOC_CONF
    assert jemalloc_env({**os.environ, "LD_PRELOAD": "", "MALLOC_CONF": "narenas:2"})["MALLOC_CONF"] == "narenas:2"
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads(proc.stdout)
    assert got["allocator"] == "jemalloc" and got["again"] is None
    assert (got["decay"], got["oversize"], got["arenas"]) == (-1, 0, 1)  # JEMALLOC_CONF took effect
    assert got["banner"] == "jemalloc, freed pages kept for reuse"
    assert got["held"]["in_use_mib"] - got["before"]["in_use_mib"] >= 30
    assert got["held"]["in_use_mib"] <= got["held"]["heap_mib"]


PROFILED = r"""
import ctypes, sys
import numpy as np
dump = ctypes.CDLL(None).mallctl
held = []
for mib in (8, 40, 8, 24):  # what a turn holds moves; each profile is taken at one of these moments
    held = [np.ones(mib * 131072) for _ in range(1)]  # float64: mib MiB in one block
    assert dump(b"prof.dump", None, None, None, 0) == 0
"""


def test_heap_sites_finds_the_allocation_site_whose_live_bytes_move(tmp_path):
    """``scripts/heap_sites.py`` reads jemalloc's heap profiles (the profiler Debian's
    libjemalloc2 is built with) and names the library and the stack whose live bytes moved
    between them: how the LLM's sampler chains were found (docs/soak.md)."""
    env = jemalloc_env({**os.environ, "LD_PRELOAD": ""})
    assert env is not None, f"{JEMALLOC} is not installed: scripts/setup.sh installs it (apt-get install libjemalloc2)"
    env["MALLOC_CONF"] = f"{JEMALLOC_CONF},prof:true,lg_prof_sample:17,prof_prefix:{tmp_path}/h"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", PROFILED], env=env, capture_output=True, text=True, timeout=60, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("h.*.heap"))) == 4, "jemalloc wrote no profiles: is it built with --enable-prof?"
    out = subprocess.run([sys.executable, "scripts/heap_sites.py", "--skip", "0", "--sites", "1", f"{tmp_path}/h.*.heap"],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    numpy_line = next(line for line in out.stdout.splitlines() if line.startswith("_multiarray_umath"))
    lowest, highest = (float(x) for x in numpy_line.split()[-2:])
    assert 7 <= lowest <= 12 and 39 <= highest <= 46, out.stdout  # 8 and 40 MiB held, and numpy's own
    site = out.stdout.split("moved most:")[1]
    assert "8.0 to 40.0 MiB, live in 4 of 4 profiles" in site and "_multiarray_umath" in site, out.stdout
