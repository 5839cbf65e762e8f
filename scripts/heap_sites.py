"""What holds a process's live memory, and what moves it: jemalloc heap profiles summed up.

Start the server with jemalloc's sampling profiler on, so that it writes a profile of its live
allocations every GiB it allocates, then read the profiles here:

    s2s-engine bench soak --sessions 3 --minutes 10 --server-env \\
      MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1,oversize_threshold:0,narenas:1,prof:true,lg_prof_interval:30,lg_prof_sample:17,prof_prefix:/tmp/heap/s
    python scripts/heap_sites.py '/tmp/heap/s.*.heap'

(Debian's ``libjemalloc2`` is built with the profiler; the ``MALLOC_CONF`` given replaces the
server's own, so it repeats those options first.) It prints, over the profiles after the first
``--skip`` share (start-up), the live MiB by library (the first frame outside the allocator, libc
and libstdc++), lowest and highest, and the allocation sites whose live bytes moved most, each
as a stack symbolized with ``addr2line``. A site that moves by tens of MiB between profiles sets
RSS's high-water mark each time it peaks (docs/soak.md, "What moved live memory").

Each profile counts sampled allocations (one per ``2**lg_prof_sample`` bytes on average); they
are scaled back as jemalloc's own ``jeprof`` does.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import glob
import math
import os
import re
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field

MIB = 1 << 20
ALLOCATOR = ("libjemalloc", "libc.so", "libc-", "libstdc++", "ld-linux")
_HEADER = re.compile(r"heap_v2/(\d+)")
_COUNTS = re.compile(r"\s+t\*: (\d+): (\d+) \[")
_MAP = re.compile(r"([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s+(\S.*)?$")


@dataclass
class Profile:
    """One heap profile: live bytes per stack (scaled back from the samples), and the mappings."""

    path: str
    stacks: Counter = field(default_factory=Counter)  # tuple of return addresses -> live bytes
    maps: list[tuple[int, int, int, str]] = field(default_factory=list)  # start, end, file offset, path
    starts: list[int] = field(default_factory=list)

    def mapping(self, addr: int) -> tuple[int, int, int, str] | None:
        k = bisect.bisect_right(self.starts, addr) - 1
        return self.maps[k] if k >= 0 and self.maps[k][0] <= addr < self.maps[k][1] else None

    def library(self, addr: int) -> str:
        m = self.mapping(addr)
        return m[3] if m else "?"

    def owner(self, stack: tuple[int, ...]) -> str:
        """The library of the first frame outside the allocator, libc and libstdc++."""
        for a in stack:
            lib = self.library(a)
            if not any(x in os.path.basename(lib) for x in ALLOCATOR):
                return os.path.basename(lib)
        return "allocator"


def read_profile(path: str) -> Profile:
    p = Profile(path)
    rate, stack, in_maps = 1 << 19, None, False
    with open(path, errors="replace") as f:
        for line in f:
            if in_maps:
                m = _MAP.match(line.rstrip("\n"))
                if m and m.group(5) and "x" in m.group(3):
                    p.maps.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(4), 16), m.group(5).strip()))
            elif line.startswith("MAPPED_LIBRARIES"):
                in_maps = True
            elif line.startswith("heap_v2/"):
                rate = int(_HEADER.match(line).group(1))
            elif line.startswith("@"):
                stack = tuple(int(a, 16) for a in line[1:].split())
            elif stack is not None and (m := _COUNTS.match(line)):
                objs, size = int(m.group(1)), int(m.group(2))
                if objs:
                    p.stacks[stack] += size / (1 - math.exp(-(size / objs) / rate))
                stack = None
    p.maps.sort()
    p.starts = [m[0] for m in p.maps]
    return p


@functools.cache
def _load_segments(lib: str) -> list[tuple[int, int, int]]:
    """(file offset, address, size) of each LOAD segment of ``lib`` (``readelf``, once a library)."""
    out = []
    for line in subprocess.run(["readelf", "-lW", lib], capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            out.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
    return out


def symbolize(profile: Profile, addr: int) -> str:
    """``library function`` for a return address (addr2line on the file's own address)."""
    m = profile.mapping(addr)
    if m is None or not os.path.exists(m[3]):
        return f"? {addr:#x}"
    start, _, offset, lib = m
    file_offset = addr - start + offset
    vaddr = next((file_offset - o + v for o, v, size in _load_segments(lib) if o <= file_offset < o + size),
                 file_offset)
    name = subprocess.run(["addr2line", "-f", "-C", "-e", lib, hex(vaddr - 1)],
                          capture_output=True, text=True).stdout.split("\n")[0]
    return f"{os.path.basename(lib)} {name[:120]}"


def summarize(paths: list[str], skip: float = 0.2, sites: int = 5, depth: int = 8) -> str:
    profiles = [read_profile(p) for p in paths]
    kept = profiles[int(len(profiles) * skip):] or profiles
    libs: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(kept))
    per_site: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [0.0] * len(kept))
    for i, p in enumerate(kept):
        for stack, b in p.stacks.items():
            libs[p.owner(stack)][i] += b
            per_site[stack][i] += b
    out = [f"{len(kept)} profiles of {len(profiles)} (the first {skip:.0%} skipped: start-up)",
           f"{'live MiB by library':60s} {'lowest':>8s} {'highest':>8s}"]
    totals = [sum(p.stacks.values()) for p in kept]
    out.append(f"{'all':60s} {min(totals) / MIB:8.1f} {max(totals) / MIB:8.1f}")
    for lib, vals in sorted(libs.items(), key=lambda kv: -max(kv[1]))[:12]:
        out.append(f"{lib[:60]:60s} {min(vals) / MIB:8.1f} {max(vals) / MIB:8.1f}")
    out.append("allocation sites whose live bytes moved most:")
    last = kept[-1]
    moved = sorted(per_site.items(), key=lambda kv: -(max(kv[1]) - min(kv[1])))[:sites]
    for stack, vals in moved:
        out.append(f"  {min(vals) / MIB:.1f} to {max(vals) / MIB:.1f} MiB, "
                   f"live in {sum(1 for v in vals if v)} of {len(vals)} profiles")
        frames = [a for a in stack if not any(x in os.path.basename(last.library(a)) for x in ALLOCATOR)]
        out += [f"      {symbolize(last, a)}" for a in frames[:depth]]
    return "\n".join(out)


def _seq(path: str) -> tuple[int, str]:
    """jemalloc names a profile PREFIX.PID.SEQ.{i,m,u,f}SEQ.heap: in the order written."""
    m = re.search(r"\.(\d+)\.[a-z]\d*\.heap$", path)
    return (int(m.group(1)) if m else 0, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profiles", nargs="+", help="heap profiles (a glob in quotes, or paths)")
    ap.add_argument("--skip", type=float, default=0.2, help="share of the first profiles left out (0.2)")
    ap.add_argument("--sites", type=int, default=5, help="allocation sites shown (5)")
    args = ap.parse_args()
    paths = sorted({p for g in args.profiles for p in glob.glob(g)}, key=_seq)
    if not paths:
        raise SystemExit(f"no heap profiles in {' '.join(args.profiles)}")
    print(summarize(paths, args.skip, args.sites))


if __name__ == "__main__":
    main()
