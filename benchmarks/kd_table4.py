"""Table 4 (label-scarce) of benchmarks/kd_ablation.py: the workflow with the quarter-label
teacher and baseline, one student per unlabeled volume, round 2 of the labelling teacher
(`--self-train-sigma`) and the oracle (`--table4-oracle`); and the table's goals block.
A sibling module of kd_ablation.py."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from kd_report import paired
from kd_rows import NO_SCKD, ROWS, eval_stage, label_cfg, pseudo_cfg, weighted

from kdpipe.config import toml_table, toml_value


def workflow_table4(path: Path, world: Path, args: argparse.Namespace, seed: int,
                    n_labeled: int, n_unlabeled: int) -> dict[str, str]:
    quarter = args.table4_labeled or max(1, n_labeled // 4)
    frac = f"1/{n_labeled / quarter:g}"
    optim = {"epochs": args.epochs, "batch_size": 4, "lr_max": args.lr_max}
    steps = args.epochs * quarter                 # the baseline's frame-steps
    det = {"detector": {"pillar_size_m": args.pillar_m}} if args.pillar_m else {}
    method = weighted(ROWS[args.table4_method][0], args)
    stages = ["ingest", "teacher-q", "radar-q", "label-q", "pseudo-q"]
    lines = ["[ingest]", 'format = "vod"', f'roots = ["{world}"]',
             *toml_table("teacher-q", {"model": "sckd-teacher", "max_frames": quarter, **det,
                                        "optim": optim},
                          "teacher-train", {"teacher": "q_teacher", "train_log": "q_teacher_log"}),
             *toml_table("radar-q", {"model": "radar-only", "max_frames": quarter, **det,
                                      "optim": optim},
                          "teacher-train", {"teacher": "q_radar", "train_log": "q_radar_log"}),
             *toml_table("label-q", label_cfg(args, splits=["train", "unlabeled", "val"]),
                          "teacher-label", {"teacher": "q_teacher", "detections": "q_detections",
                                            "detection_frames": "q_detection_frames"}),
             *toml_table("pseudo-q", pseudo_cfg(args), "pseudo-label", {
                 "detections": "q_detections", "detection_frames": "q_detection_frames",
                 "pseudo_labels": "q_pseudo_labels", "pseudo_label_frames": "q_pseudo_frames"})]
    evals = {f"radar baseline, {frac} labeled ({quarter})": eval_stage("q-radar", "q_radar"),
             f"teacher, {frac} labeled ({quarter})": eval_stage("q-teacher", "q_teacher")}
    volumes = {"quarter": (["train"], quarter), "train": (["train"], None),
               "all": (["train", "unlabeled"], None)}
    for name, (splits, cap) in volumes.items():
        if name not in args.table4_volumes:
            continue
        n = cap or (n_labeled if splits == ["train"] else n_labeled + n_unlabeled)
        cfg = {**method, "unlabeled_splits": splits,
               "optim": {**optim, "epochs": max(10, round(steps / n))}}
        if cap:
            cfg["max_unlabeled_frames"] = cap
        stage = f"distill-q-{name}"
        stages.append(stage)
        lines += toml_table(stage, cfg, "distill", {
            "teacher": "q_teacher", "pseudo_labels": "q_pseudo_labels",
            "pseudo_label_frames": "q_pseudo_frames", "student": f"q_{name}_student",
            "distill_log": f"q_{name}_log"})
        evals[f"student ({args.table4_method}), {n} unlabeled ({name})"] = eval_stage(
            f"q-{name}", f"q_{name}_student")
    # every frame the students see, with the baseline's frame-steps: round 2 and the oracle
    n_all = n_labeled + n_unlabeled
    optim_all = optim | {"epochs": max(10, round(steps / n_all))}
    if args.self_train_sigma is not None:
        r2_stages, r2_lines, r2_evals = self_train_stages(args, method, optim_all)
        stages += r2_stages
        lines += r2_lines
        evals |= r2_evals
    if args.table4_oracle:
        lines += oracle_stages(oracle_world(world), {"model": "radar-only", **det,
                                                     "optim": optim_all})
        stages += ["ingest-oracle", "radar-oracle"]
        evals[f"radar-only on the GT of the {n_all} frames (oracle)"] = eval_stage("q-oracle",
                                                                             "q_oracle")
    for stage, block in evals.values():
        stages.append(stage)
        lines += block
    head = ["[workflow]", 'name = "kd-table4"', f"stages = {toml_value(stages)}",
            f"seed = {seed}"]
    path.write_text("\n".join(head + lines) + "\n")
    return {row: stage for row, (stage, _) in evals.items()}


def oracle_world(world: Path) -> Path:
    """`world` with train + unlabeled listed as train: the same files (hard links: ingest rejects
    a symlink that leaves its root), so a radar-only detector trains on the ground truth of
    every frame the Table 4 students see."""
    root = world.with_name(world.name + "_oracle")
    sets = root / "lidar" / "ImageSets"
    if (sets / "train.txt").exists():
        return root
    src = world / "lidar" / "ImageSets"
    for dirpath, _, files in os.walk(world):
        here = Path(dirpath)
        if here == src:
            continue
        (root / here.relative_to(world)).mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (root / here.relative_to(world) / f).exists():
                os.link(here / f, root / here.relative_to(world) / f)
    sets.mkdir(parents=True, exist_ok=True)
    for name in ("val.txt", "full.txt"):
        (sets / name).write_text((src / name).read_text())
    ids = (src / "train.txt").read_text().split() + (src / "unlabeled.txt").read_text().split()
    (sets / "train.txt").write_text("\n".join(sorted(ids)) + "\n")  # last: marks it complete
    return root


def self_train_stages(args: argparse.Namespace, method: dict[str, Any], optim: dict[str, Any]
                      ) -> tuple[list[str], list[str], dict[str, tuple[str, list[str]]]]:
    """Round 2 of the labelling teacher: the LiDAR+radar model re-trained (a `distill` stage,
    SSOD only, no GT beyond what round 1 saw) on round 1's pseudo-labels of the students' frames,
    then labelling them again at `--self-train-sigma`; the method's student on those labels."""
    splits = ["train", "unlabeled"]
    stages = ["teacher-r2", "label-r2", "pseudo-r2", "distill-q-r2"]
    lines = [
        *toml_table("teacher-r2", {"student": "sckd-teacher", **NO_SCKD, "unlabeled_splits": splits,
                                    "optim": optim}, "distill",
                     {"teacher": "q_teacher", "pseudo_labels": "q_pseudo_labels",
                      "pseudo_label_frames": "q_pseudo_frames", "student": "r2_teacher",
                      "distill_log": "r2_teacher_log"}),
        *toml_table("label-r2", label_cfg(args, splits=["train", "unlabeled", "val"]),
                     "teacher-label", {"teacher": "r2_teacher", "detections": "r2_detections",
                                       "detection_frames": "r2_detection_frames"}),
        *toml_table("pseudo-r2", {"sigma": args.self_train_sigma}, "pseudo-label", {
            "detections": "r2_detections", "detection_frames": "r2_detection_frames",
            "pseudo_labels": "r2_pseudo_labels", "pseudo_label_frames": "r2_pseudo_frames"}),
        *toml_table("distill-q-r2", {**method, "unlabeled_splits": splits, "optim": optim},
                     "distill", {"teacher": "r2_teacher", "pseudo_labels": "r2_pseudo_labels",
                                 "pseudo_label_frames": "r2_pseudo_frames",
                                 "student": "q_r2_student", "distill_log": "q_r2_log"})]
    evals = {"teacher round 2 (re-trained on its pseudo-labels)":
             eval_stage("q-r2-teacher", "r2_teacher"),
             f"student ({args.table4_method}), round-2 labels at sigma "
             f"{args.self_train_sigma:g}": eval_stage("q-r2", "q_r2_student")}
    return stages, lines, evals


def oracle_stages(root: Path, cfg: dict[str, Any]) -> list[str]:
    """The oracle's own ingest of `root` and a radar-only detector trained on its train split;
    scored on the main store's val like every other row."""
    o = {p: f"oracle_{p}" for p in ("points", "frames", "boxes", "calibration", "rejects")}
    return [*toml_table("ingest-oracle", {"format": "vod", "roots": [str(root)]}, "ingest", o),
            *toml_table("radar-oracle", cfg, "teacher-train",
                         {"points": o["points"], "frames": o["frames"], "boxes": o["boxes"],
                          "teacher": "q_oracle", "train_log": "q_oracle_log"})]


def goals_table4(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each student minus the (label-scarce) radar baseline, paired per seed."""
    base = next(r for r in per_seed[0] if r.startswith("radar baseline"))
    return {f"{row} - baseline (EAA mAP ap11)": paired(per_seed, row, base)
            for row in per_seed[0] if row.startswith(("student", "radar-only on the GT"))}
