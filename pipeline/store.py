"""The artifact store: immutable artifacts under a workspace, published atomically.

Layout (local path or fsspec URL)::

    <ws>/artifacts/<stage>/<key>/<port>.<ext>    published outputs
    <ws>/artifacts/<stage>/<key>/_lineage.json   written last: the commit marker
    <ws>/lineage/events.jsonl                     OpenLineage-style run events
    <ws>/.kdpipe.lock                             one `kdpipe run` at a time

Stages write into `<key>.partial/` (local scratch for remote workspaces). That directory survives
a killed run, so a stage can resume from the units it already finished; it only becomes
`<key>/` when complete, and `<key>/` only counts once `_lineage.json` exists. So nothing
half-written ever looks done, on a local disk or an object store.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from kdpipe.pipeline.errors import WorkspaceBusyError, WorkspaceError

LINEAGE = "_lineage.json"
PARTIAL = ".partial"
# `<key>.same-as.json` beside the artifacts: an early-cutoff alias (pipeline/dag.py): the stage
# re-ran under <key> and made the same bytes as the committed artifact the record names
ALIAS = ".same-as.json"
# OSErrors caused by the machine, not by kdpipe: reported as one line, exit 2 (errno names).
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
                                errno.EROFS})


@dataclass(frozen=True)
class Garbage:
    """Something `kdpipe gc` may delete."""

    kind: str    # partial | replaced | uncommitted | unreferenced
    path: str
    local: bool  # on this machine's disk (else in a remote workspace, through fsspec)


class Workspace:
    """A workspace directory or fsspec URL holding artifacts keyed by stage and cache key."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        """`create=False` leaves a missing workspace missing (commands that only read one check
        `require()`); either way a path under a regular file raises `WorkspaceError`."""
        url = str(root)
        self.fs, path = fsspec.core.url_to_fs(url)
        self.is_local = "file" in _protocols(self.fs)
        self.url = url
        self.root = Path(path).resolve() if self.is_local else Path(path)
        if self.is_local:
            _local_dir(self.root, url, create)
            self.local_root = self.root
        else:  # remote: scratch, lock and materialised inputs live in a local cache
            tag = hashlib.sha256(url.encode()).hexdigest()[:16]
            self.local_root = Path(os.environ.get("KDPIPE_CACHE", Path.home() / ".cache/kdpipe"))
            self.local_root = self.local_root / "workspaces" / tag
            self.local_root.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        if self.is_local:
            return self.root.is_dir()
        return bool(self.fs.isdir(str(self.root)))

    def require(self) -> Workspace:
        """This workspace, which must exist (`status`, `lineage` and `gc` never create one)."""
        if not self.exists():
            raise WorkspaceError(f"workspace not found: {self.url}")
        return self

    # -- paths ---------------------------------------------------------------------------
    def artifact_dir(self, stage: str, key: str) -> str:
        return f"{self.root}/artifacts/{stage}/{key}"

    def work_dir(self, stage: str, key: str) -> Path:
        return self.local_root / "artifacts" / stage / f"{key}{PARTIAL}"

    def events_path(self) -> str:
        return f"{self.root}/lineage/events.jsonl"

    # -- state ---------------------------------------------------------------------------
    def is_committed(self, stage: str, key: str) -> bool:
        if self.is_local:  # a stat, not an fsspec call: this is the no-op re-run hot path
            return os.path.exists(f"{self.artifact_dir(stage, key)}/{LINEAGE}")
        return bool(self.fs.exists(f"{self.artifact_dir(stage, key)}/{LINEAGE}"))

    def canonical_key(self, stage: str, key: str) -> str:
        """The key whose artifact holds `stage`'s outputs for `key`: `key` itself when committed,
        else the target of its early-cutoff alias when that one is committed, else `key`."""
        if self.is_committed(stage, key):
            return key
        path = f"{self.artifact_dir(stage, key)}{ALIAS}"
        if not (os.path.exists(path) if self.is_local else self.fs.exists(path)):
            return key
        with self.fs.open(path, "rb") as f:
            target = str(json.load(f)["same_as"])
        return target if self.is_committed(stage, target) else key

    def write_alias(self, stage: str, key: str, record: dict[str, Any]) -> None:
        """Commit `key` of `stage` as an alias of `record["same_as"]` (an early cutoff)."""
        if self.is_local:
            os.makedirs(f"{self.root}/artifacts/{stage}", exist_ok=True)
        self._write_atomic(f"{self.artifact_dir(stage, key)}{ALIAS}",
                           json.dumps(record, indent=1, sort_keys=True))

    def read_lineage(self, stage: str, key: str) -> dict[str, Any]:
        with self.fs.open(f"{self.artifact_dir(stage, key)}/{LINEAGE}", "rb") as f:
            return dict(json.load(f))

    def committed(self, stage: str) -> list[dict[str, Any]]:
        """Lineage records of every committed artifact of `stage`, newest first."""
        base = f"{self.root}/artifacts/{stage}"
        if not self.fs.exists(base):
            return []
        recs = []
        for d in self.fs.ls(base, detail=False):
            name = str(d).rstrip("/").rsplit("/", 1)[-1]
            if not name.endswith(PARTIAL) and self.fs.exists(f"{d}/{LINEAGE}"):
                recs.append(self.read_lineage(stage, name))
        return sorted(recs, key=lambda r: r.get("end", ""), reverse=True)

    def input_path(self, stage: str, key: str, filename: str) -> Path:
        """Local path of a published artifact file (downloaded once for remote workspaces)."""
        src = f"{self.artifact_dir(stage, key)}/{filename}"
        if self.is_local:
            return Path(src)
        dst = self.local_root / "inputs" / stage / key / filename
        if not dst.exists():
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get(src, str(tmp), recursive=True)
            os.replace(tmp, dst)
        rec = dst.parent / LINEAGE  # beside the copy, so loaders can check its digest
        if not rec.exists():
            self.fs.get(f"{self.artifact_dir(stage, key)}/{LINEAGE}", str(rec))
        return dst

    # -- publishing ----------------------------------------------------------------------
    def prepare(self, stage: str, key: str) -> Path:
        """The stage's work dir; removes a half-published final dir left by a killed run."""
        final = self.artifact_dir(stage, key)
        if self.fs.exists(final) and not self.is_committed(stage, key):
            self.fs.rm(final, recursive=True)
        if self.is_local:  # an old copy retired by `--force` when the run was killed
            for old in Path(final).parent.glob(f"{Path(final).name}.replaced-*"):
                shutil.rmtree(old, ignore_errors=True)
        wd = self.work_dir(stage, key)
        wd.mkdir(parents=True, exist_ok=True)
        return wd

    def publish(self, stage: str, key: str, workdir: Path, lineage: dict[str, Any]) -> str:
        """Move the finished work dir into place, then write the lineage record (the commit)."""
        final = self.artifact_dir(stage, key)
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if os.path.exists(final):  # `--force` re-ran a committed stage: retire the old copy
                old = f"{final}.replaced-{os.getpid()}"
                os.rename(final, old)  # uncommitted from here until the new lineage lands
                shutil.rmtree(old)
            os.rename(workdir, final)  # atomic on one POSIX filesystem
        else:
            self.fs.put(str(workdir), final, recursive=True)
            shutil.rmtree(workdir)
        self._write_atomic(f"{final}/{LINEAGE}", json.dumps(lineage, indent=1, sort_keys=True))
        return final

    def _write_atomic(self, path: str, text: str) -> None:
        if self.is_local:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe(path, text.encode())  # object stores: a single PUT is atomic

    def append_event(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True) + "\n"
        path = self.events_path()
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as f:  # one write() of one line: O_APPEND keeps lines whole
                f.write(line)
        else:
            old = self.fs.cat(path) if self.fs.exists(path) else b""
            self.fs.pipe(path, old + line.encode())

    # -- garbage (`kdpipe gc`; only under the lock, when no run can be using any of it) -------
    def leftovers(self) -> list[Garbage]:
        """What killed or failed runs left: `<key>.partial/` work dirs (their resumable work is
        lost when deleted), `<key>.replaced-<pid>/` copies retired by `--force`, and `<key>/`
        dirs without a lineage record (a publish cut short; the next run removes them too)."""
        base = self.local_root / "artifacts"
        found = [Garbage("partial", str(d), True) for d in sorted(base.glob(f"*/*{PARTIAL}"))]
        if self.is_local:
            found += [Garbage("replaced", str(d), True)
                      for d in sorted(base.glob("*/*.replaced-*"))]
            found += [Garbage("uncommitted", str(d), True) for d in sorted(base.glob("*/*"))
                      if d.is_dir() and "." not in d.name and not (d / LINEAGE).exists()]
        return found

    def unreferenced(self, current: dict[str, str]) -> list[Garbage]:
        """Committed artifacts of the stages in `current` (stage -> its key now) under any
        other key."""
        found = []
        for stage, key in current.items():
            base = f"{self.root}/artifacts/{stage}"
            if not self.fs.exists(base):
                continue
            for d in sorted(str(x).rstrip("/") for x in self.fs.ls(base, detail=False)):
                name = d.rsplit("/", 1)[-1]
                if name != key and "." not in name and self.is_committed(stage, name):
                    found.append(Garbage("unreferenced", self.artifact_dir(stage, name),
                                         self.is_local))
        return found

    def garbage_bytes(self, g: Garbage) -> int:
        if not g.local:
            return int(self.fs.du(g.path))
        return sum(os.lstat(os.path.join(d, f)).st_size
                   for d, _, files in os.walk(g.path) for f in files)

    def remove(self, g: Garbage) -> None:
        """Delete `g`, the lineage record first: a half-deleted artifact never looks committed."""
        if not g.local:
            self.fs.rm(f"{g.path}/{LINEAGE}")
            self.fs.rm(g.path, recursive=True)
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(g.path, LINEAGE))
        shutil.rmtree(g.path)

    # -- lock ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, wait: bool = False) -> Iterator[None]:
        """Exclusive workspace lock; the kernel drops it when the process dies (even SIGKILL)."""
        path = self.local_root / ".kdpipe.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
                raise WorkspaceBusyError(f"workspace {self.url} is in use by another kdpipe run "
                                         f"({holder}); wait for it or pass --wait") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%dT%H:%M:%S')}".encode(), 0)
            yield
        finally:
            os.close(fd)


def _local_dir(root: Path, url: str, create: bool) -> None:
    """Check (and with `create`, make) a local workspace folder: a regular file at `root` or
    above it is one clear error, not a NotADirectoryError from deep inside a run."""
    if root.is_dir():
        return
    blocker = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "is a file" if blocker == root else f"is under {blocker}, which is a file"
        raise WorkspaceError(f"workspace {url} {what}, not a folder; pick another --workspace")
    if create:
        root.mkdir(parents=True, exist_ok=True)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)
