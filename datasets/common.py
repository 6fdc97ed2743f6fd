"""What every ingest format shares: one task writes one group (a scene, or a block of
consecutive frames) as a Zarr v3 group plus Parquet parts, then a done-marker.

Why one writer per group: sharded Zarr writes are read-modify-write of whole shards, so two
tasks touching one shard silently lose data (zarr-python#3514); a group per task rules that out.
Why a done-marker per group: Zarr is atomic per object only; the marker lets a re-run after a
kill redo exactly the unfinished groups.

The KITTI-derived layouts (VoD, kitti-radar) also share their split names, box rows from KITTI
labels, image sizes from headers and the missing-file reject (`need_file`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from kdpipe.datasets import shard_writer as sw
from kdpipe.datasets.box_counts import count_points_in_boxes
from kdpipe.datasets.formats.bins import recording_digests
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.formats.kitti import DONT_CARE, KittiLabels
from kdpipe.pipeline.hashing import digest_path
from kdpipe.schemas import boxes as bx
from kdpipe.schemas.tables import BOXES, CALIBRATION, FRAMES, REJECTS, frame_table

# sensor name -> (field names, units); the order is the column order of `points`
SENSOR_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "lidar": (("x", "y", "z", "intensity"), ("m", "m", "m", "1")),
    "vod_radar": (("x", "y", "z", "rcs", "v_r", "v_r_comp", "time"),
                  ("m", "m", "m", "dBsm", "m/s", "m/s", "scan")),
}

# split files of the KITTI-derived layouts (VoD, kitti-radar), in the order they are read
SPLITS = ("train", "val", "unlabeled", "test")

SOURCES = {"path": pl.String, "bytes": pl.Int64, "sha256": pl.String}


@dataclass(frozen=True)
class Storage:
    chunk_rows: int
    shard_chunks: int
    clevel: int
    compressor: str = "lz4"   # blosc codec name, or "none"


@dataclass(frozen=True)
class ArrayLayout:
    """How an extra array of a group is stored (chunking, sharding, names, attributes)."""

    chunks: tuple[int, ...]
    shards: tuple[int, ...]
    dims: tuple[str, ...]                  # dimension names, e.g. ("frame", "y", "x", "rgb")
    attrs: Mapping[str, Any] = field(default_factory=dict)
    shuffle: bool = True                   # blosc byte shuffle (off for uint8 images)


@dataclass
class FileLog:
    """Raw files read by a task: path, size and sha256 of the bytes actually read.

    Inside `reading()`, the parsers' reads record each file's sha256 as they read it, and `add`
    takes it from there: one pass over each raw file, not a second read to digest it.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    read: dict[str, str] = field(default_factory=dict)   # str(path) -> sha256, not yet logged

    @contextmanager
    def reading(self) -> Iterator[None]:
        with recording_digests() as seen:
            self.read = seen
            try:
                yield
            finally:
                self.read = {}

    def add(self, path: str | Path) -> None:
        name = str(path) if isinstance(path, Path) else str(Path(path))  # as Path spells it
        sha = self.read.pop(str(path), None)
        if sha is None:  # not read by a parser (an image), or read outside `reading()`
            h = hashlib.sha256()
            with open(name, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            sha = h.hexdigest()
        self.rows.append({"path": name, "bytes": os.stat(name).st_size, "sha256": sha})


@dataclass
class GroupWriter:
    """Collects one group's frames in memory (bounded by the group), then writes them."""

    workdir: Path
    source: str
    scene: str
    storage: Storage
    frames: list[dict[str, Any]] = field(default_factory=list)
    boxes: list[dict[str, Any]] = field(default_factory=list)
    calib: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    points: dict[str, list[npt.NDArray[np.float32]]] = field(default_factory=dict)
    fields: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = field(default_factory=dict)
    extra: list[tuple[str, npt.NDArray[Any], ArrayLayout]] = field(default_factory=list)
    log: FileLog = field(default_factory=FileLog)   # raw files read for this group

    @property
    def part(self) -> Path:
        return self.workdir / "_parts" / self.source / self.scene

    def done(self) -> bool:
        return (self.part / "_done").exists()

    def reject(self, frame: str, file: str | Path, check: str, reason: str) -> None:
        self.rejects.append({"source": self.source, "frame": frame, "file": str(file),
                             "check": check, "reason": reason})

    def declare(self, sensor: str, names: tuple[str, ...], units: tuple[str, ...],
                native_frame: str) -> None:
        self.fields[sensor] = (names, units, native_frame)
        self.points.setdefault(sensor, [])

    def add_frame(self, row: dict[str, Any], clouds: dict[str, npt.NDArray[np.float32]],
                  boxes: list[dict[str, Any]], calib: list[dict[str, Any]]) -> None:
        """Append one validated frame; every declared sensor needs a cloud (maybe empty)."""
        frame_id = f"{self.source}/{row['frame']}"
        row = {**row, "frame_id": frame_id, "source": self.source, "scene": self.scene,
               "frame_index": len(self.frames), "n_boxes": len(boxes)}
        for sensor in self.fields:
            cloud = clouds[sensor]
            ncol = len(self.fields[sensor][0])
            cloud32 = np.ascontiguousarray(cloud, dtype=np.float32)
            self.points[sensor].append(cloud32.reshape(-1, ncol))
        self.frames.append(row)
        self.boxes += [{**b, "frame_id": frame_id, "box_index": i} for i, b in enumerate(boxes)]
        self.calib += [{**c, "frame_id": frame_id} for c in calib]

    def add_array(self, path: str, data: npt.NDArray[Any], layout: ArrayLayout) -> None:
        """An extra array in this group (e.g. `camera/CAM_FRONT`), written by `write` with the
        points and before the done-marker, so a group is never done without it."""
        self.extra.append((path, data, layout))

    def _codec(self, shuffle: bool) -> Any:
        from zarr.codecs import BloscCodec, BloscShuffle

        if self.storage.compressor == "none":
            return None
        return BloscCodec(cname=self.storage.compressor, clevel=self.storage.clevel,
                          shuffle=BloscShuffle.shuffle if shuffle else BloscShuffle.noshuffle)

    def write(self, zarr_root: Path) -> None:
        """Write the Zarr group, the Parquet parts, the raw-file log and the group digest, then
        the done-marker (last). Everything a resumed run needs from this group is in `part`."""
        gdir = zarr_root / self.source / self.scene
        shutil.rmtree(gdir, ignore_errors=True)  # a killed earlier attempt
        shutil.rmtree(self.part, ignore_errors=True)
        rows, nodes, arrays = self.storage.chunk_rows, [], []
        for sensor, clouds in self.points.items():
            names, units, native = self.fields[sensor]
            counts = np.array([len(c) for c in clouds], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (F + 1,)
            nodes += [sw.Node(sensor), sw.Node(f"{sensor}/points", {
                "fields": list(names), "units": list(units), "frame": "ego",
                "native_frame": native}, {
                "shape": (int(offsets[-1]), len(names)), "dtype": np.float32,
                "chunks": (rows, len(names)),
                "shards": (rows * self.storage.shard_chunks, len(names)),
                "compressors": self._codec(True), "dimension_names": ("point", "field")}),
                sw.Node(f"{sensor}/offsets", {
                    "meaning": "points[offsets[i]:offsets[i+1]] belong to frame i"}, {
                    "shape": offsets.shape, "dtype": np.int64,
                    "chunks": (max(len(offsets), 1),), "compressors": None})]
            arrays.append((sensor, clouds, offsets))
        # extra arrays (camera frames): metadata in the same round trip, chunks written below
        parents = sorted({p[:i] for p, _, _ in self.extra for i, c in enumerate(p) if c == "/"})
        nodes += [sw.Node(p) for p in parents] + [sw.Node(p, dict(lay.attrs), {
            "shape": data.shape, "dtype": data.dtype, "chunks": lay.chunks, "shards": lay.shards,
            "compressors": self._codec(lay.shuffle), "dimension_names": lay.dims})
            for p, data, lay in self.extra]
        # every zarr.json of the group in one round trip to zarr's event loop
        sw.create_nodes(gdir, {"source": self.source, "scene": self.scene,
                        "frames": [f["frame"] for f in self.frames]}, nodes)
        written = sw.Written(gdir)
        for sensor, clouds, offsets in arrays:
            # the frames' clouds go chunk by chunk into the shards: no concatenated copy
            sw.write_row_array(gdir / sensor / "points", clouds, written)
            sw.write_small_array(gdir / sensor / "offsets", offsets, written)
        for path, data, _ in self.extra:  # frame-chunked: the shard writer (else zarr's own)
            sw.write_row_array(gdir / path, [data], written)
        self.part.mkdir(parents=True, exist_ok=True)
        for name, table, schema in (("frames", self.frames, FRAMES), ("boxes", self.boxes, BOXES),
                                    ("calibration", self.calib, CALIBRATION),
                                    ("rejects", self.rejects, REJECTS)):
            frame_table(table, schema).write_parquet(self.part / f"{name}.parquet")
        pl.DataFrame(self.log.rows, schema=SOURCES).write_parquet(self.part / "sources.parquet")
        # digested here, in parallel across groups, so the driver never re-reads the store
        (self.part / "_digest").write_text(digest_path(gdir, written.sha256))
        (self.part / "_done").write_text(str(len(self.frames)))


def block_groups(frame_ids: list[str], block_frames: int) -> list[tuple[str, list[str]]]:
    """Groups of numeric frame ids for datasets without scenes: block = id // block_frames.

    Stable as data grows: adding frames only changes the blocks they fall in.
    """
    blocks: dict[str, list[str]] = {}
    for fid in frame_ids:
        blocks.setdefault(f"block_{int(fid) // block_frames:05d}", []).append(fid)
    return sorted(blocks.items())


def assemble(workdir: Path, zarr_root: Path, outputs: dict[str, Path],
             metadata: dict[str, str]) -> tuple[pl.DataFrame, str]:
    """Concatenate every group's parts into the stage's tables, sorted for determinism.

    Returns the raw files read (a path, bytes, sha256 table, for lineage) and the store's
    digest: sha256 over the root's metadata files and each group's digest, in path order.
    """
    from kdpipe.pipeline.hashing import sha256_bytes, sha256_file

    parts = workdir / "_parts"
    keys = {"frames": ["frame_id"], "boxes": ["frame_id", "box_index"],
            "calibration": ["frame_id", "sensor"], "rejects": ["source", "frame", "file", "check"]}
    schemas = {"frames": FRAMES, "boxes": BOXES, "calibration": CALIBRATION, "rejects": REJECTS}
    for name, sort in keys.items():
        files = sorted(parts.glob(f"*/*/{name}.parquet"))
        # one multi-file read: polars reads the parts in parallel, in the order given
        df = pl.read_parquet(files) if files else pl.DataFrame(schema=schemas[name])
        df.sort(sort).write_parquet(outputs[name], metadata=metadata, compression="zstd",
                                    statistics=True)
    files = sorted(parts.glob("*/*/sources.parquet"))
    sources = pl.read_parquet(files) if files else pl.DataFrame(schema=SOURCES)
    meta = [zarr_root / "zarr.json", *sorted(zarr_root.glob("*/zarr.json"))]  # root + sources
    lines = [f"{p.relative_to(zarr_root)}\0{sha256_file(p)}" for p in meta]
    lines += [f"{d.parent.name}/{d.name}\0{(d / '_digest').read_text()}"
              for d in sorted(parts.glob("*/*")) if (d / "_done").exists()]
    shutil.rmtree(parts, ignore_errors=True)
    return sources, sha256_bytes("\n".join(sorted(lines)).encode())


def need_file(path: Path | None, what: str) -> Path:
    """`path` if it is a file; else the frame's reject ("missing", or "path" when the layout
    could not even name it)."""
    if path is None or not path.is_file():
        raise FormatError(str(path), "missing" if path else "path", f"{what} file is missing.")
    return path


def image_size(path: Path | None) -> tuple[int | None, int | None]:
    """(width, height) in pixels from the image header, (None, None) without an image."""
    if path is None:
        return None, None
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except OSError as e:
        raise FormatError(path, "header", f"unreadable image: {e}") from None


def kitti_box_rows(lab: KittiLabels, t_cam_from_lidar: npt.NDArray[np.float64],
                   lidar: npt.NDArray[np.float32], radar: npt.NDArray[np.float32]
                   ) -> list[dict[str, Any]]:
    """Box rows of KITTI labels (camera frame) in the ego (= LiDAR) frame, DontCare dropped.

    Args:
        lab: the frame's parsed label file.
        t_cam_from_lidar: (4, 4) rectified camera <- LiDAR.
        lidar: (N, >=3) points in the ego frame, counted per box.
        radar: (M, >=3) points in the ego frame, counted per box.
    """
    keep = lab.class_name != DONT_CARE
    b = bx.kitti_camera_to_ego(lab.loc_cam[keep], lab.dims_hwl[keep], lab.rot_y[keep],
                               t_cam_from_lidar)                                 # (B, 7)
    n_l = count_points_in_boxes(lidar[:, :3], b)
    n_r = count_points_in_boxes(radar[:, :3], b)
    # plain Python numbers, one conversion per array (the same float64 / int values)
    out = []
    for name, (x, y, z, length, width, height, yaw), (left, top, right, bottom), occ, nl, nr in zip(
            lab.class_name[keep].tolist(), b.tolist(), lab.bbox_ltrb[keep].tolist(),
            lab.occluded[keep].tolist(), n_l.tolist(), n_r.tolist(), strict=True):
        out.append({"class_name": str(name), "label": str(name),
                    "x_ego_m": x, "y_ego_m": y, "z_ego_m": z,
                    "length_m": length, "width_m": width, "height_m": height,
                    "yaw_ego_rad": yaw, "occluded": int(occ),
                    "bbox_left_px": left, "bbox_top_px": top,
                    "bbox_right_px": right, "bbox_bottom_px": bottom,
                    "num_lidar_pts": int(nl), "num_radar_pts": int(nr)})
    return out
