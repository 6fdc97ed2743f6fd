"""The raw-input fingerprint: (relative path, size, mtime_ns) of every file under the roots.

The value is what kdpipe always computed (sha256 over each root's resolved path and the sorted
`rel:size:mtime_ns` rows of its regular files; symlinks to files followed, symlinks to folders,
broken links and other entries skipped), so existing workspaces keep their keys.

Making it cheap on a no-op re-run (issue 16: 2.3 s for 500k files). An in-place write changes a
file's inode and nothing else (its folder's mtime stays), so noticing one takes a stat per file:
that part stays, with C-level maps and no per-file Python objects kept, spread over processes
or threads as `statpass` measures best. What a persisted cache saves is the rest: listing every
folder, formatting, sorting and hashing half a million rows. Per call,
`$KDPIPE_CACHE/fingerprints/` holds every folder's identity (dev, inode, mtime_ns, ctime_ns),
its non-folder entries and each entry's (mode, size, mtime_ns) as they were when the value was
computed. A later call stats the folders (an entry added, removed or renamed changes its
folder's mtime and ctime) and every entry (a write changes the file's mtime or size); only if
all of it is bit-identical does it return the cached value, else it scans from scratch. A folder
whose mtime or ctime lay within RACY_NS of the scan's start is never cached (git's racy-index
rule: a change in the same clock tick would leave the folder's times unchanged), so this is
exactly as safe as a full scan, provided the filesystem's clock runs within RACY_NS of this
machine's (NFS: watch skew).
`KDPIPE_FINGERPRINT_CACHE=off` turns the cache off.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat as stat_mod
import tempfile
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, cast

from kdpipe.pipeline import statpass

RACY_NS = 2_000_000_000          # FAT's 2 s mtime granularity covers every common filesystem
MIN_CACHED_FILES = 10_000        # below this a full scan takes < 50 ms: no cache file
CACHE_MAX_AGE_S = 30 * 86400     # cache files unused this long are removed when one is written
_CHUNK = 4096                    # entries per stat task
_MAGIC = b"kdpipe-fingerprint-cache/1\n"
_LEAF = statpass.LEAF
_FS = "surrogateescape"          # undecodable file names round-trip
_IFMT = 0o170000                 # stat.S_IFMT's mask; S_ISREG(-1) would raise

Ident = tuple[int, int, int, int]  # a folder's dev, inode, mtime_ns, ctime_ns



@dataclass(frozen=True)
class _Folder:
    root: int                    # index into the roots
    rel: str                     # "" for the root, else "a/b/": the prefix of its rows
    ident: Ident
    # entries that are not real folders (files, links, ...): str when listed, bytes when read
    # from the cache (os.stat then skips encoding each name)
    leaves: Sequence[str] | Sequence[bytes]


@dataclass
class _Tree:
    roots: list[str]             # resolved
    kinds: list[str]             # per root: "dir" | "file" | "missing"
    root_stats: list[list[int] | None]   # (mode, size, mtime_ns) of a root that is a file
    folders: list[_Folder]
    stats: bytes = b""           # int64 (mode, size, mtime_ns) per leaf, folders in order
    digest: str = ""
    started_ns: int = 0          # wall clock when the scan began (the racy rule)

    def path(self, f: _Folder) -> str:
        root = self.roots[f.root]
        return f"{root.rstrip('/')}/{f.rel[:-1]}" if f.rel else root


def fingerprint_digest(roots: Iterable[str | os.PathLike[str]],
                       cache_dir: str | os.PathLike[str] | None = None,
                       min_cached_files: int = MIN_CACHED_FILES) -> str:
    """sha256 hex of the fingerprint of `roots` (files or folders, missing ones included).
    `cache_dir`: where the cache lives (None: $KDPIPE_CACHE/fingerprints, ~/.cache/kdpipe)."""
    resolved = resolve_roots(roots)
    cache = cache_file(resolved, cache_dir)
    if cache is not None:
        hit = _cached_digest(cache, resolved)
        if hit is not None:
            return hit
    tree = _scan(resolved)
    if cache is not None and len(tree.stats) // 24 >= min_cached_files and all(
            max(f.ident[2:]) < tree.started_ns - RACY_NS for f in tree.folders):
        _save(cache, tree)
    return tree.digest


def _stat_leaves(tree: _Tree) -> bytes:
    """(mode, size, mtime_ns) of every leaf, symlinks followed, as int64 bytes in order."""
    return statpass.stat_all([(tree.path(f), f.leaves[i:i + _CHUNK]) for f in tree.folders
                              for i in range(0, len(f.leaves), _CHUNK)], _CHUNK)


# --- a full scan, and the value ---------------------------------------------------------------

def _ident(st: os.stat_result) -> Ident:
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def _root_kind(root: str) -> tuple[str, os.stat_result | None]:
    try:
        st = os.stat(root)
    except OSError:
        return "missing", None
    if stat_mod.S_ISREG(st.st_mode):
        return "file", st
    return ("dir" if stat_mod.S_ISDIR(st.st_mode) else "missing"), st


def _list_root(tree: _Tree, index: int) -> None:
    """Every real folder under root `index` (symlinked folders are not entered), its leaves."""
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = _Folder(index, rel, (0, 0, 0, 0), [])
        path = tree.path(folder)
        ident = _ident(os.stat(path))  # before listing: a change while listing shows next time
        leaves = []
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(f"{rel}{e.name}/")
                else:
                    leaves.append(e.name)
        tree.folders.append(_Folder(index, rel, ident, leaves))


def _scan(roots: list[str]) -> _Tree:
    tree = _Tree(roots, [], [], [], started_ns=time.time_ns())
    for i, root in enumerate(roots):
        kind, st = _root_kind(root)
        tree.kinds.append(kind)
        tree.root_stats.append(list(_LEAF(st)) if kind == "file" and st is not None else None)
        if kind == "dir":
            _list_root(tree, i)
    tree.stats = _stat_leaves(tree)
    tree.digest = _digest(tree)
    return tree


def _digest(tree: _Tree) -> str:
    stats = array("q")
    stats.frombytes(tree.stats)
    rows: list[list[str]] = [[] for _ in tree.roots]
    at = 0
    for f in tree.folders:
        names = cast("Sequence[str]", f.leaves)  # a scanned tree's
        it = iter(stats[at:at + 3 * len(names)])
        at += 3 * len(names)
        rows[f.root].extend(f"{f.rel}{name}:{size}:{mtime}"
                            for name, mode, size, mtime in zip(names, it, it, it, strict=True)
                            if mode & _IFMT == stat_mod.S_IFREG)  # -1: no stat
    h = hashlib.sha256()
    for root, kind, rs, mine in zip(tree.roots, tree.kinds, tree.root_stats, rows, strict=True):
        h.update(root.encode(errors=_FS) + b"\n")
        if kind == "file" and rs is not None:
            h.update(f"{rs[1]}:{rs[2]}\n".encode())
        elif kind == "missing":
            h.update(b"<missing>\n")
        else:
            h.update("\n".join(sorted(mine)).encode(errors=_FS))
    return h.hexdigest()


# --- the cache --------------------------------------------------------------------------------

def resolve_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The roots as the fingerprint and its cache name them: resolved paths."""
    return [str(Path(r).resolve()) for r in roots]


