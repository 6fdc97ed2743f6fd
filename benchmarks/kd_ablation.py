"""Distillation ablation with seeds: SCKD's Table 3 rows, the feature-KD methods of models/kd/,
and (`--table4`) SCKD's label-scarce Table 4, each row's mean and standard deviation over seeds.

    python benchmarks/kd_ablation.py --frames 480 --seeds 3 --out /tmp/kd_ablation
    python benchmarks/kd_ablation.py --frames 480 --seeds 3 --out /tmp/kd_ablation --table4
    python benchmarks/kd_ablation.py --rows ssod,ssod-fg --seeds 2 ...   # a subset of rows

One synthetic VoD world (`--world-seed`, default 480 frames: 80 labeled train, 96 val, 304
unlabeled) for every seed; seed s is the workflow seed (initialisation, augmentation, batch
order) of every training stage. Per seed one kdpipe workflow trains the LiDAR+radar teacher and
a GT-only radar baseline on the labeled frames, labels the unlabeled frames with the teacher
(sigma = 0.1), distils one radar-only student per row, and scores everything on val with
vod-tudelft (AP11 and AP40, entire area (EAA) and driving corridor (DC); `n_gt` per class says
where the corridor holds fewer than the 41 boxes below which the evaluator caps AP).
Students see as many frame-steps as the baseline (epochs scaled by labeled / unlabeled frames).
Each seed runs in its own workspace (`ws_seed<N>`), so one seed's artifacts can be inspected
or deleted alone (the seed is part of the training stages' keys: one workspace would work too).
The same seeds give the same table: run it twice into two `--out` folders and compare the JSON.

Table 4 (label-scarce): the teacher and the radar baseline train on a quarter of the labeled
frames (`--table4-labeled N`: N of them); the teacher labels train + unlabeled + val, and SCKD
students (SSOD + FRFD + LRFD, or `--table4-method`) train on three unlabeled volumes (or those of
`--table4-volumes`): as many frames as the baseline's labels, all of train, train + unlabeled
(the paper's SCKD+). Each student sees at least the baseline's frame-steps. Its goals block
gives each student minus the baseline, paired per seed. `--table4-oracle` adds a radar-only
detector trained on the ground truth of train + unlabeled with the students' frame-steps (the
world's unlabeled frames have labels on disk; a second ingest lists them as train): how far
perfect pseudo-labels would take the student, the room any distillation has.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, get_args

from kd_report import markdown, paired, row_metrics, summarise
from kd_rows import (
    BASELINE,
    ROWS,
    SCKD,
    SSOD,
    TEACHER,
    eval_stage,
    label_cfg,
    pseudo_cfg,
    weighted,
)
from kd_table4 import goals_table4, workflow_table4

from kdpipe.api import run_workflow
from kdpipe.config import toml_table, toml_value
from kdpipe.runtime.config import TtaMode
from kdpipe.schemas.model_names import KD_DECAYS

__all__ = ["goals_table4", "parse_args", "workflow", "workflow_table4"]


def workflow(path: Path, world: Path, args: argparse.Namespace, seed: int, n_labeled: int,
             n_unlabeled: int) -> dict[str, str]:
    """Table 3 + methods for one seed; returns {row label: evaluate stage}."""
    optim = {"epochs": args.epochs, "batch_size": 4, "lr_max": args.lr_max}
    det = {"detector": {"pillar_size_m": args.pillar_m}} if args.pillar_m else {}
    student_epochs = max(1, round(args.epochs * n_labeled / n_unlabeled))
    stages = ["ingest", "teacher-train", "train-radar", "teacher-label", "pseudo-label"]
    lines = ["[ingest]", 'format = "vod"', f'roots = ["{world}"]',
             *toml_table("teacher-train", {"model": "sckd-teacher", **det, "optim": optim}),
             *toml_table("train-radar", {"model": "radar-only", **det, "optim": optim},
                          "teacher-train",
                          {"teacher": "radar_model", "train_log": "radar_train_log"}),
             *toml_table("teacher-label", label_cfg(args)),
             *toml_table("pseudo-label", pseudo_cfg(args))]
    evals = {BASELINE: eval_stage("radar", "radar_model"), TEACHER: ("evaluate", ["[evaluate]"])}
    for stage, block in evals.values():
        stages.append(stage)
        lines += block
    for name in args.rows:
        cfg, row = ROWS[name]
        stage = f"distill-{name}"
        # GT rows train on labeled + unlabeled frames: same frame-steps as the others.
        epochs = (max(1, round(args.epochs * n_labeled / (n_labeled + n_unlabeled)))
                  if cfg.get("gt") else student_epochs)
        cfg = weighted(cfg, args)
        lines += toml_table(stage, {**cfg, "optim": {**optim, "epochs": epochs}}, "distill",
                             {"student": f"{name}_student", "distill_log": f"{name}_log"})
        evals[row] = eval_stage(name, f"{name}_student")
        stages += [stage, evals[row][0]]
        lines += evals[row][1]
    head = ["[workflow]", 'name = "kd-ablation"', f"stages = {toml_value(stages)}",
            f"seed = {seed}"]
    path.write_text("\n".join(head + lines) + "\n")
    return {row: stage for row, (stage, _) in evals.items()}


def goals(per_seed: list[dict[str, dict[str, float]]], rows: list[str]) -> dict[str, Any]:
    g: dict[str, Any] = {}
    if SCKD in per_seed[0]:
        g["SCKD - baseline (EAA mAP ap11), need >= 10"] = paired(per_seed, SCKD, BASELINE)
    methods = [ROWS[r][1] for r in rows if r not in ("ssod", "gt-ssod-frfd-lrfd")]
    if SSOD in per_seed[0] and methods:
        diffs = {m: paired(per_seed, m, SSOD) for m in methods}
        best = max(diffs, key=lambda m: diffs[m]["mean"])
        g["feature KD - SSOD only (EAA mAP ap11)"] = diffs
        g["best feature KD"] = {"row": best, **diffs[best],
                                "met (>= 3 and beyond 2 std)":
                                diffs[best]["mean"] >= 3 and diffs[best]["beyond_2_std"]}
    return g


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=480)
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="training seeds 0 .. N-1")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40, help="teacher / baseline epochs")
    ap.add_argument("--lr-max", type=float, default=0.003)
    ap.add_argument("--pillar-m", type=float, default=None,
                    help="BEV cell of teacher, baseline and students (default: the preset's 0.4)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    ap.add_argument("--scheduler", default="local:2")
    ap.add_argument("--table4", action="store_true", help="the label-scarce table instead")
    ap.add_argument("--table4-method", default="ssod-frfd-lrfd", choices=sorted(ROWS))
    ap.add_argument("--table4-labeled", type=int, default=0,
                    help="labeled frames of Table 4's teacher and baseline (default: train / 4)")
    ap.add_argument("--table4-volumes", default="quarter,train,all",
                    help="the students' unlabeled volumes, a subset of quarter,train,all")
    ap.add_argument("--table4-oracle", action="store_true",
                    help="also a radar-only detector on the GT of train + unlabeled (the "
                         "students' frames and frame-steps): what perfect pseudo-labels give")
    ap.add_argument("--self-train-sigma", type=float, default=None,
                    help="Table 4: also re-train the teacher on its own pseudo-labels (round 2), "
                         "label again at this sigma and train the method's student on those")
    ap.add_argument("--kd-weight", type=float, default=1.0,
                    help="weight of the models/kd method in every row that uses one")
    ap.add_argument("--kd-decay", default="none", choices=KD_DECAYS,
                    help="how that weight falls over training (models/kd/loss.py)")
    ap.add_argument("--teacher-tta", default="none", choices=get_args(TtaMode),
                    help="teacher-label's test-time augmentation (models/tta.py); the teacher "
                         "row is scored without it")
    ap.add_argument("--class-thresholds", default="",
                    help="per-class pseudo-label thresholds over sigma, e.g. Pedestrian=0.3")
    ap.add_argument("--out", type=Path, default=Path("/tmp/kd_ablation"))  # noqa: S108
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    args.rows = [r for r in args.rows.split(",") if r]
    args.table4_volumes = [v for v in args.table4_volumes.split(",") if v]
    if set(args.table4_volumes) - {"quarter", "train", "all"}:
        ap.error(f"--table4-volumes {args.table4_volumes}: a subset of quarter,train,all")
    try:
        args.class_thresholds = {k.strip(): float(v) for k, v in (
            kv.split("=") for kv in args.class_thresholds.split(",") if kv)}
    except ValueError:
        ap.error(f"--class-thresholds {args.class_thresholds!r}: expected Class=0.3,...")
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    return args


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    world = args.out / f"vod_{args.frames}_{args.world_seed}"
    if not (world / "lidar" / "ImageSets" / "full.txt").exists():
        from kdpipe.datasets.synth import write_vod

        write_vod(world, args.frames, seed=args.world_seed)
    sets = world / "lidar" / "ImageSets"
    n_lab, n_val, n_unl = (len((sets / f"{s}.txt").read_text().split())
                           for s in ("train", "val", "unlabeled"))
    per_seed, seconds = [], {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        tag = "table4" if args.table4 else "table3"
        wf = args.out / f"kd_{tag}_seed{seed}.toml"
        build = workflow_table4 if args.table4 else workflow
        evals = build(wf, world, args, seed, n_lab, n_unl)
        t_seed = time.perf_counter()
        rep = run_workflow(wf, str(args.out / f"ws_seed{seed}"), scheduler=args.scheduler)
        st = {s["stage"]: s for s in rep["stages"]}
        per_seed.append({row: row_metrics(json.loads(Path(st[stage]["outputs"]["metrics"])
                                                     .read_text()))
                         for row, stage in evals.items()})
        seconds[seed] = {"wall": round(time.perf_counter() - t_seed, 1),
                         "stages": {k: round(v["seconds"], 1) for k, v in st.items()}}
    summary = summarise(per_seed)
    if args.markdown:
        args.markdown.write_text(markdown(summary) + "\n")
    print(json.dumps({
        "pseudo_label": pseudo_cfg(args), "kd_weight": args.kd_weight,
        "kd_decay": args.kd_decay, "teacher_tta": args.teacher_tta,
        "self_train_sigma": args.self_train_sigma,
        "world": {"frames": args.frames, "labeled_train": n_lab, "val": n_val,
                  "unlabeled": n_unl, "world_seed": args.world_seed},
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "table": "4" if args.table4 else "3",
        "vod_val": summary,
        "goals": goals_table4(per_seed) if args.table4 else goals(per_seed, args.rows),
        "seconds": seconds, "wall_seconds": round(time.perf_counter() - t0, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
