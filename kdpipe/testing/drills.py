"""Crash drill: SIGKILL `kdpipe run` at seeded random moments, re-run, compare every artifact.

DESIGN.md promises that "a crash or kill at any moment, followed by a re-run, yields exactly what
an uninterrupted run yields". This module proves it the way the drill in `benchmarks/crash_drill.py`
and `tests/drills/test_crash_drill.py` use it:

1. an uninterrupted reference run of a small SCKD workflow (ingest, teacher-train, teacher-label,
   pseudo-label, distill; tiny models, a few epochs so the per-epoch `train_state.pt` path runs);
2. chains: in a fresh workspace, draw a few kill targets (seeded, weighted, put in pipeline
   order); for each, start `kdpipe run` as a subprocess, wait until the target stage has started
   in *this* process (its START event), sleep a seeded fraction of that stage's reference
   duration (or wait for its first finished unit / next `train_state.pt` checkpoint) and
   SIGKILL it; the next target resumes the same workspace; then run to completion;
3. after each chain: every artifact file's sha256 and every lineage output digest equal the
   reference's, no `.partial`/`.tmp` leftovers, and the lock was free at once after every kill.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

from kdpipe.config import toml_value
from kdpipe.testing import TINY_DETECTOR

STAGES = ("ingest", "teacher-train", "teacher-label", "pseudo-label", "distill")
# Kill targets and their weights: stages by time share, the two training loops' checkpoint
# writes explicitly, and process start-up (planning, fingerprinting, taking the lock).
# `@unit`: right after the stage's first finished unit (ingest group, inference part).
TARGETS = {"startup": 1, "ingest": 2, "ingest@unit": 2, "teacher-train": 2,
           "teacher-train@checkpoint": 2, "teacher-label": 2, "teacher-label@unit": 2,
           "pseudo-label": 1, "distill": 2, "distill@checkpoint": 3}
KDPIPE = [sys.executable, "-m", "kdpipe"]


def drill_workflow(path: Path, world: Path, *, epochs: int = 3, block_frames: int = 4) -> Path:
    """The drill's workflow: small groups (many ingest / inference tasks), tiny models."""
    det = toml_value(TINY_DETECTOR)
    # the student takes the teacher's grid and channels; its backbone and head are set here
    student = toml_value({k: v for k, v in TINY_DETECTOR.items()
                          if k not in ("pillar_size_m", "encoder_channels")})
    path.write_text(f"""[workflow]
name = "crash-drill"
stages = {toml_value(list(STAGES))}
seed = 1
[ingest]
format = "vod"
roots = [{toml_value(str(world))}]
block_frames = {block_frames}
[teacher-train]
max_frames = 8
detector = {det}
[teacher-train.optim]
epochs = {epochs}
batch_size = 4
lr_max = 0.003
[teacher-label]
batch_size = 2
[distill]
detector = {student}
[distill.optim]
epochs = {epochs}
batch_size = 4
lr_max = 0.003
""")
    return path


def artifact_digests(ws: Path) -> dict[str, str]:
    """sha256 of every file under `ws/artifacts` except the lineage records (they hold times)."""
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ws / "artifacts").rglob("*"))
            if p.is_file() and p.name != "_lineage.json"}


def lineage_digests(ws: Path) -> dict[str, str]:
    """stage/key/port -> the output digest each committed artifact's lineage records."""
    out = {}
    for rec_path in sorted((ws / "artifacts").glob("*/*/_lineage.json")):
        rec = json.loads(rec_path.read_text())
        for port, o in rec["outputs"].items():
            out[f"{rec['stage']}/{rec['key']}/{port}"] = o["digest"]
    return out


def leftovers(ws: Path) -> list[str]:
    """Work dirs, temp files and retired copies that a finished run must not leave behind."""
    pats = ("*.partial", "*.tmp", "*.tmp-*", "*.replaced-*")
    return sorted(str(p.relative_to(ws)) for pat in pats for p in (ws / "artifacts").rglob(pat))


def committed(ws: Path, stage: str) -> bool:
    return any((ws / "artifacts" / stage).glob("*/_lineage.json"))


def _events(ws: Path) -> list[dict[str, Any]]:
    path = ws / "lineage" / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line from a killed writer is tolerated
            continue
    return out


