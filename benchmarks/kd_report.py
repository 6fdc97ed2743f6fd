"""Per-seed metrics, each row's mean and standard deviation over seeds, paired differences and
the markdown table of benchmarks/kd_ablation.py. A sibling module of kd_ablation.py."""
from __future__ import annotations

import statistics
from typing import Any


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


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a markdown table: mean +- std (over seeds) per row."""
    cols = ["EAA mAP ap11", "EAA mAP ap40", "EAA Car ap11", "EAA Pedestrian ap11",
            "EAA Cyclist ap11", "DC mAP ap11"]
    out = ["| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row, m in summary.items():
        cells = [f"{m[c]['mean']:.2f} +- {m[c]['std']:.2f}" for c in cols]
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(out)
