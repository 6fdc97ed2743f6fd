"""The fingerprint prefetched by a forked child before the CLI's imports (issue 16): the plan gets
the child's value only for exactly the roots it asked for, a file written in place before the
command started is seen, and a late, failed or unwanted child is never trusted or left behind.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdpipe.pipeline import fingerprint as fp
from kdpipe.pipeline import hashing, prefetch, statpass

pytestmark = pytest.mark.skipif(not statpass.CAN_FORK, reason="prefetch forks (Linux only)")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A KDPIPE_CACHE of its own, a 50 ms racy window, no children left from another test."""
    monkeypatch.setenv("KDPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KDPIPE_PREFETCH", raising=False)
    monkeypatch.delenv("KDPIPE_FINGERPRINT_CACHE", raising=False)
    monkeypatch.setattr(fp, "RACY_NS", 50_000_000)
    monkeypatch.setattr(prefetch, "_USED", [])
    prefetch.cancel()
    yield tmp_path
    prefetch.cancel()


def tree(root: Path, n: int = 60) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"{i:06d}.bin").write_bytes(bytes([i % 256]) * 32)
    time.sleep(0.06)  # past the racy window: the folder is cacheable
    return root


def remembered(root: Path, wf: Path) -> str:
    """What a first `kdpipe run` leaves: a stat cache for `root`, and the workflow's hint."""
    fp.fingerprint_digest([root], min_cached_files=0)  # the cache file (the CLI's needs 10k)
    value = hashing.fingerprint_tree([root])
    prefetch.remember(wf, [])
    assert list((wf.parent / "cache" / "fingerprints" / "hints").glob("*.json"))
    return value


def rewrite_in_place(path: Path) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"\xff" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def no_computing_here(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kw: object) -> str:
        raise AssertionError("computed in the parent")
    monkeypatch.setattr(hashing, "fingerprint_digest", boom)


def test_the_child_computes_the_value_and_sees_an_in_place_write(
        env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, wf = tree(env / "raw"), env / "wf.toml"
    before = remembered(root, wf)
    rewrite_in_place(root / "000030.bin")  # same size, folder untouched
    prefetch.start(wf, [])
    assert len(prefetch._PENDING) == 1
    with monkeypatch.context() as m:
        no_computing_here(m)
        after = hashing.fingerprint_tree([root])
    assert not prefetch._PENDING
    assert after != before
    assert after == fp.fingerprint_digest([root], env / "fresh", min_cached_files=10**9)[:20]


def test_other_roots_or_overrides_get_no_child_value_and_children_are_reaped(
        env: Path) -> None:
    root, other, wf = tree(env / "raw"), tree(env / "other"), env / "wf.toml"
    remembered(root, wf)
    prefetch.start(wf, ["ingest.root=elsewhere"])  # another hint key: nothing to prefetch
    assert not prefetch._PENDING
    prefetch.start(wf, [])
    (pid, _, _), = prefetch._PENDING.values()
    assert hashing.fingerprint_tree([other]) == fp.fingerprint_digest(
        [other], env / "fresh", min_cached_files=10**9)[:20]
    assert len(prefetch._PENDING) == 1  # still there: `other` was computed in place
    prefetch.cancel()
    assert not prefetch._PENDING
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_late_or_failed_child_is_not_trusted(env: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root, wf = tree(env / "raw"), env / "wf.toml"
    value = remembered(root, wf)
    monkeypatch.setattr(prefetch, "MAX_AGE_S", 0.0)  # e.g. the command waited for a lock
    prefetch.start(wf, [])
    assert prefetch._PENDING
    assert prefetch.take(fp.resolve_roots([root])) is None
    monkeypatch.setattr(prefetch, "MAX_AGE_S", 60.0)

    def fails(roots: list[str]) -> str:
        raise OSError("disk went away")
    with monkeypatch.context() as m:
        m.setattr(fp, "fingerprint_digest", fails)  # what the forked child will call
        prefetch.start(wf, [])
    assert prefetch.take(fp.resolve_roots([root])) is None
    assert hashing.fingerprint_tree([root]) == value


def test_switched_off_or_without_a_stat_cache_nothing_is_forked(
        env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, wf = tree(env / "raw"), env / "wf.toml"
    remembered(root, wf)
    monkeypatch.setenv("KDPIPE_PREFETCH", "off")
    prefetch.start(wf, [])
    assert not prefetch._PENDING
    monkeypatch.delenv("KDPIPE_PREFETCH")
    for f in (env / "cache" / "fingerprints").glob("*.bin"):
        f.unlink()
    prefetch.start(wf, [])
    assert not prefetch._PENDING


def test_the_cli_reruns_after_an_in_place_write_with_a_prefetched_fingerprint(
        tmp_path: Path) -> None:
    """Through `kdpipe run` (10,000 raw files: the CLI's stat-cache threshold): the first run
    leaves a hint, an in-place write re-runs the source, the next run is a no-op."""
    from kdpipe.testing import toy_workflow

    raw = tmp_path / "raw"
    (raw / "lidar").mkdir(parents=True)  # the toy source reads top-level files only: none
    for i in range(fp.MIN_CACHED_FILES):
        (raw / "lidar" / f"{i:06d}.bin").write_bytes(i.to_bytes(4, "little") * 8)
    time.sleep(fp.RACY_NS / 1e9 + 0.1)  # the folder must be old enough to be cached
    wf = toy_workflow(tmp_path / "wf.toml", raw)
    env = {**os.environ, "KDPIPE_CACHE": str(tmp_path / "cache")}
    env.pop("KDPIPE_PREFETCH", None)

    def run() -> dict[str, str]:
        import json
        res = subprocess.run([sys.executable, "-m", "kdpipe", "run", "-w", str(wf),
                              "--workspace", str(tmp_path / "ws"), "--scheduler", "sync",
                              "--json"],
                             capture_output=True, text=True, check=True, env=env)
        return {s["stage"]: s["status"] for s in json.loads(res.stdout)["stages"]}

    assert set(run().values()) == {"ran"}
    assert list((tmp_path / "cache" / "fingerprints" / "hints").glob("*.json"))
    assert set(run().values()) == {"cached"}
    rewrite_in_place(raw / "lidar" / "005000.bin")
    assert run()["toy-source"] == "ran"
    assert set(run().values()) == {"cached"}