def running_stage(events: list[dict[str, Any]]) -> str | None:
    """The stage whose last event is START (the one a kill interrupts), else None."""
    state: dict[str, str] = {}
    for e in events:
        state[e["job"]["name"]] = e["eventType"]
    started = [s for s, t in state.items() if t == "START"]
    return started[-1] if started else None


def stage_seconds(ws: Path) -> dict[str, float]:
    """START -> COMPLETE seconds per stage from the run events (the reference timeline)."""
    from datetime import datetime

    start: dict[str, datetime] = {}
    out: dict[str, float] = {}
    for e in _events(ws):
        t = datetime.fromisoformat(e["eventTime"])
        if e["eventType"] == "START":
            start[e["job"]["name"]] = t
        elif e["eventType"] == "COMPLETE":
            out[e["job"]["name"]] = (t - start[e["job"]["name"]]).total_seconds()
    return out


def run_cmd(wf: Path, ws: Path, scheduler: str) -> list[str]:
    return [*KDPIPE, "run", "--workflow", str(wf), "--workspace", str(ws),
            "--scheduler", scheduler, "--json"]


def run_to_completion(wf: Path, ws: Path, scheduler: str, timeout_s: float = 900) -> dict[str, Any]:
    res = subprocess.run(run_cmd(wf, ws, scheduler), capture_output=True, text=True,
                         timeout=timeout_s, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"kdpipe run exited {res.returncode}: {res.stderr.strip()[-2000:]}")
    return dict(json.loads(res.stdout))


def _workdir(ws: Path, stage: str) -> Path | None:
    return next((ws / "artifacts" / stage).glob("*.partial"), None)


def _state_mtime(ws: Path, stage: str) -> int:
    wd = _workdir(ws, stage)
    p = wd / "train_state.pt" if wd else None
    return p.stat().st_mtime_ns if p is not None and p.exists() else 0


def _units_done(ws: Path, stage: str) -> int:
    wd = _workdir(ws, stage)
    return len([*wd.glob("_parts/*/*/_done"), *wd.glob("_parts/*.parquet")]) if wd else 0


