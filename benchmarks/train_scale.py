"""Training at scale on this machine: memory, the data path against the model, data parallelism.

    python benchmarks/train_scale.py [--quick] [--frames 64] [--epochs 3]

Figures (JSON on stdout), each against its baseline measured in the same run:
- rss_ratio_10x: peak RSS of `teacher-train` (a fresh process, loader workers included) on a
  store of 10x the frames (the same world ingested as 10 sources) over 1x. Goal < 1.3.
- epoch_vs_bare_steps: one epoch of `fit` (store reads, augmentation and collation in one
  DataLoader worker, the model on one thread) over the sum of the bare model steps (forward,
  backward, optimiser) on the same batches already in memory. Goal <= 1.10.
- ddp_2_vs_1: frames/s of teacher-train with 2 gloo ranks over 1 rank, one thread each: the
  median epoch time each run recorded in lineage, warm-up epoch left out. Goal >= 1.8.
- reads_vs_fromfile: random-order store reads against per-frame `np.fromfile` of the raw files
  (`benchmarks/store_reads.py` when present). Goal >= 1.0.
Threads are pinned (one per process) so nothing is oversubscribed; the load average is recorded.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / torch start their pools

CHILD = """
import json, resource, sys
from kdpipe.api import run_workflow
stages = sys.argv[3].split(",") if sys.argv[3] else []
run_workflow(sys.argv[1], sys.argv[2], stages, scheduler="sync", overrides=sys.argv[4:])
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rss_mb": (me + kids) / 1024}))
"""
TINY = ('{ pillar_size_m = 0.8, encoder_channels = 16, backbone_filters = [16, 32], '
        'upsample_filters = [16, 16], head_channels = 16 }')


def workflow(path: Path, roots: list[Path], args: argparse.Namespace) -> Path:
    names = [f"src{i}" for i in range(len(roots))]
    path.write_text(f"""[workflow]
stages = ["ingest", "teacher-train"]
seed = 0
[ingest]
format = "vod"
roots = {json.dumps([str(r) for r in roots])}
names = {json.dumps(names)}
[teacher-train]
splits = ["train", "val", "unlabeled"]
detector = {TINY if args.tiny else "{}"}
[teacher-train.optim]
epochs = {args.epochs}
batch_size = {args.batch}
loader_workers = 1
""")
    return path


def child(wf: Path, ws: Path, *overrides: str, stages: str = "") -> tuple[float, dict[str, Any]]:
    """Run `stages` (default: all) of `wf` in a fresh process: (wall s, its peak RSS)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(wf), str(ws), stages, *overrides],
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout.strip().splitlines()[-1])


