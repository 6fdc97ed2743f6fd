"""Which inputs a trained IMKD student relies on: its val detection loss (the training loss, on
the ground truth) with every input, with the cameras removed and with the radar removed.

    python benchmarks/_imkd_inputs.py --workspace OUT/ws --students student-nokd,student-l123
    python benchmarks/_imkd_inputs.py --workspace OUT/ws --students student-nokd/KEY

OUT is a `benchmarks/imkd.py --out` folder. A diagnostic, not a figure of DESIGN.md (run_all
skips `_` scripts); it prints JSON. Threads: one (comparable across runs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl
import torch

from kdpipe.datasets.store import IngestStore
from kdpipe.models.batch import collate, empty_targets, target_tensors
from kdpipe.runtime.camera_data import camera_channels
from kdpipe.runtime.checkpoints import load_model
from kdpipe.runtime.model_data import (
    frame_arrays,
    read_group_frames,
    sensor_map,
    targets_from_table,
)


def val_losses(store: IngestStore, checkpoint: Path, batch_size: int = 8) -> dict[str, float]:
    """Mean val loss per frame: all inputs, no cameras, no radar."""
    model, _ = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    frames = store.read_frames().filter(pl.col("split") == "val")
    boxes = store.read_boxes().filter(pl.col("frame_id").is_in(frames["frame_id"].to_list()))
    velocity = bool(model.config.with_velocity)
    gt = targets_from_table(boxes, model.classes, with_velocity=velocity)  # the model's own
    empty = empty_targets(9 if velocity else 7)
    sums, n = {"all inputs": 0.0, "no cameras": 0.0, "no radar": 0.0}, 0
    for (source, scene), g in frames.group_by(["source", "scene"], maintain_order=True):
        rows = read_group_frames(store, str(source), str(scene), g["frame_index"].to_list(),
                                 sensor_map("radar", model.modalities),
                                 model.config.point_cloud_range_m,
                                 cameras=camera_channels(model))
        arrays = [frame_arrays(p, c) for p, c in rows]
        targets = target_tensors([gt.get(f, empty) for f in g["frame_id"]], torch.device("cpu"))
        for s in range(0, len(arrays), batch_size):
            batch = collate(arrays[s:s + batch_size], model.modalities)
            t = targets[s:s + batch_size]
            no_cam = {k: v for k, v in batch.items() if not k.startswith("camera")}
            no_radar = {**batch, "radar": batch["radar"][:0]}
            with torch.no_grad():
                for name, b in (("all inputs", batch), ("no cameras", no_cam),
                                ("no radar", no_radar)):
                    sums[name] += model.loss(model(b), t)["loss"].item() * len(t)
            n += len(t)
    return {k: round(v / max(n, 1), 4) for k, v in sums.items()} | {"val_frames": n}


def checkpoint(workspace: Path, name: str) -> Path:
    """`name`: a stage with one trained artifact in the workspace, or STAGE/KEY."""
    pattern = f"{name}/student.pt" if "/" in name else f"{name}/*/student.pt"
    found = sorted((workspace / "artifacts").glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"{name}: {len(found)} student checkpoints in {workspace}; name one as "
                         f"STAGE/KEY: {[str(p.parent.relative_to(workspace)) for p in found]}")
    return found[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True, help="benchmarks/imkd.py OUT/ws")
    ap.add_argument("--students", default="student-nokd", help="comma-separated stage names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    store = IngestStore.from_artifact(next((args.workspace / "artifacts" / "ingest").iterdir()))
    out = {name: val_losses(store, checkpoint(args.workspace, name))
           for name in args.students.split(",")}
    print(json.dumps({"workspace": str(args.workspace), "val_loss": out}, indent=1))


if __name__ == "__main__":
    main()
