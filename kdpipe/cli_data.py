"""`kdpipe synth` and `kdpipe export ...` / `export-rerun`: data into and out of kdpipe's
formats. Parses, calls, prints; registered on the app in `kdpipe.cli`."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kdpipe.cli_common import Json, Ws, emit_json, out

synth_app = typer.Typer(help="Write a procedural world in a real dataset format.")

Overwrite = Annotated[bool, typer.Option("--overwrite",
                                          help="empty a non-empty OUT first (else refused)")]


def _synth_out(out_dir: Path, overwrite: bool) -> None:
    """A world written over another leaves the old one's files behind: OUT must be new or
    empty, or emptied with --overwrite (never a folder holding the current directory)."""
    import shutil

    from kdpipe.pipeline.errors import ConfigError

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"synth: {out_dir} is a file, not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"synth: {out_dir} is not empty; its old files would mix with the new "
                          f"world (pass --overwrite to empty it first, or pick a new folder)")
    here, target = Path.cwd().resolve(), out_dir.resolve()
    if target == here or target in here.parents or target == Path.home().resolve():
        raise ConfigError(f"synth --overwrite: refusing to empty {out_dir}, which holds the "
                          f"current or home directory")
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _synth(out_dir: Path, overwrite: bool, as_json: bool, write: Callable[[], Any]) -> None:
    """Check (or empty) OUT, write the world, report its summary."""
    _synth_out(out_dir, overwrite)
    summary = write()
    emit_json(summary) if as_json else out.print(f"wrote {out_dir}: {summary}")


def _given(**knobs: int | None) -> dict[str, int]:
    """The SynthConfig knobs the user set (the rest keep the config's defaults)."""
    return {k: v for k, v in knobs.items() if v is not None}


SynthOut = Annotated[Path, typer.Argument(help="folder to write the world into (new or empty)")]
Seed = Annotated[int, typer.Option(help="random seed (same seed, same files)")]


@synth_app.command("vod")
def synth_vod(out_dir: SynthOut,
              frames: Annotated[int, typer.Option(min=1, help="frames to write")] = 64,
              frames_per_scene: Annotated[int | None, typer.Option(
                  min=1, help="10 Hz frames per scene (default 80: 8 s); splits take whole "
                              "scenes, so shorter scenes give each split more of them")] = None,
              seed: Seed = 0, overwrite: Overwrite = False, as_json: Json = False) -> None:
    """A synthetic View-of-Delft world (LiDAR, 4D radar, camera, labels, calib, poses)."""
    from kdpipe.datasets.synth import SynthConfig, write_vod

    cfg = SynthConfig(**_given(vod_frames_per_scene=frames_per_scene))
    _synth(out_dir, overwrite, as_json, lambda: write_vod(out_dir, frames, seed, cfg))


@synth_app.command("nuscenes")
def synth_nuscenes(out_dir: SynthOut,
                   scenes: Annotated[int, typer.Option(min=1, help="scenes to write")] = 2,
                   samples_per_scene: Annotated[int | None, typer.Option(
                       min=1, help="2 Hz keyframes per scene (default 20: 10 s)")] = None,
                   seed: Seed = 0, overwrite: Overwrite = False, as_json: Json = False) -> None:
    """A synthetic nuScenes v1.0-mini world (tables, LIDAR_TOP, 5 radars, cameras)."""
    from kdpipe.datasets.synth import SynthConfig, write_nuscenes

    cfg = SynthConfig(**_given(nus_samples_per_scene=samples_per_scene))
    _synth(out_dir, overwrite, as_json, lambda: write_nuscenes(out_dir, scenes, seed, cfg))


export_app = typer.Typer(help="Write a box table in an official evaluation format.")
Table = Annotated[Path, typer.Argument(help="detections, pseudo-labels or boxes Parquet table")]
Ingest = Annotated[Path, typer.Option("--ingest", help="ingest artifact directory of the table")]
Split = Annotated[str | None, typer.Option(help="only this split's frames (default: all)")]
TableFrames = Annotated[bool, typer.Option("--table-frames",
                                           help="only the frames that appear in the table")]
AllStates = Annotated[bool, typer.Option("--all-states", help="pseudo-labels: also 'ignore' rows")]


@export_app.command("kitti")
def export_kitti(table: Table, ingest: Ingest,
                 out_dir: Annotated[Path, typer.Option("--out", help="label folder")],
                 split: Split = None, all_states: AllStates = False,
                 table_frames: TableFrames = False,
                 camera: Annotated[str, typer.Option(help="calibration sensor of the labels' "
                                                          "camera frame")] = "camera",
                 as_json: Json = False) -> None:
    """KITTI label files for the VoD evaluator (one per frame, empty when no boxes)."""
    from kdpipe.export import Selection
    from kdpipe.export import export_kitti as run_export

    select = Selection(split=split, table_frames=table_frames, all_states=all_states)
    summary = run_export(table, ingest, out_dir, select, camera=camera)
    emit_json(summary) if as_json else out.print(
        f"wrote {summary['n_files']} label files ({summary['n_boxes']} boxes) to {out_dir}")


@export_app.command("nuscenes")
def export_nuscenes(table: Table, ingest: Ingest,
                    out_json: Annotated[Path, typer.Option("--out", help="submission JSON")],
                    split: Split = None, all_states: AllStates = False,
                    table_frames: TableFrames = False, as_json: Json = False) -> None:
    """A nuScenes detection submission (every sample of the frame list present)."""
    from kdpipe.export import Selection
    from kdpipe.export import export_nuscenes as run_export

    select = Selection(split=split, table_frames=table_frames, all_states=all_states)
    summary = run_export(table, ingest, out_json, select)
    emit_json(summary) if as_json else out.print(
        f"wrote {out_json}: {summary['n_samples']} samples, {summary['n_boxes']} boxes")


def export_rerun(
    out_rrd: Annotated[Path, typer.Option("--out", help="recording to write (FILE.rrd; open "
                                          "it with `rerun FILE.rrd`)")],
    workspace: Ws = "workspace",
    audit: Annotated[list[str] | None, typer.Option(
        "--audit", help="audit stage, instance or STAGE/KEY: its worst frames, detections "
        "marked TP/FP (repeatable)")] = None,
    selection: Annotated[list[str] | None, typer.Option(
        "--selection", help="curate stage, instance or STAGE/KEY: its selected frames in rank "
        "order, with the teacher detections it read (repeatable)")] = None,
    frame: Annotated[list[str] | None, typer.Option(
        "--frame", help="frame id (vod/00549) or unique native id (repeatable)")] = None,
    detections: Annotated[str | None, typer.Option(
        help="--frame frames: stage name or Parquet path of scored boxes to draw")] = None,
    min_score: Annotated[float, typer.Option(
        help="--selection / --frame detections below are not exported")] = 0.1,
    radar_sensor: Annotated[str, typer.Option(
        help="store radar sensor: radar, or VoD's accumulated radar_3 / radar_5")] = "radar",
    images: Annotated[bool, typer.Option(help="include each frame's camera image")] = True,
    as_json: Json = False,
) -> None:
    """Write committed frames (an audit's worst, a curate selection, frame ids) as one Rerun
    recording: LiDAR, radar, ground truth and detections in the ego frame, per-frame numbers."""
    from kdpipe.viewer_frames import RerunExport
    from kdpipe.viewer_frames import export_rerun as run_export

    summary = run_export(RerunExport(
        out=out_rrd, workspace=workspace, audits=audit or [], selections=selection or [],
        frames=frame or [], detections=detections, min_score=min_score,
        radar_sensor=radar_sensor, images=images))
    emit_json(summary) if as_json else out.print(
        f"wrote {summary['out']}: {summary['frames']} frame(s), {summary['n_lidar']} LiDAR and "
        f"{summary['n_radar']} radar points, {summary['n_gt']} GT and {summary['n_det']} "
        f"detected boxes, {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s "
        f"(open: rerun {summary['out']})", highlight=False)
