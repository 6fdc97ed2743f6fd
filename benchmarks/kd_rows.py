"""The rows of benchmarks/kd_ablation.py (distill deltas and their labels) and the pieces its
workflows are written from: evaluate stages, teacher-label and pseudo-label deltas.
A sibling module of the scripts that import it (kd_ablation.py, kd_table4.py)."""
from __future__ import annotations

import argparse
from typing import Any

from kdpipe.config import toml_table

NO_SCKD = {"lrfd_weight": 0.0, "frfd_weight": 0.0}

ROWS: dict[str, tuple[dict[str, Any], str]] = {  # name: (distill config delta, row label)
    "ssod": (NO_SCKD, "(b) SSOD only"),
    "ssod-frfd": ({"lrfd_weight": 0.0}, "(f) SSOD + FRFD"),
    "ssod-lrfd": ({"frfd_weight": 0.0}, "(g) SSOD + LRFD"),
    "ssod-frfd-lrfd": ({}, "(i) SSOD + FRFD + LRFD (SCKD)"),
    "gt-ssod-frfd-lrfd": ({"gt": True}, "(h) GT + SSOD + FRFD + LRFD"),
    "ssod-fg": ({**NO_SCKD, "kd": {"fg-gaussian": {"weight": 1.0}}},
                "SSOD + fg-gaussian (backbone map, box Gaussians)"),
    "ssod-act": ({**NO_SCKD, "kd": {"activation": {"weight": 1.0}}},
                 "SSOD + activation (encoder map, AFD-style)"),
    "ssod-prop": ({**NO_SCKD, "kd": {"proposal": {"weight": 1.0}}},
                  "SSOD + proposal (backbone map, teacher heatmap)"),
    "ssod-occ": ({**NO_SCKD, "kd": {"occupied": {"weight": 1.0}}},
                 "SSOD + occupied (encoder map, cells with radar returns)"),
    "ssod-occ-bev": ({**NO_SCKD, "kd": {"occupied": {"weight": 1.0, "tap": "bev",
                                                     "kernel": 1}}},
                     "SSOD + occupied (backbone map, cells with radar returns)"),
    "ssod-resp": ({**NO_SCKD, "kd": {"response": {"weight": 1.0}}},
                  "SSOD + response (teacher heatmap + boxes)"),
    "ssod-radardistill": ({**NO_SCKD, "kd": {"radardistill": {"weight": 1.0}}},
                          "SSOD + radardistill (alignment + activation + proposal)"),
}

BASELINE, TEACHER, SSOD, SCKD = ("(a) GT only (radar baseline)", "teacher (LiDAR + radar)",
                                 ROWS["ssod"][1], ROWS["ssod-frfd-lrfd"][1])


def eval_stage(name: str, model_artifact: str) -> tuple[str, list[str]]:
    stage = f"evaluate-{name}"
    return stage, toml_table(stage, {}, "evaluate", {
        "checkpoint": model_artifact, "metrics": f"{name}_metrics",
        "metrics_table": f"{name}_metrics_table", "eval_detections": f"{name}_eval_detections"})


def pseudo_cfg(args: argparse.Namespace) -> dict[str, Any]:
    """SCKD's sigma = 0.1 for every class, unless `--class-thresholds` overrides some."""
    cfg: dict[str, Any] = {"sigma": 0.1}
    if args.class_thresholds:
        cfg["class_thresholds"] = args.class_thresholds
    return cfg


def label_cfg(args: argparse.Namespace, **cfg: Any) -> dict[str, Any]:
    """teacher-label's delta: batch size 8, and `--teacher-tta` when it is not "none"."""
    return {"batch_size": 8, **cfg} | ({"tta": args.teacher_tta}
                                       if args.teacher_tta != "none" else {})


def weighted(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A row's distill delta with `--kd-weight` and `--kd-decay` on its models/kd method (if it
    has one)."""
    if "kd" not in cfg or (args.kd_weight == 1.0 and args.kd_decay == "none"):
        return cfg
    extra = {"weight": args.kd_weight} | ({"decay": args.kd_decay}
                                          if args.kd_decay != "none" else {})
    return {**cfg, "kd": {m: {**o, **extra} for m, o in cfg["kd"].items()}}
