"""The raw-input fingerprint, started before the CLI's imports (issue 16: a no-op re-run at 500k
raw files in < 1 s).

A no-op `kdpipe run` spends its time in two parts that need each other in the wrong order: ~0.45 s
importing and planning (one core), then a stat of every raw file (0.5 s on two cores at 500k
files), which needs the roots, which only the plan knows. The roots of a workflow rarely change,
so the CLI remembers them per workflow file (a hint under `$KDPIPE_CACHE/fingerprints/hints/`)
and on the next call forks a child, before anything heavy is imported, that computes the
fingerprint of the remembered roots while the parent imports and plans. When the plan asks for
the fingerprint of exactly those roots (`take`), it gets the child's value.

Same safety as computing it in place: the child stats every file after the command started, with
the same code and cache; a child asked for more than `MAX_AGE_S` after it started (the command
waited for a workspace lock, say) is stopped and the value computed again, as is one from a child
that failed. A stale hint (the workflow now names other roots) costs one wasted child and is then
rewritten. Only trees that have a stat cache file (>= 10,000 files) are prefetched: below that a
fork costs more than it hides. Linux only (fork before threads exist); `KDPIPE_PREFETCH=off`
turns it off.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from kdpipe.pipeline import fingerprint, statpass

MAX_AGE_S = 5.0               # a child asked for later than this after its start is not used
_PENDING: dict[tuple[str, ...], tuple[int, int, float]] = {}  # roots -> (pid, read fd, start)
_USED: list[tuple[str, ...]] = []  # root lists the plan fingerprinted in this process


@contextlib.contextmanager
def hinted(workflow: str | os.PathLike[str], overrides: list[str]) -> Iterator[None]:
    """What a CLI command that plans `workflow` wraps its imports and planning in: `start` on
    entry, `remember` on exit (also after an error: the roots were fingerprinted)."""
    start(workflow, overrides)
    try:
        yield
    finally:
        remember(workflow, overrides)


def enabled() -> bool:
    off = os.environ.get("KDPIPE_PREFETCH", "").lower() in ("off", "0", "no", "false")
    return statpass.CAN_FORK and not off and fingerprint.cache_enabled()


def _hint_file(workflow: str | os.PathLike[str], overrides: list[str]) -> Path | None:
    base = fingerprint.cache_base()
    if base is None:
        return None
    key = json.dumps([str(Path(workflow).resolve()), sorted(overrides)])
    return base / "hints" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def start(workflow: str | os.PathLike[str], overrides: list[str]) -> None:
    """Fork one child per remembered root list of this workflow (+ overrides) that has a stat
    cache; each writes its fingerprint digest to a pipe for `take`."""
    hint = _hint_file(workflow, overrides) if enabled() else None
    if hint is None:
        return
    try:
        roots_lists = [[str(r) for r in roots] for roots in json.loads(hint.read_text())]
    except (OSError, ValueError, TypeError):
        return
    for roots in roots_lists:
        cache = fingerprint.cache_file(roots, None)
        if cache is None or not cache.exists() or tuple(roots) in _PENDING:
            continue
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():  # 3.12+ warns on fork in a threaded process (a test
            warnings.simplefilter("ignore", DeprecationWarning)  # runner): the child only stats
            pid = os.fork()
        if pid == 0:  # the child: never returns into the CLI
            code = 1
            try:
                os.close(read_fd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: just go
                digest = fingerprint.fingerprint_digest(roots)
                os.write(write_fd, digest.encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        _PENDING[tuple(roots)] = (pid, read_fd, time.monotonic())


def take(roots: list[str]) -> str | None:
    """The prefetched digest of exactly `roots` (resolved), or None: none started, asked for
    more than MAX_AGE_S after the child started (the command waited for a workspace lock: a
    file changed meanwhile might have been missed), or the child failed. Notes `roots` for
    `remember` either way. A slow child (a cold network filesystem) is waited for: it started
    the same stats earlier than this process would have."""
    if tuple(roots) not in _USED:
        _USED.append(tuple(roots))
    entry = _PENDING.pop(tuple(roots), None)
    if entry is None:
        return None
    pid, read_fd, started = entry
    if time.monotonic() - started > MAX_AGE_S:
        _stop(pid, read_fd)
        return None
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and len(data) == 64
    return data.decode() if ok else None


def _stop(pid: int, read_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.close(read_fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def cancel() -> None:
    """Stop and reap children nobody asked for (the plan named other roots, or failed)."""
    while _PENDING:
        _, (pid, read_fd, _) = _PENDING.popitem()
        _stop(pid, read_fd)


atexit.register(cancel)  # children still pending when the process ends (an error before planning)


def remember(workflow: str | os.PathLike[str], overrides: list[str]) -> None:
    """Write the hint for this workflow: the root lists this process fingerprinted with a stat
    cache (unchanged hints are not rewritten)."""
    hint = _hint_file(workflow, overrides) if enabled() else None
    used = [list(r) for r in _USED if (c := fingerprint.cache_file(list(r), None)) is not None
            and c.exists()]
    if hint is None or not used:
        return
    text = json.dumps(used)
    with contextlib.suppress(OSError):
        if hint.exists() and hint.read_text() == text:
            return
    tmp = None
    try:
        hint.parent.mkdir(parents=True, exist_ok=True)
        fingerprint.prune(hint.parent)  # hints of workflows not run for 30 days
        fd, tmp = tempfile.mkstemp(dir=hint.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, hint)
    except OSError:  # a hint only: without it the next run is as fast as before
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
