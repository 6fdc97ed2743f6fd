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
import statistics
import time
from pathlib import Path
from typing import Any, get_args

from kdpipe.api import run_workflow
from kdpipe.config import toml_value
from kdpipe.runtime.config import TtaMode
from kdpipe.schemas.model_names import KD_DECAYS

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


def _table(name: str, cfg: dict[str, Any], uses: str | None = None,
           ports: dict[str, str] | None = None) -> list[str]:
    lines = [f"[{name}]"]
    if uses:
        lines += [f'uses = "{uses}"', f"ports = {toml_value(ports or {})}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in cfg.items()]
    return lines


def _eval(name: str, model_artifact: str) -> tuple[str, list[str]]:
    stage = f"evaluate-{name}"
    return stage, _table(stage, {}, "evaluate", {
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


def workflow(path: Path, world: Path, args: argparse.Namespace, seed: int, n_labeled: int,
             n_unlabeled: int) -> dict[str, str]:
    """Table 3 + methods for one seed; returns {row label: evaluate stage}."""
    optim = {"epochs": args.epochs, "batch_size": 4, "lr_max": args.lr_max}
    det = {"detector": {"pillar_size_m": args.pillar_m}} if args.pillar_m else {}
    student_epochs = max(1, round(args.epochs * n_labeled / n_unlabeled))
    stages = ["ingest", "teacher-train", "train-radar", "teacher-label", "pseudo-label"]
    lines = ["[ingest]", 'format = "vod"', f'roots = ["{world}"]',
             *_table("teacher-train", {"model": "sckd-teacher", **det, "optim": optim}),
             *_table("train-radar", {"model": "radar-only", **det, "optim": optim},
                     "teacher-train",
                     {"teacher": "radar_model", "train_log": "radar_train_log"}),
             *_table("teacher-label", label_cfg(args)),
             *_table("pseudo-label", pseudo_cfg(args))]
    evals = {BASELINE: _eval("radar", "radar_model"), TEACHER: ("evaluate", ["[evaluate]"])}
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
        lines += _table(stage, {**cfg, "optim": {**optim, "epochs": epochs}}, "distill",
                        {"student": f"{name}_student", "distill_log": f"{name}_log"})
        evals[row] = _eval(name, f"{name}_student")
        stages += [stage, evals[row][0]]
        lines += evals[row][1]
    head = ["[workflow]", 'name = "kd-ablation"', f"stages = {toml_value(stages)}",
            f"seed = {seed}"]
    path.write_text("\n".join(head + lines) + "\n")
    return {row: stage for row, (stage, _) in evals.items()}


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
             *_table("teacher-q", {"model": "sckd-teacher", "max_frames": quarter, **det,
                                   "optim": optim},
                     "teacher-train", {"teacher": "q_teacher", "train_log": "q_teacher_log"}),
             *_table("radar-q", {"model": "radar-only", "max_frames": quarter, **det,
                                 "optim": optim},
                     "teacher-train", {"teacher": "q_radar", "train_log": "q_radar_log"}),
             *_table("label-q", label_cfg(args, splits=["train", "unlabeled", "val"]),
                     "teacher-label", {"teacher": "q_teacher", "detections": "q_detections",
                                       "detection_frames": "q_detection_frames"}),
             *_table("pseudo-q", pseudo_cfg(args), "pseudo-label", {
                 "detections": "q_detections", "detection_frames": "q_detection_frames",
                 "pseudo_labels": "q_pseudo_labels", "pseudo_label_frames": "q_pseudo_frames"})]
    evals = {f"radar baseline, {frac} labeled ({quarter})": _eval("q-radar", "q_radar"),
             f"teacher, {frac} labeled ({quarter})": _eval("q-teacher", "q_teacher")}
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
        lines += _table(stage, cfg, "distill", {
            "teacher": "q_teacher", "pseudo_labels": "q_pseudo_labels",
            "pseudo_label_frames": "q_pseudo_frames", "student": f"q_{name}_student",
            "distill_log": f"q_{name}_log"})
        evals[f"student ({args.table4_method}), {n} unlabeled ({name})"] = _eval(
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
        evals[f"radar-only on the GT of the {n_all} frames (oracle)"] = _eval("q-oracle",
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
        *_table("teacher-r2", {"student": "sckd-teacher", **NO_SCKD, "unlabeled_splits": splits,
                               "optim": optim}, "distill",
                {"teacher": "q_teacher", "pseudo_labels": "q_pseudo_labels",
                 "pseudo_label_frames": "q_pseudo_frames", "student": "r2_teacher",
                 "distill_log": "r2_teacher_log"}),
        *_table("label-r2", label_cfg(args, splits=["train", "unlabeled", "val"]),
                "teacher-label", {"teacher": "r2_teacher", "detections": "r2_detections",
                                  "detection_frames": "r2_detection_frames"}),
        *_table("pseudo-r2", {"sigma": args.self_train_sigma}, "pseudo-label", {
            "detections": "r2_detections", "detection_frames": "r2_detection_frames",
            "pseudo_labels": "r2_pseudo_labels", "pseudo_label_frames": "r2_pseudo_frames"}),
        *_table("distill-q-r2", {**method, "unlabeled_splits": splits, "optim": optim},
                "distill", {"teacher": "r2_teacher", "pseudo_labels": "r2_pseudo_labels",
                            "pseudo_label_frames": "r2_pseudo_frames",
                            "student": "q_r2_student", "distill_log": "q_r2_log"})]
    evals = {"teacher round 2 (re-trained on its pseudo-labels)":
             _eval("q-r2-teacher", "r2_teacher"),
             f"student ({args.table4_method}), round-2 labels at sigma "
             f"{args.self_train_sigma:g}": _eval("q-r2", "q_r2_student")}
    return stages, lines, evals


def oracle_stages(root: Path, cfg: dict[str, Any]) -> list[str]:
    """The oracle's own ingest of `root` and a radar-only detector trained on its train split;
    scored on the main store's val like every other row."""
    o = {p: f"oracle_{p}" for p in ("points", "frames", "boxes", "calibration", "rejects")}
    return [*_table("ingest-oracle", {"format": "vod", "roots": [str(root)]}, "ingest", o),
            *_table("radar-oracle", cfg, "teacher-train",
                    {"points": o["points"], "frames": o["frames"], "boxes": o["boxes"],
                     "teacher": "q_oracle", "train_log": "q_oracle_log"})]


def row_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for area, tag in (("entire_area", "EAA"), ("roi", "DC")):
        for ap in ("ap11", "ap40"):
            out[f"{tag} mAP {ap}"] = round(metrics[f"{area}/mAP_3d_{ap}"], 2)
        for cls in ("Car", "Pedestrian", "Cyclist"):
            out[f"{tag} {cls} ap11"] = round(metrics[f"{area}/{cls}_3d_ap11"], 2)
            out[f"{tag} {cls} n_gt"] = metrics.get(f"{area}/{cls}_n_gt", -1)
    return out


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """{row: {metric: {"mean", "std", "seeds"}}}; std is the sample std (0 for one seed)."""
    out: dict[str, dict[str, Any]] = {}
    for row in per_seed[0]:
        out[row] = {}
        for key in per_seed[0][row]:
            vals = [t[row][key] for t in per_seed]
            out[row][key] = {"mean": round(statistics.fmean(vals), 2),
                             "std": round(statistics.stdev(vals), 2) if len(vals) > 1 else 0.0,
                             "seeds": vals}
    return out


def paired(per_seed: list[dict[str, dict[str, float]]], a: str, b: str,
           key: str = "EAA mAP ap11") -> dict[str, float]:
    """a - b per seed: mean, sample std, and whether the mean exceeds twice that std."""
    d = [t[a][key] - t[b][key] for t in per_seed]
    sd = statistics.stdev(d) if len(d) > 1 else float("nan")
    return {"mean": round(statistics.fmean(d), 2), "std": round(sd, 2),
            "beyond_2_std": bool(len(d) > 1 and statistics.fmean(d) > 2 * sd)}


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


def goals_table4(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each student minus the (label-scarce) radar baseline, paired per seed."""
    base = next(r for r in per_seed[0] if r.startswith("radar baseline"))
    return {f"{row} - baseline (EAA mAP ap11)": paired(per_seed, row, base)
            for row in per_seed[0] if row.startswith(("student", "radar-only on the GT"))}


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a markdown table: mean +- std (over seeds) per row."""
    cols = ["EAA mAP ap11", "EAA mAP ap40", "EAA Car ap11", "EAA Pedestrian ap11",
            "EAA Cyclist ap11", "DC mAP ap11"]
    out = ["| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row, m in summary.items():
        cells = [f"{m[c]['mean']:.2f} +- {m[c]['std']:.2f}" for c in cols]
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(out)


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
