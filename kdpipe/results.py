"""What a run produced, in numbers: the results block of `kdpipe run`, its warnings, and
`kdpipe metrics` (evaluate metrics of a workspace side by side, like `dvc metrics show`).

Everything here only reads committed artifacts (their `_lineage.json` and output files); a
stage's role is told by its output ports, so stage instances (`[evaluate-student] uses =
"evaluate"`) count as the stage they use.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import polars as pl

from kdpipe.pipeline.errors import ConfigError

EVALUATE_PORTS = {"metrics", "eval_detections"}
# headline metrics: (metrics.json key, label)
VOD_HEADLINE = (("entire_area/mAP_3d_ap11", "3D mAP entire area (AP11)"),
                ("roi/mAP_3d_ap11", "3D mAP driving corridor (AP11)"),
                ("entire_area/mAP_bev_ap11", "BEV mAP entire area (AP11)"),
                ("roi/mAP_bev_ap11", "BEV mAP driving corridor (AP11)"))
NUSCENES_HEADLINE = (("mean_ap", "mAP"), ("nd_score", "NDS"))
VOD_CLASS = re.compile(r"^entire_area/(?!mAP_)(?P<cls>.+)_3d_ap11$")
NARROW_BAND = 0.05  # a teacher whose scores span less than this says little about confidence


@dataclass(frozen=True)
class Artifact:
    """One committed artifact: its stage instance, key, folder and lineage record."""

    stage: str
    key: str
    path: str
    lineage: dict[str, Any]
    fs: Any  # the workspace's fsspec filesystem (paths carry no protocol)

    def file(self, port: str) -> str:
        return f"{self.path}/{self.lineage['outputs'][port]['file']}"

    def ports(self) -> set[str]:
        return set(self.lineage.get("outputs", {}))


def _read_json(fs: Any, path: str) -> dict[str, Any]:
    with fs.open(path, "rt") as f:
        return dict(json.load(f))


def _read_parquet(fs: Any, path: str, columns: list[str] | None = None) -> pl.DataFrame:
    with fs.open(path, "rb") as f:
        return pl.read_parquet(f, columns=columns)


def _artifact(fs: Any, stage: str, key: str, path: str) -> Artifact:
    return Artifact(stage, key, path, _read_json(fs, f"{path}/_lineage.json"), fs)


def _checkpoint(a: Artifact) -> dict[str, Any]:
    """The checkpoint an evaluate artifact scored: upstream stage, key and file."""
    src = a.lineage.get("inputs", {}).get("checkpoint", {})
    stage, key = src.get("stage", "?"), src.get("key", "?")
    found = {"stage": stage, "key": key, "artifact": None, "file": None}
    try:
        up = _read_json(a.fs, f"{a.path.rsplit('/', 2)[0]}/{stage}/{key}/_lineage.json")
    except (OSError, ValueError):
        return found
    for port, o in up.get("outputs", {}).items():
        if o.get("digest") == src.get("digest"):
            found.update(artifact=port, file=o.get("file"))
    return found


def model_result(a: Artifact) -> dict[str, Any]:
    """Headline metrics, per-class AP and the score range of one evaluate artifact."""
    metrics = _read_json(a.fs, a.file("metrics"))
    bench = metrics.get("benchmark", "vod")
    if bench == "nuscenes":
        headline = {k: metrics.get(k) for k, _ in NUSCENES_HEADLINE}
        class_ap = dict(metrics.get("class_ap", {}))
    else:
        headline = {k: metrics.get(k) for k, _ in VOD_HEADLINE}
        class_ap = {m["cls"]: v for k, v in sorted(metrics.items())
                    if (m := VOD_CLASS.match(k))}
    scores = _read_parquet(a.fs, a.file("eval_detections"), ["score"])["score"]
    return {"stage": a.stage, "key": a.key, "checkpoint": _checkpoint(a), "benchmark": bench,
            "headline": headline, "class_ap": class_ap, "detections": scores.len(),
            "max_score": scores.max() if scores.len() else None,
            "metrics_json": a.file("metrics")}


def _sources(report: dict[str, Any]) -> list[Artifact]:
    fs = fsspec.core.url_to_fs(str(report.get("workspace", ".")))[0]
    return [_artifact(fs, r["stage"], r["key"], r["path"]) for r in report.get("stages", [])]


def _pseudo_result(a: Artifact, classes: Iterable[str]) -> dict[str, Any]:
    t = _read_parquet(a.fs, a.file("pseudo_labels"), ["label", "state"])
    counts = dict(t.filter(pl.col("state") == "positive").group_by("label").len().iter_rows())
    counts = {c: int(counts.get(c, 0)) for c in sorted({*classes, *counts})}
    return {"stage": a.stage, "key": a.key, "sigma": a.lineage.get("config", {}).get("sigma"),
            "positive": counts}


def _ingest_result(a: Artifact) -> dict[str, Any]:
    frames = _read_parquet(a.fs, a.file("frames"), ["frame_id"]).height
    rej = _read_parquet(a.fs, a.file("rejects"))
    cols = [c for c in ("source", "frame") if c in rej.columns]
    rejected = rej.select(cols).unique().height if cols else rej.height
    classes = sorted(set(_read_parquet(a.fs, a.file("boxes"), ["label"])["label"].drop_nulls()))
    return {"stage": a.stage, "key": a.key, "frames": frames, "rejected_frames": rejected,
            "reject_rows": rej.height, "classes": classes}


def _teacher_result(a: Artifact) -> dict[str, Any]:
    s = _read_parquet(a.fs, a.file("detections"), ["score"])["score"]
    return {"stage": a.stage, "key": a.key, "detections": s.len(),
            "min_score": s.min() if s.len() else None, "max_score": s.max() if s.len() else None}


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """`results` (None when nothing was evaluated) and `warnings` of a `run_workflow` report."""
    arts = _sources(report)
    ingest = [_ingest_result(a) for a in arts if {"frames", "rejects", "boxes"} <= a.ports()]
    models = [model_result(a) for a in arts if EVALUATE_PORTS <= a.ports()]
    # the classes the models are scored on, that the ground truth holds
    scored = {c for m in models for c in m["class_ap"]}
    gt = {c for i in ingest for c in i["classes"]}
    classes = sorted(scored & gt or scored)
    res = {"models": models,
           "pseudo_labels": [_pseudo_result(a, classes) for a in arts
                             if "pseudo_labels" in a.ports()],
           "ingest": ingest,
           "teacher_detections": [_teacher_result(a) for a in arts
                                  if {"detections", "detection_frames"} <= a.ports()]}
    return {"results": res if res["models"] else None, "warnings": warnings(res)}


def warnings(res: dict[str, Any]) -> list[str]:
    """One line per result that is not what a user would assume."""
    out = []
    for p in res["pseudo_labels"]:
        sigma = p["sigma"]
        for m in res["models"]:
            if sigma is not None and (m["max_score"] is None or m["max_score"] < sigma):
                top = "no detections" if m["max_score"] is None else \
                    f"highest detection score {m['max_score']:.4f}"
                out.append(f"{m['stage']}: {top} is below the pseudo-label threshold sigma "
                           f"{sigma:g} of {p['stage']}")
        for cls, n in p["positive"].items():
            if n == 0:
                out.append(f"{p['stage']}: class {cls} has 0 pseudo-labels (sigma {sigma})")
    for t in res["teacher_detections"]:
        if t["detections"] and t["max_score"] - t["min_score"] < NARROW_BAND:
            out.append(f"{t['stage']}: all {t['detections']} teacher scores lie in "
                       f"[{t['min_score']:.4f}, {t['max_score']:.4f}] (spread "
                       f"{t['max_score'] - t['min_score']:.4f} < {NARROW_BAND}); its scores "
                       f"hardly separate objects from background")
    for i in res["ingest"]:
        if i["rejected_frames"] > i["frames"]:
            out.append(f"{i['stage']}: {i['rejected_frames']} of "
                       f"{i['rejected_frames'] + i['frames']} frames rejected, "
                       f"{i['frames']} ingested (see its rejects table)")
    return out


# -- terminal ------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def model_label(m: dict[str, Any]) -> str:
    c = m["checkpoint"]
    what = c["file"] or c["artifact"] or "checkpoint"
    return f"{m['stage']}\n{c['stage']}/{str(c['key'])[:8]} {what}"


def render(res: dict[str, Any]) -> list[Any]:
    """Rich tables of a results dict: models side by side, then the data behind them."""
    from rich.table import Table

    models = res["models"]
    t = Table(title="results", title_justify="left")
    t.add_column("metric", no_wrap=True)
    for m in models:
        t.add_column(model_label(m), justify="right")
    labels = dict(VOD_HEADLINE + NUSCENES_HEADLINE)
    for k in dict.fromkeys(k for m in models for k in m["headline"]):
        t.add_row(labels.get(k, k), *(_fmt(m["headline"].get(k)) for m in models))
    for c in dict.fromkeys(c for m in models for c in m["class_ap"]):
        unit = "mAP" if models[0]["benchmark"] == "nuscenes" else "3D AP11 entire area"
        t.add_row(f"{c} {unit}", *(_fmt(m["class_ap"].get(c)) for m in models))
    t.add_row("highest detection score", *(_fmt(m["max_score"], 4) for m in models))
    tables = [t]
    data = Table(title="data", title_justify="left")
    data.add_column("", no_wrap=True)
    cols = [*res["pseudo_labels"], *res["ingest"]]
    for c in cols:
        data.add_column(c["stage"], justify="right")
    rows: dict[str, list[str]] = {}
    for j, c in enumerate(cols):
        vals = {f"pseudo-labels {k}": v for k, v in c.get("positive", {}).items()}
        if "sigma" in c:
            vals["pseudo-label sigma"] = c["sigma"]
        if "frames" in c:
            vals.update({"frames ingested": c["frames"], "frames rejected": c["rejected_frames"]})
        for k, v in vals.items():
            rows.setdefault(k, ["-"] * len(cols))[j] = _fmt(v)
    for k, v in rows.items():
        data.add_row(k, *v)
    if cols:
        tables.append(data)
    return tables


# -- kdpipe metrics --------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricsQuery:
    """`kdpipe metrics`: a workspace, optionally a workflow (its current keys only), names."""

    workspace: str
    workflow: Path | None = None
    names: Sequence[str] = ()


def _committed_evaluates(fs: Any, root: str) -> list[Artifact]:
    base = f"{root}/artifacts"
    found = []
    for lin in sorted(fs.glob(f"{base}/*/*/_lineage.json")):
        path = str(lin).rsplit("/", 1)[0]
        stage, key = path.rsplit("/", 2)[-2:]
        if key.endswith(".partial"):
            continue
        a = Artifact(stage, key, path, _read_json(fs, lin), fs)
        if EVALUATE_PORTS <= a.ports():
            found.append(a)
    return found


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | int]:
    """Numeric metrics with nested keys joined by '.' (ints stay ints)."""
    out: dict[str, float | int] = {}
    for k, v in sorted(metrics.items()):
        if isinstance(v, dict):
            out.update(flat_metrics(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def metrics_show(q: MetricsQuery) -> dict[str, Any]:
    """The evaluate metrics of a workspace's committed artifacts, one column each."""
    from kdpipe.pipeline.store import Workspace

    ws = Workspace(q.workspace, create=False).require()
    arts = _committed_evaluates(ws.fs, str(ws.root))
    if q.workflow is not None:
        from kdpipe.api import workflow_status

        current = {(r["stage"], r["key"]) for r in workflow_status(q.workflow, q.workspace)}
        arts = [a for a in arts if (a.stage, a.key) in current]
    if q.names:
        picked = [a for a in arts if any(n in (a.stage, f"{a.stage}/{a.key}")
                                         or a.key.startswith(n) for n in q.names)]
        unknown = [n for n in q.names if not any(n in (a.stage, f"{a.stage}/{a.key}")
                                                 or a.key.startswith(n) for a in arts)]
        if unknown:
            raise ConfigError(f"metrics: no committed evaluate artifact matches "
                              f"{', '.join(unknown)} in {q.workspace}")
        arts = picked
    arts.sort(key=lambda a: (str(a.lineage.get("end", "")), a.stage, a.key))  # oldest first
    values = [flat_metrics(_read_json(a.fs, a.file("metrics"))) for a in arts]
    cols = [{"stage": a.stage, "key": a.key, "checkpoint": _checkpoint(a),
             "end": a.lineage.get("end"), "metrics": v} for a, v in zip(arts, values, strict=True)]
    keys = list(dict.fromkeys(k for v in values for k in v))
    diff = None
    if len(values) >= 2:  # like `dvc metrics diff`: the newest minus the oldest
        first, last = values[0], values[-1]
        diff = {k: last[k] - first[k] for k in keys if k in first and k in last}
    return {"workspace": ws.url, "columns": cols, "metrics": keys, "diff": diff}


def render_metrics(rep: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table()
    t.add_column("metric", no_wrap=True)
    for c in rep["columns"]:
        ck = c["checkpoint"]
        t.add_column(f"{c['stage']}/{c['key'][:8]}\n{ck['stage']}/{str(ck['key'])[:8]}",
                     justify="right")
    if rep["diff"] is not None:
        t.add_column("diff", justify="right")
    for k in rep["metrics"]:
        row = [_fmt(c["metrics"].get(k)) for c in rep["columns"]]
        if rep["diff"] is not None:
            d = rep["diff"].get(k)
            row.append("-" if d is None else f"{d:+d}" if isinstance(d, int) else f"{d:+.2f}")
        t.add_row(k, *row)
    return t
