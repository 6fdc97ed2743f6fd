"""The raw-input fingerprint: the value kdpipe always had, and every change to the files under a
root changes it, whether it is computed from scratch or answered from the stat cache (issue 16).
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kdpipe.pipeline import fingerprint as fp
from kdpipe.pipeline import statpass
from kdpipe.pipeline.hashing import fingerprint_tree

SETTLE_S = 0.06  # past the racy window set below: the folders' ctimes are then cacheable


def reference(roots: list[Path]) -> str:
    """fingerprint_tree as written before issue 16 (one scandir + stat walk, no cache)."""
    def walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
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

    h = hashlib.sha256()
    for r in roots:
        h.update(str(r.resolve()).encode() + b"\n")
        if r.is_file():
            st = r.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
            continue
        if not r.is_dir():
            h.update(b"<missing>\n")
            continue
        rows = [f"{rel}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for rel, e in walk(r)]
        h.update("\n".join(sorted(rows)).encode())
    return h.hexdigest()[:20]


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """fingerprint_tree with a cache for any tree size and a 50 ms racy window, checked
    against the reference on every call."""
    monkeypatch.setattr(fp, "RACY_NS", 50_000_000)
    cache = tmp_path / "cache"

    def call(*roots: Path) -> str:
        got = fp.fingerprint_digest(roots, cache, min_cached_files=0)[:20]
        assert got == fingerprint_tree(roots, cache_dir=tmp_path / "other") == reference(
            list(roots))
        return got
    return call


def world(root: Path) -> Path:
    """A small VoD-like tree: five sensor folders, a nested one, a file and a folder symlink."""
    for sensor, ext in (("lidar", "bin"), ("radar", "bin"), ("label_2", "txt"),
                        ("calib", "txt"), ("pose", "json")):
        (root / sensor).mkdir(parents=True)
        for i in range(5):
            (root / sensor / f"{i:06d}.{ext}").write_bytes(bytes([i]) * 32)
    (root / "radar_5frames" / "training").mkdir(parents=True)
    (root / "radar_5frames" / "training" / "000000.bin").write_bytes(b"r" * 16)
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (outside / "target.bin").write_bytes(b"t" * 8)
    (root / "linked.bin").symlink_to(outside / "target.bin")
    (root / "linked_dir").symlink_to(root / "lidar", target_is_directory=True)
    time.sleep(SETTLE_S)
    return root


def hit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on a scan from scratch fails the test: the value must come from the cache."""
    def no_scan(roots: list[str]) -> None:
        raise AssertionError("scanned from scratch")
    monkeypatch.setattr(fp, "_scan", no_scan)


