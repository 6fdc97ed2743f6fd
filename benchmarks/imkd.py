"""IMKD ablation on a synthetic nuScenes world, scored by nuscenes-devkit DetectionEval (NDS, mAP).

    python benchmarks/imkd.py --scenes 10 --samples 20 --out /tmp/kd_imkd_bench

One kdpipe workflow: ingest (LiDAR, 5 radars with `--radar-sweeps` sweeps, the three front cameras
downscaled) -> LiDAR-only teacher trained on the labels (LabelDistill-style) -> teacher-label on
train + val -> pseudo-label -> imkd-weights -> the `--rows` camera+radar students of `imkd-distill`
(`uses` + `ports`), all on GT + SSOD (pseudo-labels) detection targets:

    no KD         all three levels off (plain AF-style camera-radar fusion, no gate)
    +L1           LiDAR -> radar BEV features, intensity-weighted
    +L1+L2        ... + LiDAR -> fused camera+radar BEV features, intensity-weighted
    +L1+L2+L3     ... + the intensity-guided fusion gate, supervised by the weight map
    depth         no KD + LiDAR depth for the camera branch's depth distribution (BEVDepth's
                  loss, `--depth-weight`; not in the default `--rows`)
    l123d         +L1+L2+L3 + LiDAR depth
    gt            GT only: no teacher at all, no pseudo-labels (not in the default `--rows`);
                  its epochs give it the no-KD row's frame-steps
    gtl123        GT only + the three levels: the teacher's features without its labels

"Without distillation" (no KD) therefore means: same data, same targets (GT + the teacher's
pseudo-labels), no feature/gate KD term.

`--labeled N` is the label-scarce regime (SCKD's Table 4, the setting kdpipe is for): the
teacher trains on the first N labeled train frames only (`max_frames`: whole scenes, in store
order) and every student has GT on those same N frames (`max_gt_frames`) plus the teacher's
pseudo-labels on all train frames; the `gt` row then is a camera+radar detector trained on the
N labels alone. Every model is scored on the `synth_val` scenes (custom devkit
split) with DetectionEval `detection_cvpr_2019`. The same seed gives the same table. The goal
row is the best KD row against no KD (>= +3 NDS).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

from kdpipe.api import run_workflow
from kdpipe.config import toml_table, toml_value

CLASSES = ["car", "pedestrian", "bicycle"]
CAMERAS = ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"]


class Student(NamedTuple):
    levels: str        # IMKD levels on, e.g. "123"
    depth: bool        # LiDAR depth for the camera branch
    ssod: bool         # the teacher's pseudo-labels (off: GT only, the no-KD frame-steps)
    label: str         # table row


STUDENTS = {  # stage suffix -> row
    "gt": Student("", False, False, "camera+radar student, GT only (no teacher)"),
    "gtl123": Student("123", False, False, "IMKD +L1+L2+L3 on GT only (no pseudo-labels)"),
    "nokd": Student("", False, True, "camera+radar student, no KD (GT + SSOD)"),
    "l1": Student("1", False, True, "IMKD +L1 (LiDAR->radar)"),
    "l12": Student("12", False, True, "IMKD +L1+L2 (+LiDAR->fused)"),
    "l123": Student("123", False, True, "IMKD +L1+L2+L3 (+intensity-guided fusion)"),
    "depth": Student("", True, True, "camera+radar student + LiDAR depth only"),
    "l123d": Student("123", True, True, "IMKD +L1+L2+L3 + LiDAR depth"),
}
DEFAULT_ROWS = "nokd,l1,l12,l123"


def parse_rows(text: str) -> list[str]:
    """`--rows`: comma-separated names of STUDENTS."""
    rows = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rows if r not in STUDENTS]
    if unknown or not rows:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; known: {sorted(STUDENTS)}")
    return rows


def _eval(name: str, model: str) -> list[str]:
    return toml_table(f"evaluate-{name}", {"split": "val", "nuscenes_eval_set": "synth_val"},
                      "evaluate", {"checkpoint": model, "metrics": f"{name}_metrics",
                                   "metrics_table": f"{name}_metrics_table",
                                   "eval_detections": f"{name}_eval_detections"})


def train_frames(world: Path, samples: int) -> int:
    """Keyframes of the world's train scenes (its `splits.json`)."""
    splits = json.loads(next(world.glob("*/splits.json")).read_text())
    return samples * sum(len(v) for k, v in splits.items() if k.endswith("train"))