def cache_enabled() -> bool:
    return os.environ.get("KDPIPE_FINGERPRINT_CACHE", "").lower() not in (
        "off", "0", "no", "false")


def cache_base() -> Path | None:
    """$KDPIPE_CACHE/fingerprints (default ~/.cache/kdpipe/...); None without a home."""
    try:
        base = Path(os.environ.get("KDPIPE_CACHE") or Path.home() / ".cache" / "kdpipe")
    except RuntimeError:  # no home directory
        return None
    return base / "fingerprints"


def cache_file(roots: list[str], cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """Where the stat cache of these (resolved) roots lives; None when the cache is off."""
    if not cache_enabled():
        return None
    if cache_dir is None:
        cache_dir = cache_base()
        if cache_dir is None:
            return None
    name = hashlib.sha256(json.dumps(roots).encode()).hexdigest()[:32]
    return Path(cache_dir) / f"{name}.bin"


def _cached_digest(cache: Path, roots: list[str]) -> str | None:
    """The cached value if every root, folder and leaf stats as when it was computed."""
    tree = _load(cache)
    if tree is None or tree.roots != roots:
        return None
    try:
        for root, kind, rs in zip(roots, tree.kinds, tree.root_stats, strict=True):
            now, st = _root_kind(root)
            if now != kind or (kind == "file" and (st is None or list(_LEAF(st)) != rs)):
                return None
        if any(_ident(os.stat(tree.path(f))) != f.ident for f in tree.folders):
            return None
        if _stat_leaves(tree) != tree.stats:
            return None
        os.utime(cache)  # in use: keep it from being pruned
    except OSError:
        return None
    return tree.digest


def _save(cache: Path, tree: _Tree) -> None:
    names = os.fsencode("\0".join(chain.from_iterable(
        cast("Sequence[str]", f.leaves) for f in tree.folders)))  # the bytes os.stat would use
    head = json.dumps({
        "roots": tree.roots, "kinds": tree.kinds, "root_stats": tree.root_stats,
        "digest": tree.digest, "names_bytes": len(names),
        "folders": [[f.root, f.rel, *f.ident, len(f.leaves)] for f in tree.folders],
    }).encode()
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        prune(cache.parent)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(_MAGIC + len(head).to_bytes(8, "little") + head)
            out.write(names)
            out.write(tree.stats)
        os.replace(tmp, cache)
    except OSError:  # a cache only: a read-only home costs speed, not correctness
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _load(cache: Path) -> _Tree | None:
    try:
        data = cache.read_bytes()
    except OSError:
        return None
    try:
        if not data.startswith(_MAGIC):
            return None
        at = len(_MAGIC) + 8
        head: dict[str, Any] = json.loads(data[at:at + int.from_bytes(data[at - 8:at], "little")])
        at += int.from_bytes(data[at - 8:at], "little")
        n_names = int(head["names_bytes"])
        names = data[at:at + n_names].split(b"\0") if n_names else []
        tree = _Tree([str(r) for r in head["roots"]], [str(k) for k in head["kinds"]],
                     head["root_stats"], [], data[at + n_names:], str(head["digest"]))
        k = 0
        for root, rel, dev, ino, mtime, ctime, count in head["folders"]:
            tree.folders.append(_Folder(int(root), str(rel), (dev, ino, mtime, ctime),
                                        names[k:k + count]))
            k += count
        ok = k == len(names) and len(tree.stats) == 24 * k \
            and len(tree.kinds) == len(tree.roots) == len(tree.root_stats) \
            and all(0 <= f.root < len(tree.roots) for f in tree.folders) \
            and all(rs is not None or kind != "file"
                    for kind, rs in zip(tree.kinds, tree.root_stats, strict=True))
        return tree if ok else None
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def prune(cache_dir: Path) -> None:
    """Remove cache files unused for CACHE_MAX_AGE_S (roots that went away)."""
    old = time.time() - CACHE_MAX_AGE_S
    with os.scandir(cache_dir) as it:
        for e in it:
            with contextlib.suppress(OSError):
                if e.is_file(follow_symlinks=False) and e.stat().st_mtime < old:
                    os.unlink(e.path)
