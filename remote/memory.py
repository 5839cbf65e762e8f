"""What the process's memory is made of, as its allocator sees it (:func:`malloc_stats`), and
starting the server again under jemalloc (:func:`jemalloc_env`, ``--allocator``).

RSS alone cannot tell a leak from an allocator that keeps what was freed: both make it grow. On a
server that runs for weeks the difference matters, so ``/healthz`` (token holders) reports
glibc's ``mallinfo2()`` beside Python's own block count, and ``s2s-engine bench soak`` records it
with every sample (docs/soak.md):

- ``in_use_mib``: bytes malloc has handed out from its heaps and not got back (``uordblks``).
  A leak of small and medium blocks grows this.
- ``mmapped_mib``: the large blocks it mapped on their own (``hblkhd``: llama.cpp's and
  onnxruntime's buffers here, over a GiB of address space of which only the touched pages count
  in RSS). A leak of large blocks grows this.
- ``heap_mib``: the size of malloc's heaps (``arena``, all arenas); ``free_mib`` of it is free
  space malloc keeps (``fordblks``), ``top_mib`` the part at the top it could give back at once
  (``keepcost``). Heaps that grow while ``in_use`` stays flat are fragmentation, not a leak.
- ``python_blocks``: ``sys.getallocatedblocks()``, Python's own small-object allocator.

Where jemalloc is the allocator (``LD_PRELOAD``), the same figures come from its ``mallctl``
statistics: ``in_use`` is ``stats.allocated`` (all sizes: jemalloc keeps large blocks in its
extents too), ``mmapped`` is ``stats.mapped``, ``heap`` is
``stats.active`` (pages of live size classes), ``free`` their difference, ``top`` what it has
mapped and not yet given back (``stats.resident - stats.active``), and ``allocator`` says which.

None where neither is there (musl, macOS, glibc before 2.33).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

from engine.cpu import rss_mib

MIB = 1 << 20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _libc_mallinfo2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype, fn.argtypes = _Mallinfo2, []
    return fn


_MALLINFO2 = _libc_mallinfo2()


def _jemalloc_mallctl() -> Any:
    """jemalloc's ``mallctl`` when jemalloc serves this process's ``malloc``, else None."""
    try:
        fn = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                   ctypes.c_size_t]
    return fn


_MALLCTL = _jemalloc_mallctl()


def _jemalloc_stats() -> dict[str, Any] | None:
    epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
    if _MALLCTL(b"epoch", None, None, ctypes.byref(epoch), size) != 0:  # refresh the statistics
        return None
    got: dict[str, int] = {}
    for name in ("allocated", "active", "resident", "mapped"):
        v, n = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
        if _MALLCTL(f"stats.{name}".encode(), ctypes.byref(v), ctypes.byref(n), None, 0) != 0:
            return None
        got[name] = v.value
    return {
        "allocator": "jemalloc",
        "in_use_mib": round(got["allocated"] / MIB, 1),
        "heap_mib": round(got["active"] / MIB, 1),
        "free_mib": round((got["active"] - got["allocated"]) / MIB, 1),
        "top_mib": round(max(0, got["resident"] - got["active"]) / MIB, 1),
        "mmapped_mib": round(got["mapped"] / MIB, 1),
        "mmapped_blocks": None,
        "python_blocks": sys.getallocatedblocks(),
    }


JEMALLOC = "libjemalloc.so.2"
"""jemalloc's library as Debian and Ubuntu install it (``apt-get install libjemalloc2``), for the
error that says it is missing; :func:`jemalloc_env` preloads whatever name the system gives it."""
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,oversize_threshold:0,narenas:1"
"""jemalloc's options for the server (``MALLOC_CONF``; one the operator sets is kept).