def workflow(path: Path, world: Path, args: argparse.Namespace) -> Path:
    rng = [-args.range_m, -args.range_m, -5.0, args.range_m, args.range_m, 3.0]
    det = {"point_cloud_range_m": rng, "pillar_size_m": args.cell_m, "classes": CLASSES,
           "with_velocity": True}
    optim = {"batch_size": 4, "lr_max": args.lr_max}
    student_det = {"camera_channels": CAMERAS}
    rows = args.rows
    n_train = train_frames(world, args.samples) if any(not STUDENTS[r].ssod for r in rows) else 0
    stages = ["ingest", "teacher-train", "teacher-label", "pseudo-label", "imkd-weights",
              *(f"student-{s}" for s in rows), *(f"evaluate-{s}" for s in ["teacher", *rows])]
    lines = ["[workflow]", 'name = "imkd-bench"', f"seed = {args.seed}",
             f"stages = {toml_value(stages)}",
             *toml_table("ingest", {"format": "nuscenes", "roots": [str(world)],
                                    "radar_sweeps": args.radar_sweeps, "camera_channels": CAMERAS,
                                    "camera_downscale": args.camera_downscale}),
             *toml_table("teacher-train", {"model": "lidar-only", "detector": det,
                                           "optim": {**optim, "epochs": args.epochs},
                                           **({"max_frames": args.labeled} if args.labeled
                                              else {})}),
             *toml_table("teacher-label", {"splits": ["train", "val"]}),
             *toml_table("pseudo-label", {"sigma": args.sigma}),
             *toml_table("imkd-weights", {"point_cloud_range_m": rng, "cell_m": args.cell_m})]
    for name in rows:
        st = STUDENTS[name]
        cfg: dict[str, Any] = {"detector": student_det, **{
            f"level{k}_weight": getattr(args, f"level{k}") if str(k) in st.levels else 0.0
            for k in (1, 2, 3)}}
        if st.depth:  # left out when off: the default, so the other rows keep their stage keys
            cfg["depth_weight"] = args.depth_weight
        if args.labeled:
            cfg["max_gt_frames"] = args.labeled
        epochs = args.student_epochs
        if not st.ssod:  # GT alone, with the no-KD row's frame-steps (GT + SSOD frames)
            cfg["ssod"] = False
            n_gt = args.labeled or n_train
            epochs = max(1, round(args.student_epochs * (n_train + n_gt) / n_gt))
        cfg["optim"] = {**optim, "epochs": epochs}
        if args.max_unlabeled:  # SSOD on the first N train frames only (GT stays on all)
            cfg["max_unlabeled_frames"] = args.max_unlabeled
        lines += toml_table(f"student-{name}", cfg, "imkd-distill",
                            {"student": f"student_{name}", "distill_log": f"distill_log_{name}"})
    lines += _eval("teacher", "teacher")
    for name in rows:
        lines += _eval(name, f"student_{name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def row(metrics: dict[str, Any]) -> dict[str, float]:
    out = {"NDS": round(100 * metrics["nd_score"], 2), "mAP": round(100 * metrics["mean_ap"], 2)}
    out.update({f"AP {c}": round(100 * metrics["class_ap"][c], 2) for c in CLASSES})
    out.update({k.replace("_err", "").upper(): round(v, 3)
                for k, v in metrics["tp_errors"].items()})
    return out


def goal(table: dict[str, dict[str, float]], rows: list[str]) -> dict[str, Any]:
    """The best KD row (a row with an IMKD level or LiDAR depth) against no KD (>= +3 NDS),
    and, where the `gt` row ran, against a student that never saw the teacher."""
    nds = {n: table[STUDENTS[n].label]["NDS"] for n in rows}
    best = max((n for n in rows if n not in ("nokd", "gt")), key=nds.__getitem__, default=None)
    out: dict[str, Any] = {"best KD row": STUDENTS[best].label if best else None}
    for base, name in (("nokd", "no KD"), ("gt", "GT only")):
        if best and base in rows:
            out[f"best KD row - {name}, NDS"] = round(nds[best] - nds[base], 2)
    for a, b, what in (("nokd", "gt", "pseudo-labels alone (no KD - GT only)"),
                       ("gtl123", "gt", "levels without pseudo-labels (gtl123 - GT only)")):
        if a in rows and b in rows:
            out[f"{what}, NDS"] = round(nds[a] - nds[b], 2)
    gain = out.get("best KD row - no KD, NDS")
    return {**out, "need": ">= 3 over nokd", "met": gain is not None and gain >= 3}  # noqa: PLR2004


def make_world(out: Path, scenes: int, samples: int, seed: int) -> Path:
    """The synthetic nuScenes world of a run under `out` (made once, reused after)."""
    world = out / f"nus_{scenes}x{samples}_{seed}"
    if not (world / "synth_scenes.json").exists():
        from kdpipe.datasets.synth import SynthConfig, write_nuscenes

        write_nuscenes(world, scenes, seed=seed, cfg=SynthConfig(
            nus_samples_per_scene=samples, image_scale=0.25, nus_cameras=tuple(CAMERAS)))
    return world


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--samples", type=int, default=20, help="keyframes per scene")
    ap.add_argument("--epochs", type=int, default=20, help="teacher epochs")
    ap.add_argument("--student-epochs", type=int, default=10)
    ap.add_argument("--lr-max", type=float, default=0.003)
    ap.add_argument("--range-m", type=float, default=51.2)
    ap.add_argument("--cell-m", type=float, default=0.8)
    ap.add_argument("--radar-sweeps", type=int, default=3)
    ap.add_argument("--camera-downscale", type=int, default=4, help="of 400 x 225 images")
    ap.add_argument("--sigma", type=float, default=0.3, help="pseudo-label threshold")
    ap.add_argument("--max-unlabeled", type=int, default=None, help="SSOD frames per student")
    ap.add_argument("--labeled", type=int, default=None,
                    help="label-scarce: GT (teacher and students) on the first N train frames")
    ap.add_argument("--level1", type=float, default=0.01)
    ap.add_argument("--level2", type=float, default=0.01)
    ap.add_argument("--level3", type=float, default=1.0)
    ap.add_argument("--depth-weight", type=float, default=1.0,
                    help="lambda_d of the rows with LiDAR depth (depth, l123d)")
    ap.add_argument("--rows", type=parse_rows, default=parse_rows(DEFAULT_ROWS),
                    help=f"comma-separated students of {sorted(STUDENTS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scheduler", default="sync")
    ap.add_argument("--out", type=Path, default=Path("/tmp/kd_imkd_bench"))  # noqa: S108
    return ap


def main() -> None:
    args = parser().parse_args()
    t0 = time.perf_counter()
    world = make_world(args.out, args.scenes, args.samples, args.seed)
    wf = workflow(args.out / "imkd_bench.toml", world, args)
    rep = run_workflow(wf, str(args.out / "ws"), scheduler=args.scheduler)
    st = {s["stage"]: s for s in rep["stages"]}
    rows = args.rows
    m = {n: json.loads(Path(st[f"evaluate-{n}"]["outputs"]["metrics"]).read_text())
         for n in ["teacher", *rows]}
    labels = f"{args.labeled} labeled frames" if args.labeled else "labels"
    table = {f"LiDAR-only teacher ({labels})": row(m["teacher"])}
    table.update({STUDENTS[n].label: row(m[n]) for n in rows})
    print(json.dumps({
        "world": {"scenes": args.scenes, "samples_per_scene": args.samples, "seed": args.seed,
                  "val_frames": m["teacher"]["frames"], "labeled_train_frames": args.labeled},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "nuscenes_synth_val": table, "goal": goal(table, rows),
        "stage_seconds": {k: round(v["seconds"], 1) for k, v in st.items()},
        "wall_seconds": round(time.perf_counter() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
