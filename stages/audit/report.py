"""The audit's HTML page: matplotlib figures as base64 PNGs, tables, no external resources.

Everything drawn here is read from the audit JSON (plus the worst frames' points and boxes), so
the page and the JSON cannot disagree.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from kdpipe.datasets.store import IngestStore
from kdpipe.stages.audit.bev import frame_boxes, frame_points, render_bev

_PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f", "#2ca02c", "#d62728"]


def png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass(frozen=True)
class _Marker:
    """How a marked point looks: matplotlib format ("o", "*"...), legend label (None: none)."""

    style: str
    label: str | None
    color: str


@dataclass(frozen=True)
class WorstFrames:
    """What the page draws the worst frames from: the ingest store, their FRAMES rows, the
    ground truth and the kept pseudo-labels (tables of those frames), the radar sensor."""

    ingest: IngestStore
    frames: pl.DataFrame
    gt: pl.DataFrame
    kept: pl.DataFrame
    radar_sensor: str = "radar"


def _mark(ax: Any, point: dict[str, float] | None, x: str, y: str, marker: _Marker) -> None:
    if point is not None:
        ax.plot(point[x], point[y], marker.style, color=marker.color, markersize=8,
                label=marker.label, markeredgecolor="black", markeredgewidth=0.6)


def fig_pr(report: dict[str, Any]) -> Figure:
    """Precision vs recall per class; sigma, the class threshold and the recommendation marked."""
    classes = report["classes"]
    n = max(len(classes), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    for i, (name, c) in enumerate(classes.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        color = _PALETTE[i % len(_PALETTE)]
        ax.plot(c["pr_curve"]["recall"], c["pr_curve"]["precision"], color=color, lw=1.6)
        _mark(ax, c["marked"]["sigma"], "recall", "precision", _Marker("o", "sigma", "white"))
        _mark(ax, c["marked"].get("class_threshold"), "recall", "precision",
              _Marker("s", "class threshold", "#cccccc"))
        _mark(ax, c["recommended"]["best_f1"], "recall", "precision",
              _Marker("*", "best F1", color))
        _mark(ax, c["recommended"]["precision_target"], "recall", "precision",
              _Marker("^", "precision target", color))
        ax.set_xlim(-0.02, 1.02)  # a curve lying on 0 stays visible
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{name}: AP {c['ap']:.3f} ({c['n_gt']} GT)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def fig_f1(report: dict[str, Any], sigma: float, class_thresholds: dict[str, float]) -> Figure:
    """F1 against the score threshold, per class; sigma and the class thresholds as lines."""
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, c) in enumerate(report["classes"].items()):
        color = _PALETTE[i % len(_PALETTE)]
        ax.plot(c["f1_curve"]["threshold"], c["f1_curve"]["f1"], color=color, lw=1.6, label=name)
        if name in class_thresholds:
            ax.axvline(class_thresholds[name], color=color, ls=":", lw=1.2)
        _mark(ax, c["recommended"]["best_f1"], "threshold", "f1", _Marker("*", None, color))
    ax.axvline(sigma, color="black", ls="--", lw=1.0, label=f"sigma {sigma:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("score threshold (keep score >= t)")
    ax.set_ylabel("F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_reliability(report: dict[str, Any]) -> Figure:
    """Share of true positives per score bin against the bin's mean score."""
    fig = Figure(figsize=(5.5, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="calibrated")

    def line(cal: dict[str, Any], label: str, color: str, lw: float) -> None:
        pts = [(s, a) for s, a in zip(cal["mean_score"], cal["accuracy"], strict=True)
               if s is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", color=color, lw=lw, ms=3.5,
                    label=f"{label} (ECE {cal['ece']:.3f})")

    overall = report["calibration"]
    edges = np.asarray(overall["edges"])
    ax.bar(edges[:-1], np.asarray(overall["count"]) / max(sum(overall["count"]), 1),
           width=np.diff(edges), align="edge", color="#dddddd", label="share of detections")
    line(overall, "all", "black", 2.0)
    for i, (name, c) in enumerate(report["classes"].items()):
        line(c["calibration"], name, _PALETTE[i % len(_PALETTE)], 1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("detection score")
    ax.set_ylabel("share matched (true positives)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def class_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, c in report["classes"].items():
        op, best = c["operating"], c["recommended"]["best_f1"] or {}
        tgt = c["recommended"]["precision_target"] or {}
        rows.append([name, c["n_gt"], c["n_det"], c["ap"], op["threshold"], op["precision"],
                     op["recall"], op["f1"], best.get("threshold"), best.get("f1"),
                     tgt.get("threshold"), c["calibration"]["ece"]])
    return rows


def band_tables(section: dict[str, Any]) -> str:
    out = []
    for name, rows in section.items():
        if name == "bins":
            continue
        out.append(f"<h4>{html.escape(name)}</h4>" + table(
            ["bin", "GT", "detections", "AP", "precision @op", "recall @op", "F1 @op", "best F1"],
            [[r["bin"], r["n_gt"], r["n_det"], r["ap"], r["precision"], r["recall"], r["f1"],
              r["best_f1"]] for r in rows]))
    return "".join(out)


def bev_images(report: dict[str, Any], worst: WorstFrames) -> list[tuple[str, str]]:
    """(caption, data URI) of each worst frame: points, ground truth, kept pseudo-labels."""
    ingest, frames, gt, kept = worst.ingest, worst.frames, worst.gt, worst.kept
    radar_sensor = worst.radar_sensor
    out = []
    rng = tuple(report["protocol"]["bev_range_m"])
    by_id = {r["frame_id"]: r for r in frames.to_dicts()}
    for w in report["worst_frames"]:
        lidar, radar = frame_points(ingest, by_id[w["frame_id"]], radar_sensor=radar_sensor)
        gt_b, gt_l = frame_boxes(gt, w["frame_id"])
        pr_b, pr_l = frame_boxes(kept, w["frame_id"])
        scores = kept.filter(pl.col("frame_id") == w["frame_id"])["score"].to_numpy()
        fig = Figure(figsize=(6.0, 6.0 * (rng[2] - rng[0]) / (rng[3] - rng[1])))
        ax = fig.add_subplot(1, 1, 1)
        caption = f"{w['frame_id']}: TP {w['tp']}, FP {w['fp']}, FN {w['fn']}"
        render_bev(ax, lidar_xyz_ego=lidar, radar_xyz_ego=radar, gt_boxes=gt_b, gt_labels=gt_l,
                   pred_boxes=pr_b, pred_scores=scores, pred_labels=pr_l, range_m=rng,  # type: ignore[arg-type]
                   title=caption)
        fig.tight_layout()
        out.append((caption, png_data_uri(fig)))
    return out


_CSS = """body{font-family:sans-serif;margin:24px;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;font-size:13px}th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;width:420px}
figcaption{font-size:12px}"""


def write_html(path: Path, report: dict[str, Any], worst: WorstFrames) -> None:
    """Write the report page; every image is a data URI, so the file stands alone."""
    cfg, proto = report["config"], report["protocol"]
    figs = {"pr": fig_pr(report), "f1": fig_f1(report, cfg["sigma"], cfg["class_thresholds"]),
            "reliability": fig_reliability(report)}
    img = {k: png_data_uri(f) for k, f in figs.items()}
    bevs = bev_images(report, worst)
    nus = report.get("nuscenes")
    head = (f"<p>splits {html.escape(', '.join(report['splits']))}: {report['n_frames']} frames, "
            f"{report['n_detections']} detections; criterion <b>{proto['criterion']}</b> "
            f"(thresholds {html.escape(str(proto['match_threshold']))})"
            + ("; nuScenes DetectionEval rules" if proto["nuscenes_rules"] else "")
            + f". mAP <b>{report['mean_ap']:.4f}</b>; overall ECE "
              f"{report['calibration']['ece']:.3f}.</p>")
    if nus:
        head += table(["class", *nus["ap"][next(iter(nus["ap"]))].keys(), "mean"],
                      [[c, *v.values(), nus["class_ap"][c]] for c, v in nus["ap"].items()])
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>kdpipe audit</title>",
        f"<style>{_CSS}</style></head><body><h1>Pseudo-label audit</h1>", head,
        "<h2>Per class</h2>",
        table(["class", "GT", "detections", "AP", "op threshold", "precision", "recall", "F1",
               "best-F1 threshold", "best F1", "precision-target threshold", "ECE"],
              class_rows(report)),
        "<p>Recommended thresholds: "
        f"<code>{html.escape(str(report['recommended_thresholds']))}</code></p>",
        f"<h2>Precision-recall</h2><img id='fig-pr' alt='PR curves' src='{img['pr']}'>",
        f"<h2>F1 vs threshold</h2><img id='fig-f1' alt='F1 curves' src='{img['f1']}'>",
        "<h2>Calibration</h2><img id='fig-reliability' alt='reliability diagram' "
        f"src='{img['reliability']}'>",
        "<h2>By distance from the ego vehicle</h2>", band_tables(report["by_distance"]),
        "<h2>By radar points on the object</h2>", band_tables(report["by_radar_points"]),
        "<h2>Worst frames (most false positives + misses at the operating thresholds)</h2>",
        "<p>green: ground truth; red: pseudo-labels kept at the operating thresholds; grey: "
        "LiDAR; blue: radar.</p><div class='grid'>",
        *(f"<figure><img class='bev' alt='{html.escape(c)}' src='{u}'><figcaption>"
          f"{html.escape(c)}</figcaption></figure>" for c, u in bevs),
        "</div></body></html>",
    ]
    Path(path).write_text("\n".join(parts), encoding="utf-8")