def kill_once(wf: Path, ws: Path, scheduler: str, target: str, delay_s: float,
              timeout_s: float = 600) -> dict[str, Any]:
    """Start `kdpipe run`, wait for `target`, sleep `delay_s`, SIGKILL. What was interrupted."""
    n_before = len(_events(ws))
    stage, _, point = target.partition("@")
    proc = subprocess.Popen(run_cmd(wf, ws, scheduler), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        if stage != "startup":
            while proc.poll() is None and not any(
                    e["eventType"] == "START" and e["job"]["name"] == stage
                    for e in _events(ws)[n_before:]):
                time.sleep(0.005)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stage {stage} never started")
        if point == "checkpoint":  # the next train_state.pt replace (the per-epoch checkpoint)
            seen = _state_mtime(ws, stage)
            while proc.poll() is None and _state_mtime(ws, stage) == seen:
                time.sleep(0.001)
        elif point == "unit":  # the first finished unit (ingest group, inference part)
            while proc.poll() is None and not _units_done(ws, stage):
                time.sleep(0.002)
        time.sleep(delay_s)
        if proc.poll() is not None:
            return {"target": target, "killed": False, "stage": None}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = _events(ws)[n_before:]
    hit = running_stage(events) or ("startup" if not events else "between stages")
    wd = _workdir(ws, hit) if hit in STAGES else None
    return {"target": target, "killed": True, "stage": hit, "delay_s": round(delay_s, 3),
            "checkpoint_on_disk": bool(wd and (wd / "train_state.pt").exists())}


def lock_free(ws: Path) -> bool:
    """Whether the workspace lock can be taken right now (it must be, after a SIGKILL)."""
    from kdpipe.pipeline.errors import WorkspaceBusyError
    from kdpipe.pipeline.store import Workspace

    try:
        with Workspace(ws).lock():
            return True
    except WorkspaceBusyError:
        return False


def compare(ws: Path, ref: Path) -> dict[str, Any]:
    got, want = artifact_digests(ws), artifact_digests(ref)
    lin_got, lin_want = lineage_digests(ws), lineage_digests(ref)
    bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    bad += sorted(f"lineage:{k}" for k in set(lin_got) | set(lin_want)
                  if lin_got.get(k) != lin_want.get(k))
    return {"files": len(want), "artifacts": len(lin_want), "mismatches": bad,
            "leftovers": leftovers(ws)}


class DrillOptions(TypedDict, total=False):
    """How `crash_drill` runs (every key optional).

    seed: draws the kill targets and moments (default 0).
    scheduler: of every `kdpipe run` (default "local:2").
    kills_per_chain: kills before a chain is run to completion and compared (default 3).
    epochs: of the drill workflow's training stages (default 3).
    targets: a fixed order of kill targets (keys of TARGETS) instead of seeded random choices.
    """

    seed: int
    scheduler: str
    kills_per_chain: int
    epochs: int
    targets: Sequence[str]


def crash_drill(tmp: Path, world: Path, *, kills: int,
                log: Callable[[dict[str, Any]], Any] | None = None,
                **options: Unpack[DrillOptions]) -> dict[str, Any]:
    """Run the drill; returns the JSON report (see the module docstring). `log` gets each
    kill's record as it happens."""
    seed, scheduler = options.get("seed", 0), options.get("scheduler", "local:2")
    kills_per_chain, targets = options.get("kills_per_chain", 3), options.get("targets", ())
    rng = random.Random(seed)  # noqa: S311 -- seeded kill moments, not cryptography
    wf = drill_workflow(tmp / "drill.toml", world, epochs=options.get("epochs", 3))
    ref = tmp / "reference"
    t0 = time.perf_counter()
    run_to_completion(wf, ref, scheduler)
    ref_s = time.perf_counter() - t0
    seconds = stage_seconds(ref)
    report: dict[str, Any] = {
        "benchmark": "crash_drill", "scheduler": scheduler, "seed": seed, "kills": 0,
        "kills_by_stage": {}, "kills_with_checkpoint_on_disk": 0, "missed": 0, "chains": 0,
        "artifacts_compared": 0, "files_compared": 0, "mismatches": [], "leftovers": [],
        "lock_held_after_kill": 0, "reference_run_s": round(ref_s, 1),
        "reference_stage_s": {k: round(v, 2) for k, v in seconds.items()}, "kill_log": []}
    chain = 0
    order = ["startup", *STAGES]
    while report["kills"] < kills and chain < 4 * kills:  # (bounded if kills keep missing)
        ws = tmp / f"chain{chain:03d}"
        if targets:
            plan = [targets[(report["kills"] + i) % len(targets)] for i in range(kills_per_chain)]
        else:  # drawn by weight, then run in pipeline order so every stage gets its share
            plan = sorted(rng.choices(list(TARGETS), list(TARGETS.values()), k=kills_per_chain),
                          key=lambda t: order.index(t.partition("@")[0]))
        for target in plan:
            stage = target.partition("@")[0]
            if stage != "startup" and committed(ws, stage):
                continue  # an earlier kill of this chain landed after it finished
            span = 2.0 if stage == "startup" else 1.2 * seconds.get(stage, 1.0)
            delay = rng.uniform(0, 0.05) if "@" in target else rng.uniform(0, span)
            rec = kill_once(wf, ws, scheduler, target, delay)
            rec["chain"] = chain
            report["kill_log"].append(rec)
            if log:
                log(rec)
            if not rec["killed"]:
                report["missed"] += 1
                break
            report["kills"] += 1
            by = report["kills_by_stage"]
            by[rec["stage"]] = by.get(rec["stage"], 0) + 1
            report["kills_with_checkpoint_on_disk"] += rec["checkpoint_on_disk"]
            if not lock_free(ws):
                report["lock_held_after_kill"] += 1
            if report["kills"] >= kills:
                break
        run_to_completion(wf, ws, scheduler)
        cmp = compare(ws, ref)
        report["chains"] += 1
        report["artifacts_compared"] += cmp["artifacts"]
        report["files_compared"] += cmp["files"]
        report["mismatches"] += [f"chain{chain}: {m}" for m in cmp["mismatches"]]
        report["leftovers"] += [f"chain{chain}: {m}" for m in cmp["leftovers"]]
        chain += 1
    return report
