"""`kdpipe export`: a box table plus its ingest artifact -> official evaluation formats.

The calls behind the CLI: they read the table and the ingest's frames/calibration, choose the
frame list and hand over to ``kdpipe.evaluation``. Every input problem raises
``ExportError`` (a ``KdpipeError``: one line on stderr, exit code 2).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kdpipe.evaluation.kitti_export import ExportError, table_kind, write_kitti_predictions
from kdpipe.evaluation.nuscenes_eval import write_submission


@dataclass(frozen=True)
class Selection:
    """Which frames and rows an export writes (`--split`, `--table-frames`, `--all-states`).

    split: only this split's frames; table_frames: only the frames that appear in the table
    (default: every frame of the ingest); all_states: pseudo-labels, also the 'ignore' rows.
    """

    split: str | None = None
    table_frames: bool = False
    all_states: bool = False


def _read(path: Path, what: str) -> pl.DataFrame:
    if not path.is_file():
        raise ExportError(f"{what} not found: {path}")
    try:
        return pl.read_parquet(path)
    except Exception as e:  # polars raises several types for a corrupt or non-Parquet file
        raise ExportError(f"{what} {path} is not a readable Parquet file ({type(e).__name__})") \
            from e


def load_inputs(table: Path, ingest: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The table (box columns checked) and the ingest's frames (every table frame in them)."""
    if not ingest.is_dir():
        raise ExportError(f"ingest artifact directory not found: {ingest}")
    tab = _read(table, "table")
    table_kind(tab)  # box columns present, before anything else is read
    frames = _read(ingest / "frames.parquet", "ingest frames table")
    unknown = sorted(set(tab["frame_id"].unique().to_list()) - set(frames["frame_id"]))
    if unknown:
        raise ExportError(f"{len(unknown)} frame(s) of {table.name} are not in the ingest "
                          f"{ingest}, e.g. {unknown[0]!r}")
    return tab, frames


def frame_list(table: pl.DataFrame, frames: pl.DataFrame, split: str | None,
               table_frames: bool) -> list[str]:
    """Frames to export: ``--split``'s frames, the table's own (``--table-frames``), else all
    frames of the ingest. A frame listed but without boxes still gets its (empty) entry."""
    if split is not None:
        splits = sorted({s for s in frames["split"].to_list() if s is not None})
        ids = frames.filter(pl.col("split") == split)["frame_id"].to_list()
        if not ids:
            raise ExportError(f"no frames of split {split!r} in the ingest (splits: "
                              f"{', '.join(splits) or 'none'})")
        return ids
    if table_frames:
        wanted = set(table["frame_id"].to_list())
        return [f for f in frames["frame_id"].to_list() if f in wanted]
    return frames["frame_id"].to_list()


def export_kitti(table: Path, ingest: Path, out_dir: Path, select: Selection | None = None, *,
                 camera: str = "camera") -> dict[str, Any]:
    """KITTI label files (VoD evaluator format) for a detections / pseudo-labels / boxes table;
    `camera`: the calibration sensor whose frame the labels are in."""
    sel = select or Selection()
    tab, frames = load_inputs(table, ingest)
    calib = _read(ingest / "calibration.parquet", "ingest calibration table")
    ids = frame_list(tab, frames, sel.split, sel.table_frames)
    mapping = write_kitti_predictions(tab, frames, calib, out_dir, ids,
                                      all_states=sel.all_states, camera=camera)
    n_rows = sum(len(p.read_text().splitlines())
                 for p in (out_dir / f"{s}.txt" for s in mapping.values()))
    return {"out": str(out_dir), "n_files": len(mapping), "n_boxes": n_rows}


def export_nuscenes(table: Path, ingest: Path, out_json: Path,
                    select: Selection | None = None) -> dict[str, Any]:
    """A nuScenes detection submission JSON for a detections / pseudo-labels / boxes table."""
    sel = select or Selection()
    tab, frames = load_inputs(table, ingest)
    datasets = set(frames["dataset"].to_list())
    if datasets != {"nuscenes"}:
        raise ExportError(f"nuScenes export needs a nuScenes ingest, this one holds "
                          f"{', '.join(sorted(d or '?' for d in datasets)) or 'no frames'}")
    ids = frame_list(tab, frames, sel.split, sel.table_frames)
    summary = write_submission(tab, frames, out_json, ids, all_states=sel.all_states)
    return {"out": str(out_json), **summary}
