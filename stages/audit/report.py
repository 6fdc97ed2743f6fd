"""The audit's HTML page: matplotlib figures as base64 PNGs, tables, no external resources.

Everything drawn here is read from the audit JSON (plus the worst frames' points and boxes), so
the page and the JSON cannot disagree. The page names what it audits (`report["audited"]`: model,
checkpoint and detections artifacts, workflow), score axes span the observed scores (a teacher
whose scores all sit in 0.09-0.14 fills the axis, not 5% of it), legends sit outside the axes,
and a recommended threshold whose best F1 is below `WEAK_F1` is flagged.
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

WEAK_F1 = 0.1  # a recommended threshold whose best F1 is below this is flagged
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


def score_axis(report: dict[str, Any], margin: float = 0.05) -> tuple[float, float]:
    """The score axis (lo, hi) of the threshold and calibration plots: the observed detection
    scores (every class's curve keeps its highest and lowest score) widened by `margin` of
    their span on each side (at least 0.005), within [0, 1]; (0, 1) when there is no score."""
    scores = [s for c in report["classes"].values() for s in c["pr_curve"].get("score", [])]
    scores += [s for c in report["classes"].values() for s in c["f1_curve"]["threshold"]]
    if not scores:
        return 0.0, 1.0
    lo, hi = float(min(scores)), float(max(scores))
    pad = max(margin * (hi - lo), 0.005)
    return max(0.0, lo - pad), min(1.0, hi + pad)


def weak_thresholds(report: dict[str, Any], min_f1: float = WEAK_F1
                    ) -> dict[str, tuple[float, float]]:
    """Classes whose recommended threshold comes with a best F1 below `min_f1`:
    {class: (recommended threshold, best F1)}."""
    out = {}
    for name, thr in report["recommended_thresholds"].items():
        best = report["classes"].get(name, {}).get("recommended", {}).get("best_f1") or {}
        f1 = best.get("f1")
        if f1 is not None and f1 < min_f1:
            out[name] = (float(thr), float(f1))
    return out


def weak_threshold_warning(report: dict[str, Any], min_f1: float = WEAK_F1) -> str | None:
    """One line naming the recommended thresholds whose best F1 is below `min_f1` (None: none)."""
    weak = weak_thresholds(report, min_f1)
    if not weak:
        return None
    items = ", ".join(f"{n} {t:.3f} (best F1 {f:.3f})" for n, (t, f) in weak.items())
    return (f"warning: recommended threshold(s) with best F1 below {min_f1:g}: {items}; "
            f"pseudo-labels kept at them are mostly wrong or missing")


def _legend_outside(ax: Any, **kw: Any) -> None:
    """A legend right of the axes, so it never covers a curve (tight_layout makes room)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


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
    ncol = 4 if cols > 1 else 2  # the shared legend's columns: it fits the figure's width
    below = 0.3 * (4 // ncol) + 0.1  # inches under the panels for that legend
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows + below))
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
    # one legend for every panel, below them: class colours differ, marker shapes do not
    from matplotlib.lines import Line2D

    keys = [("o", "sigma", "white"), ("s", "class threshold", "#cccccc"),
            ("*", "best F1", "#888888"), ("^", "precision target", "#888888")]
    handles = [Line2D([], [], ls="none", marker=m, color=col, markersize=8,
                      markeredgecolor="black", markeredgewidth=0.6, label=lab)
               for m, lab, col in keys]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, below / (3.6 * rows + below), 1.0, 1.0))
    return fig


def fig_f1(report: dict[str, Any], sigma: float, class_thresholds: dict[str, float]) -> Figure:
    """F1 against the score threshold, per class; sigma and the class thresholds as lines."""
    lo, hi = score_axis(report)

    def where(t: float) -> str:  # a line off the axis still gets its legend entry
        return " (below every score)" if t < lo else " (above every score)" if t > hi else ""

    fig = Figure(figsize=(9.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, c) in enumerate(report["classes"].items()):
        color = _PALETTE[i % len(_PALETTE)]
        ax.plot(c["f1_curve"]["threshold"], c["f1_curve"]["f1"], color=color, lw=1.6, label=name)
        if name in class_thresholds:
            t = class_thresholds[name]
            ax.axvline(t, color=color, ls=":", lw=1.2, label=f"{name} threshold {t:g}{where(t)}")
        _mark(ax, c["recommended"]["best_f1"], "threshold", "f1", _Marker("*", None, color))
    ax.axvline(sigma, color="black", ls="--", lw=1.0, label=f"sigma {sigma:g}{where(sigma)}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("score threshold (keep score >= t)")
    ax.set_ylabel("F1")
    ax.grid(alpha=0.3)
    _legend_outside(ax, fontsize=8)
    fig.tight_layout()
    return fig


def fig_reliability(report: dict[str, Any]) -> Figure:
    """Share of true positives per score bin against the bin's mean score."""
    fig = Figure(figsize=(8.0, 4.6))
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
    ax.set_xlim(*score_axis(report))  # the bins stay 0-1 wide; the view is the scores seen
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("detection score")
    ax.set_ylabel("share matched (true positives)")
    _legend_outside(ax, fontsize=7)
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


def _ref(a: dict[str, Any] | None) -> str | None:
    return f"{a['stage']}/{a['key']}" if a else None


def audited_text(report: dict[str, Any]) -> str:
    """What the page audits, in words: model, checkpoint and detections artifacts, workflow,
    this audit's own key ("not recorded" for what the report does not know)."""
    a = report.get("audited") or {}
    parts = [f"model {a.get('model') or 'not recorded'}",
             f"checkpoint {_ref(a.get('checkpoint')) or 'not recorded'}",
             f"detections {_ref(a.get('detections')) or 'not recorded'}",
             f"workflow {a.get('workflow') or 'not recorded'}"]
    if a.get("audit"):
        parts.append(f"audit {_ref(a['audit'])}")
    return "; ".join(parts)


def _title(report: dict[str, Any]) -> str:
    a = report.get("audited") or {}
    what = " ".join(x for x in (a.get("model"), _ref(a.get("checkpoint"))) if x)
    wf = f" (workflow {a['workflow']})" if a.get("workflow") else ""
    return f"kdpipe audit: {what}{wf}" if what or wf else "kdpipe audit"


_CSS = """body{font-family:sans-serif;margin:24px;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;font-size:13px}th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;width:420px}
figcaption{font-size:12px}.warn{color:#a00000;font-weight:bold}
.audited{font-size:15px}"""


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
    warn = weak_threshold_warning(report)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(_title(report))}</title>",
        f"<style>{_CSS}</style></head><body><h1>Pseudo-label audit</h1>",
        f"<p class='audited' id='audited'>Audited: {html.escape(audited_text(report))}</p>",
        f"<p class='warn' id='weak-thresholds'>{html.escape(warn)}</p>" if warn else "", head,
        "<h2>Per class</h2>",
        table(["class", "GT", "detections", "AP", "op threshold", "precision", "recall", "F1",
               "best-F1 threshold", "best F1", "precision-target threshold", "ECE"],
              class_rows(report)),
        "<p>Recommended thresholds: "
        f"<code>{html.escape(str(report['recommended_thresholds']))}</code></p>",
        f"<p class='warn'>{html.escape(warn)}</p>" if warn else "",
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
