"""A stat per file, fast: the part of the raw-input fingerprint that cannot be cached (issue 16).

An in-place write changes a file's inode and nothing else, so noticing one takes a stat of every
file on every run. What one costs decides how to spread them (2 cores, 2026-12-01):

- from the inode cache a stat costs ~1 us in the kernel and ~1.2 us of Python (the stat_result);
  500k of them take 1.1-1.4 s in one thread. Threads make it worse (2.1-2.5 s in two: the GIL
  changes hands every call; ctypes `statx`, which releases the GIL, fares the same), so on Linux
  the list is split between this process and forked children that write into shared memory:
  0.71-1.05 s in two processes against 1.24-1.42 s in one, measured side by side;
- a stat that waits on I/O (a network filesystem, a cold disk) releases the GIL for long enough
  that threads overlap the waits.

So the first tasks (at least `chunk` stats; a small first folder alone would time mostly its
open and close) run here, and the rest go to threads if those stats were slow, to forked children
if they were fast and there are enough of them, else stay here. Each child writes its slice of
an anonymous shared mapping and leaves with `os._exit`; a child that fails has its slice redone
here, so the bytes never depend on the strategy.
"""
from __future__ import annotations

import mmap
import os
import sys
import time
import warnings
from array import array
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import accumulate, chain
from operator import attrgetter

Task = tuple[str, Sequence[str] | Sequence[bytes]]  # (folder, entry names in it)

ROW_BYTES = 24                   # int64 (mode, size, mtime_ns)
LEAF = attrgetter("st_mode", "st_size", "st_mtime_ns")
NO_STAT = (-1, -1, -1)           # broken symlink, vanished entry: not a file
SLOW_STAT_S = 20e-6              # a stat slower than this waits on I/O: threads then pay off
FORK_MIN_STATS = 50_000          # per extra process: below it a fork (~5-20 ms) does not pay
MAX_WORKERS = 4
# fork only where it is the platform's own default and cheap; macOS frameworks are not fork-safe
CAN_FORK = sys.platform.startswith("linux") and hasattr(os, "fork")


def stat_task(task: Task) -> bytes:
    """int64 (mode, size, mtime_ns) per name, symlinks followed, NO_STAT where none."""
    folder, names = task
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:   # the common case, without a Python frame per file
            return array("q", chain.from_iterable(
                map(LEAF, map(partial(os.stat, dir_fd=fd), names)))).tobytes()
        except OSError:
            out = array("q")
            for name in names:
                try:
                    out.extend(LEAF(os.stat(name, dir_fd=fd)))
                except OSError:
                    out.extend(NO_STAT)
            return out.tobytes()
    finally:
        os.close(fd)


def cpu_count() -> int:
    """CPUs this process may use, capped by $KDPIPE_STAT_PROCS (1: stat in this thread only)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cap = os.environ.get("KDPIPE_STAT_PROCS", "")
    return max(1, min(cpus or 1, int(cap))) if cap.isdigit() else cpus or 1


def stat_all(tasks: list[Task], chunk: int) -> bytes:
    """stat_task over `tasks`, joined in order, spread as the module docstring says."""
    probed: list[bytes] = []
    n, t0 = 0, time.perf_counter()
    for task in tasks:
        if n >= chunk:
            break
        probed.append(stat_task(task))
        n += len(task[1])
    slow = (time.perf_counter() - t0) / max(1, n) > SLOW_STAT_S
    rest = tasks[len(probed):]
    cpus = cpu_count()
    if slow and min(MAX_WORKERS, cpus, len(rest)) >= 2:
        with ThreadPoolExecutor(min(MAX_WORKERS, cpus, len(rest))) as ex:
            return b"".join(probed + list(ex.map(stat_task, rest)))
    procs = min(MAX_WORKERS, cpus, sum(len(t[1]) for t in rest) // FORK_MIN_STATS)
    if not slow and CAN_FORK and procs >= 2:
        return b"".join(probed) + stat_forked(rest, procs)
    return b"".join(probed + list(map(stat_task, rest)))


def split(tasks: list[Task], parts: int) -> list[list[Task]]:
    """Contiguous runs of tasks with about equal stat counts (order kept)."""
    ends = list(accumulate(len(t[1]) for t in tasks))
    total = ends[-1] if ends else 0
    out: list[list[Task]] = [[] for _ in range(parts)]
    for task, end in zip(tasks, ends, strict=True):
        out[min(parts - 1, (end - 1) * parts // max(1, total))].append(task)
    return out


def stat_forked(tasks: list[Task], procs: int) -> bytes:
    """The first share here, the others in `procs - 1` forked children (shared mapping)."""
    shares = split(tasks, procs)
    sizes = [ROW_BYTES * sum(len(t[1]) for t in share) for share in shares]
    offsets = [0, *accumulate(sizes)]
    shared = mmap.mmap(-1, max(1, offsets[-1]))  # MAP_SHARED | MAP_ANONYMOUS: children write
    children: dict[int, int] = {}                # pid -> share index
    try:
        for i in range(1, procs):
            with warnings.catch_warnings():  # 3.12+ warns on fork in a threaded process: the
                warnings.simplefilter("ignore", DeprecationWarning)  # child only stats, no locks
                pid = os.fork()
            if pid == 0:  # the child: never returns into the caller's code
                code = 1
                try:
                    data = b"".join(map(stat_task, shares[i]))
                    if len(data) == sizes[i]:
                        shared[offsets[i]:offsets[i + 1]] = data
                        code = 0
                finally:
                    os._exit(code)
            children[pid] = i
        shared[0:sizes[0]] = b"".join(map(stat_task, shares[0]))
        while children:
            pid, status = os.waitpid(next(iter(children)), 0)
            i = children.pop(pid)
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                shared[offsets[i]:offsets[i + 1]] = b"".join(map(stat_task, shares[i]))
        return shared[:offsets[-1]]
    finally:
        for pid in children:  # interrupted: reap what is left (a child ends within its share)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        shared.close()
