"""Decode + rotated NMS: the batched, on-device path vs the per-frame one it replaced. JSON out.

    OMP_NUM_THREADS=1 python benchmarks/decode_nms.py --frames 32 --top-k 100

Head maps of the "small" preset's grid, random but shaped like a detector's (a low background,
sparse peaks, car-to-pedestrian sized boxes, clusters whose neighbours overlap). The baseline is
`kdpipe.models._reference` (the previous code, kept as the tests' oracle), timed in the same run
on the same maps; each configuration also checks the two give the same boxes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from kdpipe.models import DetectorConfig, decode_boxes
from kdpipe.models._reference import decode_boxes_reference


def head_maps(cfg: DetectorConfig, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) heatmap logits and (B, 8, H, W) box codes with ~300 peaks per frame."""
    g = torch.Generator().manual_seed(seed)
    n_cls = len(cfg.classes)
    w, h = (s // cfg.out_stride for s in cfg.grid_size)
    heat = torch.randn(frames, n_cls, h, w, generator=g) - 4.0  # background ~ sigmoid(-4)
    # Objects as 3x3 blobs, so NMS sees the duplicates a real head's neighbouring peaks give.
    n_obj = 100
    cy = torch.randint(1, h - 1, (frames, n_obj), generator=g)
    cx = torch.randint(1, w - 1, (frames, n_obj), generator=g)
    cls = torch.randint(0, n_cls, (frames, n_obj), generator=g)
    logit = torch.rand(frames, n_obj, generator=g) * 6.0 - 1.0
    fb = torch.arange(frames)[:, None].expand(-1, n_obj)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            jitter = torch.rand(frames, n_obj, generator=g)
            heat[fb, cls, cy + dy, cx + dx] = logit - 0.5 * (abs(dx) + abs(dy)) + jitter
    box = torch.randn(frames, 8, h, w, generator=g) * 0.1
    box[:, 0:2] += 0.5  # offsets inside the cell
    size = torch.tensor([4.0, 1.8, 1.6]).log()[None, :, None, None]  # car-sized, log metres
    box[:, 3:6] += size - torch.rand(frames, 1, h, w, generator=g) * 1.2  # down to pedestrians
    yaw = torch.rand(frames, 1, h, w, generator=g) * 2 * torch.pi
    box[:, 6:7], box[:, 7:8] = yaw.sin(), yaw.cos()
    return heat, box


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (allocator, lazy init)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x["labels"], y["labels"]) and torch.equal(x["boxes"], y["boxes"])
        and torch.equal(x["scores"], y["scores"]) for x, y in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--score-floor", type=float, default=0.01)  # teacher-label's default
    ap.add_argument("--nms-iou", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    load0 = os.getloadavg()
    result: dict[str, Any] = {"machine": platform.machine(), "python": sys.version.split()[0],
                              "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                              "device": str(device), "args": vars(args), "configs": {}}
    for name, nms in (("peaks_only", None), ("rotated_nms", args.nms_iou)):
        cfg = DetectorConfig(nms_iou_bev=nms)
        heat, box = (t.to(device) for t in head_maps(cfg, args.frames, args.seed))

        def new(cfg: DetectorConfig = cfg, heat: torch.Tensor = heat,
                box: torch.Tensor = box) -> list[dict[str, torch.Tensor]]:
            out = decode_boxes(heat, box, cfg, args.score_floor, args.top_k)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        def old(cfg: DetectorConfig = cfg, heat: torch.Tensor = heat,
                box: torch.Tensor = box) -> list[dict[str, torch.Tensor]]:
            return decode_boxes_reference(heat, box, cfg, args.score_floor, args.top_k)

        t_new, t_old = best_of(new, args.repeat), best_of(old, args.repeat)
        kept = new()
        result["configs"][name] = {
            "nms_iou_bev": nms, "grid": list(heat.shape[1:]),
            "boxes_per_frame": round(sum(len(d["scores"]) for d in kept) / args.frames, 1),
            "batched_ms": round(t_new * 1e3, 2), "per_frame_reference_ms": round(t_old * 1e3, 2),
            "speedup": round(t_old / t_new, 2), "identical": same(kept, old())}
    result["loadavg_start_end"] = [round(x, 2) for x in load0 + os.getloadavg()[:1]]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
