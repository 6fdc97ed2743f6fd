"""Cache keys and content digests.

Two levels, after hamilton: the *key* is what was asked for (stage name, explicit version, canonical
config, upstream keys, raw-input fingerprint) and is cheap to compute before anything runs; the
*digest* is what was produced (sha256 of bytes) and only goes into lineage. Chaining keys, not
digests, means deciding "up to date" never re-reads multi-GB Zarr stores.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kdpipe.pipeline import prefetch
from kdpipe.pipeline.fingerprint import fingerprint_digest, resolve_roots

KEY_CHARS = 20  # 80 bits: collisions are not a practical concern for one workspace
_CHUNK_BYTES = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys and no whitespace, so equal dicts give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def stage_key(stage: str, version: int, config: Mapping[str, Any],
              input_keys: Mapping[str, str], fingerprint: str | None = None, *,
              seed: int | None = None) -> str:
    """Cache key of one stage run; independent of dict order, source code and wall time.
    `seed`: the workflow seed, for stages whose outputs depend on it (None: not part of it)."""
    payload: dict[str, Any] = {"stage": stage, "version": version, "config": dict(config),
                               "inputs": dict(sorted(input_keys.items())),
                               "fingerprint": fingerprint}
    if seed is not None:
        payload["seed"] = seed
    return hashlib.sha256(canonical_json(payload)).hexdigest()[:KEY_CHARS]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _walk_files(root: Path) -> Iterable[tuple[str, os.DirEntry[str]]]:
    stack = [(root, "")]
    while stack:
        d, prefix = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                rel = f"{prefix}{e.name}"
                if e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), rel + "/"))
                elif e.is_file(follow_symlinks=True):
                    yield rel, e


def digest_path(path: str | os.PathLike[str], known: Mapping[str, str] | None = None) -> str:
    """sha256 of a file, or of a directory tree as sorted (relative path, file sha256) pairs.

    `known`: relative path -> sha256 of files whose digest was taken while they were written
    (ingest's shard writer), so they are not read back."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    known = known or {}
    h = hashlib.sha256()
    for rel, e in sorted(_walk_files(p), key=lambda t: t[0]):
        sha = known.get(rel) or sha256_file(e.path)
        h.update(rel.encode() + b"\0" + sha.encode() + b"\n")
    return h.hexdigest()


def fingerprint_tree(roots: Iterable[str | os.PathLike[str]], *,
                     cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Cheap change detector for raw inputs: (relative path, size, mtime_ns) of every file.

    DVC's state-DB idea: stat, do not read. Content digests of raw files are taken while a stage
    reads them and recorded in lineage. A stat per file still runs every time (an in-place write
    changes nothing but the file); folder listings and the hashing come from a cache when
    nothing moved (`kdpipe.pipeline.fingerprint`).
    """
    resolved = resolve_roots(roots)
    if cache_dir is None:  # started before the CLI's imports, when it was (pipeline/prefetch.py)
        hit = prefetch.take(resolved)
        if hit is not None:
            return hit[:KEY_CHARS]
    return fingerprint_digest(resolved, cache_dir)[:KEY_CHARS]