With jemalloc's defaults the server's RSS swung ±7 % over an hour of turns (docs/soak.md): what a
turn freed went back to the kernel (blocks over 8 MiB at once, from jemalloc's arena for oversized
blocks; the rest after its 10 s decay) and the next turn faulted it in again, so RSS followed what
happened to be live at each sample. With freed pages kept (no decay) the swings ended, but RSS rose
in steps: each thread's freed pages stay in its own arena (four per core by default), out of reach
of the other threads (CTranslate2's, onnxruntime's, the executor's), so it grew each time another
thread met its own peak. So: freed pages are kept for reuse, in one arena, with large blocks in it
too, and RSS stays at what the busiest moment needed, which the next busy moment needs again. An
operator who wants memory back from an idle server sets ``MALLOC_CONF`` (e.g.
``background_thread:true,dirty_decay_ms:10000``), which is then used as it is."""
TRIED = "S2S_ALLOCATOR_TRIED"
"""Set in the environment of the re-started engine: it is never started again for the allocator."""


def describe_allocator() -> str:
    """One line for the server's banner: the allocator and, for jemalloc, how long it keeps freed pages."""
    name = allocator()
    if name != "jemalloc":
        return name or "unknown"
    decay, background = jemalloc_option("dirty_decay_ms"), jemalloc_option("background_thread")
    if decay is None:
        return "jemalloc"
    if decay < 0:
        return "jemalloc, freed pages kept for reuse"
    return f"jemalloc, freed pages kept {decay / 1000:g} s{', background purge' if background else ''}"


def allocator() -> str | None:
    """``jemalloc`` or ``glibc``: what serves this process's ``malloc`` (None: neither is known)."""
    return "jemalloc" if _MALLCTL is not None else "glibc" if _MALLINFO2 is not None else None


def jemalloc_env(env: dict[str, str]) -> dict[str, str] | None:
    """``env`` with jemalloc preloaded, for starting this program again under it; None where it
    is loaded already, was tried already (``S2S_ALLOCATOR_TRIED``), or is not installed."""
    if _MALLCTL is not None or env.get(TRIED) or not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("jemalloc")  # libjemalloc.so.2 (it cannot be loaded late: static TLS)
    if name is None:
        return None
    preload = " ".join(x for x in (name, env.get("LD_PRELOAD", "")) if x)
    return {**env, "LD_PRELOAD": preload, TRIED: "1", "MALLOC_CONF": env.get("MALLOC_CONF") or JEMALLOC_CONF}


def jemalloc_option(name: str) -> int | bool | None:
    """The value of jemalloc's option ``name`` (``dirty_decay_ms``, ``background_thread``) in this
    process; None where jemalloc is not the allocator or has no such option."""
    if _MALLCTL is None:
        return None
    kind = ctypes.c_bool if name == "background_thread" else ctypes.c_uint if name == "narenas" else ctypes.c_ssize_t
    v, n = kind(), ctypes.c_size_t(ctypes.sizeof(kind))
    if _MALLCTL(f"opt.{name}".encode(), ctypes.byref(v), ctypes.byref(n), None, 0) != 0:
        return None
    return v.value


def release_freed() -> bool:
    """Give the kernel back the pages malloc keeps for reuse, now: jemalloc's purge of every arena
    (``arena.<all>.purge``), or glibc's ``malloc_trim(0)``. The server calls it once the models
    have loaded: what loading freed would otherwise stay resident (:data:`JEMALLOC_CONF` keeps
    freed pages), while what the turns free is needed again at the next turn. False where
    neither allocator is known."""
    if _MALLCTL is not None:
        return _MALLCTL(f"arena.{_ARENAS_ALL}.purge".encode(), None, None, None, 0) == 0
    if _MALLINFO2 is not None:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    return False


_ARENAS_ALL = 4096  # jemalloc's MALLCTL_ARENAS_ALL


def memory_report() -> dict[str, Any] | None:
    """``/healthz``'s ``memory``: the process's RSS beside the allocator's view (:func:`malloc_stats`)."""
    rss, stats = rss_mib(), malloc_stats()
    if rss is None and stats is None:
        return None
    return {"rss_mib": rss, **(stats or {})}


def malloc_stats() -> dict[str, Any] | None:
    """The allocator's view of this process's heap in MiB (see the module docstring), or None."""
    if _MALLCTL is not None:
        return _jemalloc_stats()
    if _MALLINFO2 is None:
        return None
    m = _MALLINFO2()
    return {
        "allocator": "glibc",
        "in_use_mib": round(m.uordblks / MIB, 1),
        "heap_mib": round(m.arena / MIB, 1),
        "free_mib": round(m.fordblks / MIB, 1),
        "top_mib": round(m.keepcost / MIB, 1),
        "mmapped_mib": round(m.hblkhd / MIB, 1),
        "mmapped_blocks": m.hblks,
        "python_blocks": sys.getallocatedblocks(),
    }


__all__ = ["JEMALLOC", "JEMALLOC_CONF", "TRIED", "allocator", "describe_allocator", "jemalloc_env", "jemalloc_option", "malloc_stats", "memory_report",
           "release_freed"]