def test_same_value_as_before_and_served_from_the_cache(
        tmp_path: Path, cached: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = world(tmp_path / "raw")
    first = cached(root)
    assert list((tmp_path / "cache").glob("*.bin"))
    hit_only(monkeypatch)
    assert fp.fingerprint_digest([root], tmp_path / "cache", 0)[:20] == first


CHANGES: dict[str, Callable[[Path], None]] = {
    "add": lambda r: (r / "lidar" / "000099.bin").write_bytes(b"new"),
    "remove": lambda r: (r / "radar" / "000002.bin").unlink(),
    "rename": lambda r: (r / "calib" / "000001.txt").rename(r / "calib" / "000101.txt"),
    "move between folders": lambda r: (r / "pose" / "000003.json").rename(
        r / "label_2" / "000003.json"),
    "nested add": lambda r: (r / "radar_5frames" / "training" / "000001.bin").write_bytes(b"x"),
    "nested remove": lambda r: (r / "radar_5frames" / "training" / "000000.bin").unlink(),
    "new subfolder with a file": lambda r: (
        (r / "camera").mkdir(), (r / "camera" / "000000.jpg").write_bytes(b"j")),
    "symlink target rewritten": lambda r: _rewrite(r.parent / f"{r.name}-outside" / "target.bin",
                                                    b"T" * 8),
    "symlink retargeted": lambda r: (
        (r / "linked.bin").unlink(), (r / "linked.bin").symlink_to(r / "lidar" / "000000.bin")),
    "folder symlink becomes a file symlink": lambda r: (
        (r / "linked_dir").unlink(), (r / "linked_dir").symlink_to(r / "pose" / "000000.json")),
}


def _rewrite(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    """Write in place (same inode, folder untouched) and give it `mtime_ns` (default: 1 s on)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))
    new = st.st_mtime_ns + 1_000_000_000 if mtime_ns is None else mtime_ns
    os.utime(path, ns=(st.st_atime_ns, new))


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_change_under_a_root_changes_the_fingerprint(
        change: str, tmp_path: Path, cached: Callable[..., str]) -> None:
    root = world(tmp_path / "raw")
    before = cached(root)
    CHANGES[change](root)
    assert cached(root) != before


def test_in_place_write_that_leaves_the_folder_alone(
        tmp_path: Path, cached: Callable[..., str]) -> None:
    """Same size, new mtime, the folder's own mtime/ctime unchanged: only the per-file stat
    can see it, and it does."""
    root = world(tmp_path / "raw")
    before = cached(root)
    folder = (root / "lidar").stat()
    _rewrite(root / "lidar" / "000003.bin", b"\xff" * 32)
    after = (root / "lidar").stat()
    assert (after.st_mtime_ns, after.st_ctime_ns) == (folder.st_mtime_ns, folder.st_ctime_ns)
    assert cached(root) != before


def test_size_change_with_the_mtime_put_back(tmp_path: Path, cached: Callable[..., str]) -> None:
    root = world(tmp_path / "raw")
    before = cached(root)
    f = root / "label_2" / "000004.txt"
    _rewrite(f, b"longer than it was before: 40 bytes long", f.stat().st_mtime_ns)
    assert cached(root) != before


def test_nothing_changed_or_only_what_it_never_counted(
        tmp_path: Path, cached: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads, an empty folder, a broken link: equal value (as before), and a later call is
    served from the cache again once the folder settled."""
    root = world(tmp_path / "raw")
    before = cached(root)
    (root / "lidar" / "000001.bin").read_bytes()
    assert cached(root) == before
    (root / "empty").mkdir()
    (root / "broken.bin").symlink_to(root / "nowhere.bin")
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "pipe")
    assert cached(root) == before
    time.sleep(SETTLE_S)
    assert cached(root) == before  # rescans (folders were racy), caches
    hit_only(monkeypatch)
    assert fp.fingerprint_digest([root], tmp_path / "cache", 0)[:20] == before


def test_a_broken_link_that_comes_alive(tmp_path: Path, cached: Callable[..., str]) -> None:
    root = world(tmp_path / "raw")
    (root / "later.bin").symlink_to(tmp_path / "later-target.bin")
    time.sleep(SETTLE_S)
    before = cached(root)
    (tmp_path / "later-target.bin").write_bytes(b"now")
    assert cached(root) != before


def test_roots_that_are_files_missing_or_several(tmp_path: Path,
                                                 cached: Callable[..., str]) -> None:
    root = world(tmp_path / "raw")
    single, missing = root / "lidar" / "000000.bin", tmp_path / "missing"
    roots = (root / "lidar", single, missing, root / "pose")
    before = cached(*roots)
    assert cached(*roots) == before
    _rewrite(single, b"\x01" * 32)
    changed = cached(*roots)
    assert changed != before
    missing.mkdir()
    assert cached(*roots) != changed
    assert cached(root / "pose", root / "lidar") != cached(root / "lidar", root / "pose")


def test_a_racy_folder_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder changed within RACY_NS of the scan may change again in the same clock tick
    with the same times: its listing is never trusted from the cache."""
    root = world(tmp_path / "raw")
    (root / "pose" / "fresh.json").write_bytes(b"{}")
    monkeypatch.setattr(fp, "RACY_NS", 3_600 * 10**9)
    fp.fingerprint_digest([root], tmp_path / "cache", 0)
    assert not list((tmp_path / "cache").glob("*.bin"))


def test_a_small_tree_writes_no_cache_and_a_bad_cache_is_ignored(
        tmp_path: Path, cached: Callable[..., str]) -> None:
    root = world(tmp_path / "raw")
    fp.fingerprint_digest([root], tmp_path / "small")
    assert not (tmp_path / "small").exists()  # below MIN_CACHED_FILES
    before = cached(root)
    (cache,) = (tmp_path / "cache").glob("*.bin")
    for junk in (b"", b"garbage", cache.read_bytes()[:-5], cache.read_bytes()[:200]):
        cache.write_bytes(junk)
        assert cached(root) == before


def test_cache_can_be_turned_off(tmp_path: Path, cached: Callable[..., str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = world(tmp_path / "raw")
    monkeypatch.setenv("KDPIPE_FINGERPRINT_CACHE", "off")
    cached(root)
    assert not (tmp_path / "cache").exists()


def test_default_cache_lives_under_kdpipe_cache(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDPIPE_CACHE", str(tmp_path / "kc"))
    monkeypatch.setattr(fp, "RACY_NS", 50_000_000)
    root = world(tmp_path / "raw")
    fp.fingerprint_digest([root], min_cached_files=0)
    assert len(list((tmp_path / "kc" / "fingerprints").glob("*.bin"))) == 1


def _many(root: Path) -> Path:
    """900 files in three folders, one of them a broken symlink; settled past the racy window."""
    for d in ("a", "b/c", "d"):
        (root / d).mkdir(parents=True)
        for i in range(300):
            (root / d / f"{i:05d}").write_bytes(b"x" * (i % 7))
    (root / "a" / "00150").unlink()
    (root / "a" / "00150").symlink_to(root / "gone")
    time.sleep(SETTLE_S)
    return root


@pytest.mark.parametrize("slow_stats", [True, False], ids=["threads", "one-thread"])
def test_many_files_in_threads_equal_the_reference(
        tmp_path: Path, cached: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
        slow_stats: bool) -> None:
    """Enough files for several stat tasks, one broken link among them; on threads when the
    first task's stats are slow (I/O-bound), in the calling thread when they are not."""
    monkeypatch.setattr(fp, "_CHUNK", 64)
    monkeypatch.setattr(statpass, "SLOW_STAT_S", 0.0 if slow_stats else 1.0)
    monkeypatch.setattr(statpass, "CAN_FORK", False)
    monkeypatch.setattr(statpass.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    pools = []

    class Spy(statpass.ThreadPoolExecutor):
        def __init__(self, workers: int) -> None:
            pools.append(workers)
            super().__init__(workers)
    monkeypatch.setattr(statpass, "ThreadPoolExecutor", Spy)
    root = _many(tmp_path / "raw")
    before = cached(root)
    assert cached(root) == before
    _rewrite(root / "b" / "c" / "00299", b"y" * (299 % 7))
    assert cached(root) != before
    assert bool(pools) == slow_stats and all(w == 2 for w in pools)


@pytest.mark.skipif(not statpass.CAN_FORK, reason="forked stat children run on Linux only")
@pytest.mark.parametrize(("child_fails", "procs"), [(False, ""), (True, ""), (False, "1")],
                         ids=["children", "a-child-fails", "KDPIPE_STAT_PROCS=1"])
def test_many_files_in_forked_processes_equal_the_reference(
        tmp_path: Path, cached: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
        child_fails: bool, procs: str) -> None:
    """Fast stats split over this process and forked children give the same value, cached or
    not; a child that fails (here: every stat in a child raises) has its share redone here;
    KDPIPE_STAT_PROCS=1 keeps every stat in the calling thread."""
    monkeypatch.setattr(fp, "_CHUNK", 64)
    monkeypatch.setattr(statpass, "SLOW_STAT_S", 1.0)
    monkeypatch.setattr(statpass, "FORK_MIN_STATS", 200)
    monkeypatch.setattr(statpass.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    forks, parent = [], os.getpid()
    real_fork, real_task = os.fork, statpass.stat_task

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    def task(t: statpass.Task) -> bytes:
        if child_fails and os.getpid() != parent:
            raise OSError("a child that fails")
        return real_task(t)
    monkeypatch.setattr(statpass.os, "fork", fork)
    monkeypatch.setattr(statpass, "stat_task", task)
    monkeypatch.setenv("KDPIPE_STAT_PROCS", procs)
    root = _many(tmp_path / "raw")
    before = cached(root)   # a full scan: 900 stats, 64 probed, 3 processes for the rest
    assert cached(root) == before
    _rewrite(root / "d" / "00299", b"y" * (299 % 7))
    assert cached(root) != before
    if procs == "1":
        assert not forks
    else:
        assert forks and len(forks) % 2 == 0  # two children per stat pass


def test_split_keeps_order_and_balances() -> None:
    tasks: list[statpass.Task] = [(f"f{i}", ["n"] * k) for i, k in enumerate((5, 1, 1, 3, 10))]
    parts = statpass.split(tasks, 3)
    assert [t for p in parts for t in p] == tasks
    assert [sum(len(t[1]) for t in p) for p in parts] == [7, 3, 10]
    assert statpass.split([], 2) == [[], []]


def test_rerun_benchmark_runs_cached_and_sees_an_in_place_write(tmp_path: Path) -> None:
    """benchmarks/rerun.py end to end, small: every no-op run is cached (cache on and off),
    and its in-place rewrite (folder mtime untouched) re-runs the source."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "rerun.py"
    out = subprocess.run([sys.executable, str(script), "--frames", "40", "--repeats", "1"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "KDPIPE_BENCH_TMP": str(tmp_path)})
    doc = json.loads(out.stdout)
    assert doc["layout"] == "vod" and doc["raw_files"] == 200
    change = doc["in_place_change"]
    assert change["file"].startswith(("lidar/", "radar/", "label_2/", "calib/", "pose/"))
    assert change["same_size"] and change["folder_mtime_unchanged"] and change["detected"]