def epoch_vs_bare(ws: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One epoch of fit against the bare model steps on the same batches."""
    import torch

    from kdpipe.datasets.store import IngestStore
    from kdpipe.models import create_model
    from kdpipe.models.batch import target_tensors
    from kdpipe.runtime.frames import FrameSpec, load_train_frames
    from kdpipe.runtime.model_data import targets_from_table
    from kdpipe.runtime.train_data import BatchDataset, BatchPlan
    from kdpipe.runtime.train_loop import OptimConfig, augment, fit

    torch.set_num_threads(1)
    art = next(p for p in (ws / "artifacts/ingest").iterdir() if (p / "_lineage.json").exists())
    store = IngestStore.from_artifact(art)
    det = {"pillar_size_m": 0.8, "encoder_channels": 16, "backbone_filters": [16, 32],
           "upsample_filters": [16, 16], "head_channels": 16} if args.tiny else {}
    model = create_model("sckd-teacher", **det)
    frames = store.select_frames(["train", "val", "unlabeled"])
    spec = FrameSpec(model.modalities, "radar", model.config.point_cloud_range_m)
    data = load_train_frames(store, frames, spec,
                             targets_from_table(store.read_boxes(), model.classes))
    cfg = OptimConfig(epochs=1, batch_size=args.batch, loader_workers=1, device="cpu")
    plan = BatchPlan(len(data), args.batch, 0)  # fit's epoch 0 sees exactly these batches
    ds = BatchDataset(data, plan, functools.partial(augment, cfg=cfg), model.modalities)
    ready = [ds[(0, s)] for s in range(plan.steps)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.perf_counter()
    for batch, targets, _ in ready:  # the bare steps: data already collated in memory
        loss = model.loss(model(batch), target_tensors(targets, torch.device("cpu")))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    bare = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as wd:
        model = create_model("sckd-teacher", **det)
        t0 = time.perf_counter()
        fit(model, data, cfg, workdir=Path(wd), seed=0, device=torch.device("cpu"))
        epoch = time.perf_counter() - t0
    return {"frames": len(data), "epoch_s": round(epoch, 2), "bare_steps_s": round(bare, 2),
            "epoch_vs_bare_steps": round(epoch / bare, 3), "goal": "<= 1.10",
            "met": epoch / bare <= 1.10}


def ddp(wf: Path, tmp: Path, epochs: int) -> dict[str, Any]:
    """Epoch wall time of teacher-train with 1 and 2 ranks (one thread each, no loader
    workers), as the training process recorded it in lineage (`facts.world.epoch_seconds`);
    the first epoch (warm-up: allocator, page faults) is left out."""
    per_epoch = {}
    for nproc in (1, 2):
        ws = tmp / f"ddp{nproc}"
        child(wf, ws, stages="ingest")
        child(wf, ws, f"teacher-train.launch.nproc={nproc}",
              "teacher-train.launch.threads_per_rank=1", f"teacher-train.optim.epochs={epochs}",
              "teacher-train.optim.loader_workers=0")
        art = next(p for p in (ws / "artifacts/teacher-train").iterdir()
                   if (p / "_lineage.json").exists())
        secs = json.loads((art / "_lineage.json").read_text())["facts"]["world"]["epoch_seconds"]
        per_epoch[nproc] = sorted(secs[1:])[len(secs[1:]) // 2]  # median after warm-up
    ratio = per_epoch[1] / per_epoch[2]
    return {"epoch_s_1_rank": per_epoch[1], "epoch_s_2_ranks": per_epoch[2],
            "ddp_2_vs_1": round(ratio, 3), "goal": ">= 1.8", "met": ratio >= 1.8}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small world, under 5 minutes")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny detector, not 'small'")
    ap.add_argument("--skip-ddp", action="store_true")
    ap.add_argument("--only-ddp", action="store_true")
    args = ap.parse_args()
    n = args.frames or (32 if args.quick else 96)
    from kdpipe.datasets.synth import write_vod

    out: dict[str, Any] = {"benchmark": "train_scale", "frames_1x": n,
                           "load_avg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(dir=os.environ.get("KDPIPE_BENCH_TMP")) as d:
        tmp = Path(d)
        write_vod(tmp / "world", n, seed=0)
        wf1 = workflow(tmp / "wf1.toml", [tmp / "world"], args)
        wf10 = workflow(tmp / "wf10.toml", [tmp / "world"] * 10, args)
        if args.only_ddp:
            out["ddp"] = ddp(wf1, tmp, args.epochs)
            print(json.dumps(out, indent=1))
            return
        # ingest first, in its own process: the figure is the training process's memory
        child(wf1, tmp / "ws1", stages="ingest")
        child(wf10, tmp / "ws10", stages="ingest")
        _, r1 = child(wf1, tmp / "ws1", "teacher-train.optim.epochs=1")
        _, r10 = child(wf10, tmp / "ws10", "teacher-train.optim.epochs=1")
        out["rss"] = {"rss_mb_1x": round(r1["rss_mb"]), "rss_mb_10x": round(r10["rss_mb"]),
                      "rss_ratio_10x": round(r10["rss_mb"] / r1["rss_mb"], 3),
                      "goal": "< 1.3", "met": r10["rss_mb"] / r1["rss_mb"] < 1.3}
        out["epoch"] = epoch_vs_bare(tmp / "ws1", args)
        out["ddp"] = ddp(wf1, tmp, args.epochs) if not args.skip_ddp else "skipped"
        reads = Path(__file__).with_name("store_reads.py")
        if reads.exists():
            res = subprocess.run([sys.executable, str(reads), "--frames", str(n)],
                                 capture_output=True, text=True, check=False)
            out["reads"] = json.loads(res.stdout) if res.returncode == 0 else {
                "error": res.stderr.strip().splitlines()[-1:]}
    out.update(load_avg_after=os.getloadavg(), threads=os.environ["OMP_NUM_THREADS"],
               machine={"python": platform.python_version(), "cpus": os.cpu_count()},
               date=time.strftime("%Y-%m-%d"))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
