"""DESIGN.md's figures read out of each benchmark's JSON: what was measured, its baseline from
the same run, the goal and whether it was met (used by run_all.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


def row(figure: str, measured: str, baseline: str = "-", goal: str = "-",
        met: bool | None = None) -> Row:
    return {"figure": figure, "measured": measured, "baseline": baseline, "goal": goal,
            "met": met}


def _ingest(d: dict[str, Any]) -> list[Row]:
    fmt, n = d.get("format", "?"), d.get("frames", "?")
    base = ("nuscenes-devkit load loop" if fmt == "nuscenes"
            else "vod-tudelft FrameDataLoader loop")
    tr, rss = d["training_reads"], d["peak_rss_mb"]
    return [
        row(f"ingest frames/s, {fmt}, {n} frames, 2 local workers",
            f"{d['ingest_fps_2workers']} ({d['vs_devkit']['ratio']}x)",
            f"{base}: {d['devkit_load_fps']}", ">= 3x", d["vs_devkit"]["met"]),
        row("ingest vs the read limit",
            f"{d['ingest_fps_2workers']} ({d['vs_fromfile']['ratio']}x)",
            f"np.fromfile: {d['fromfile_fps']}", ">= 0.5x", d["vs_fromfile"]["met"]),
        row("ingest peak RSS, 10x vs 1x frames (sync)",
            f"{rss['10x']} vs {rss['1x']} MB ({rss['ratio']})", "-", "< 1.3", rss["met"]),
        row("training reads, random order (frames/s)", f"{tr['store_fps']} ({tr['ratio']}x)",
            f"per-frame np.fromfile: {tr['fromfile_fps']}", ">= 1.0x", tr["met"]),
        row("2 Dask workers vs 1 (ingest frames/s)",
            f"{d['ingest_fps_2workers']} vs {d['ingest_fps_1worker']} "
            f"({d['workers_2_vs_1']['ratio']}x)", "1 worker", ">= 1.7x",
            d["workers_2_vs_1"]["met"]),
    ]


def _rerun(d: dict[str, Any]) -> list[Row]:
    return [row(f"no-op re-run, {d['frames']} frames ({d['raw_files']} raw files), fresh process",
                f"{d['noop_cli_s_median']} s median, {d['noop_cli_s_max']} s max", "-",
                f"< {d['goal_s']} s", d["met"])]


def _crash(d: dict[str, Any]) -> list[Row]:
    by = ", ".join(f"{k} {v}" for k, v in sorted(d["kills_by_stage"].items()))
    return [row(f"SIGKILL at seeded random moments ({d['scheduler']}), re-run, compare",
                f"{d['kills']} kills ({by}); {d['kills_with_checkpoint_on_disk']} with a "
                f"train_state.pt on disk; {d['artifacts_compared']} artifacts / "
                f"{d['files_compared']} files compared over {d['chains']} completions; "
                f"{len(d['mismatches'])} mismatches, {len(d['leftovers'])} leftovers, "
                f"{d['lock_held_after_kill']} locks held",
                "uninterrupted run (same machine, same scheduler)", "0 mismatches", d["met"])]


def _teacher(d: dict[str, Any]) -> list[Row]:
    tl, th = d["teacher_label"], d["threshold_change"]
    ap = {k.split(" ")[0]: v.get("entire_area/mAP_3d_ap11") for k, v in d["vod_ap11_val"].items()}
    return [
        row("teacher-label vs bare forward", f"{tl['pipeline_seconds']} s ({tl['ratio']}x)",
            f"bare forward + decode: {round(tl['bare_forward']['seconds'], 2)} s", "<= 1.10x",
            tl["ratio"] is not None and tl["ratio"] <= 1.10),
        row("threshold change", f"ran {th['ran']}, {th['filter_seconds']} s "
            f"({round(100 * th['vs_teacher_label'], 2)} %)", "teacher-label stage",
            "only the filter, < 5 %",
            th["ran"] == ["pseudo-label"] and th["vs_teacher_label"] < 0.05),
        row("VoD val EAA mAP (AP11): fused teacher", str(ap.get("teacher")),
            f"LiDAR-only {ap.get('lidar')}, radar-only {ap.get('radar')}", "teacher > baseline",
            (ap.get("teacher") or 0) > (ap.get("radar") or 0)),
    ]


def _kd(d: dict[str, Any]) -> list[Row]:
    g, t = d["goals"], d["vod_val"]
    maps = "; ".join(f"{k}: {v['EAA mAP ap11']['mean']} +- {v['EAA mAP ap11']['std']}"
                     for k, v in t.items())
    gain = g["SCKD - baseline (EAA mAP ap11), need >= 10"]
    best = g["best feature KD"]
    n = len(d["seeds"])
    return [
        row(f"KD ablation rows, VoD val EAA mAP AP11 ({n} seeds)", maps,
            "radar-only baseline (GT only)", "teacher > SCKD > baseline", None),
        row("SCKD student - radar baseline (EAA mAP)", f"{gain['mean']} +- {gain['std']}", "-",
            ">= 10", gain["mean"] >= 10),
        row("best feature KD - SSOD only (EAA mAP)", f"{best['row']}: {best['mean']} +- "
            f"{best['std']}", "SSOD only", ">= 3, beyond 2 std",
            best["met (>= 3 and beyond 2 std)"]),
        row("ablation wall time per seed, one command, CPU",
            f"{round(d['wall_seconds'] / 60 / n, 1)} min", "-", "< 30 min",
            d["wall_seconds"] / n < 1800),
    ]


def _audit(d: dict[str, Any]) -> list[Row]:
    return [
        row("audit mAP vs DetectionEval", f"{d['map_kdpipe']:.6f} (|diff| {d['map_abs_diff']:.1e})",
            f"DetectionEval: {d['map_devkit']:.6f}", "within 1e-3", d["map_abs_diff"] <= 1e-3),
        row("audit speed vs DetectionEval", f"{round(d['kdpipe_seconds'], 3)} s "
            f"({round(d['speedup'], 1)}x)", f"DetectionEval: {round(d['devkit_seconds'], 3)} s",
            ">= 10x", d["speedup"] >= 10),
    ]


def _imkd(d: dict[str, Any]) -> list[Row]:
    g = d["goal"]
    key = next(k for k in g if k.endswith("NDS"))  # older JSON: "IMKD (L1+L2+L3) - no KD, NDS"
    best = f" ({g['best KD row']})" if "best KD row" in g else ""
    return [row(f"IMKD: {key}{best}", str(g[key]), "camera+radar student without KD", g["need"],
                g["met"])]


def _contention(d: dict[str, Any]) -> list[Row]:
    if d.get("mode") != "pipeline":  # older JSON: training steps only
        r = d["results"]["passive (kdpipe)"]
        return [row("training steps beside busy loops on every core, slowdown",
                    f"{r['slowdown']}x", f"alone: {r['alone_s_per_step']} s/step",
                    d["goal"], d["met"])]
    runs = d["runs"]
    return [row("a pipeline run beside busy loops on every core, slowdown",
                f"{d['slowdown']}x ({runs['beside']['wall_s']} s)",
                f"alone: {runs['alone']['wall_s']} / {runs['alone_again']['wall_s']} s",
                d["goal"], d["met"])]


FIGURES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "contention": _contention,
    "ingest": _ingest, "rerun": _rerun, "crash_drill": _crash, "teacher": _teacher,
    "kd_ablation": _kd, "audit": _audit, "imkd": _imkd}


def figure_rows(name: str, doc: dict[str, Any]) -> list[Row]:
    """The rows of one benchmark; its JSON's shape changing gives a row saying so, not a crash."""
    fn = FIGURES.get(name)
    if fn is None:
        return [row("(no DESIGN.md figure)", f"see docs/bench/{name}.json")]
    try:
        return fn(doc)
    except (KeyError, TypeError, ValueError, StopIteration, ZeroDivisionError) as e:
        return [row("(figures not readable)", f"{type(e).__name__}: {e}; see the JSON")]
