"""Bad-input corpus: corrupted copies of real and synthetic dataset roots (DESIGN.md "Bad input").

`vod_corpus`, `kitti_corpus` and `nuscenes_corpus` copy a clean root (the real fixtures or a
synthetic world; the originals are never touched), give every kind of damage its own frame and
return what ingest must make of it: one rejects row with that check per damaged frame, every
other frame ingested, so input frames = ingested + rejected. Kinds that must stop the whole run
(a corrupt table, a split file naming a path, a full disk, an unwritable workspace) are run one
by one by tests/drills/test_bad_input.py.

    # writes /tmp/vod_bad/manifest.json
    python -m kdpipe.testing.corrupt vod ../shared/fixtures/real/vod /tmp/vod_bad
"""
from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GONE = "no-such-token"


@dataclass(frozen=True)
class Case:
    kind: str      # the kind of damage (DESIGN.md's list, plus permissions and duplicates)
    frame: str     # native id of the damaged frame (VoD / KITTI number, nuScenes sample token)
    check: str     # the rejects-table check ingest must report


@dataclass
class Corpus:
    dataset: str
    root: Path
    n_input: int                                  # frames in the root: ingested + rejected
    cases: list[Case] = field(default_factory=list)


def _cut(n: int) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(p.read_bytes()[:-n])


def _append(raw: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(p.read_bytes() + raw)


def _set_value(n_fields: int, row: int, col: int, value: float) -> Callable[[Path], None]:
    def go(p: Path) -> None:
        a = np.fromfile(p, "<f4").reshape(-1, n_fields)
        a[row % len(a), col] = value
        a.tofile(p)
    return go


def _label_edit(col: int, value: str) -> Callable[[Path], None]:
    def go(p: Path) -> None:
        lines = p.read_text().splitlines()
        tokens = lines[0].split()
        tokens[col] = value
        p.write_text("\n".join([" ".join(tokens), *lines[1:]]) + "\n")
    return go


def _drop_line(prefix: str) -> Callable[[Path], None]:
    return lambda p: p.write_text("".join(x for x in p.read_text().splitlines(True)
                                          if not x.startswith(prefix)))


def _symlink_out(levels: int) -> Callable[[Path], None]:
    """Move the file out of the root (`levels` folders up) and leave a symlink in its place."""
    def go(p: Path) -> None:
        root = p.parents[levels]
        outside = root.parent / f"{root.name}_outside" / p.name
        outside.parent.mkdir(exist_ok=True)
        shutil.move(p, outside)
        p.symlink_to(outside.resolve())
    return go


def _unreadable(p: Path) -> None:
    p.chmod(0)  # needs a process without CAP_DAC_OVERRIDE to bite (root ignores it)


# kind -> (file pattern relative to the root, damage, expected check); {f} is the frame id
VOD_KINDS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated_bin": ("lidar/training/velodyne/{f}.bin", _cut(5), "size"),
    "missized_bin": ("radar/training/velodyne/{f}.bin", _append(b"\0" * 8), "size"),
    "nan_coords": ("radar/training/velodyne/{f}.bin", _set_value(7, 0, 0, math.nan), "finite"),
    "inf_coords": ("lidar/training/velodyne/{f}.bin", _set_value(4, 7, 1, math.inf), "finite"),
    "empty_cloud": ("radar/training/velodyne/{f}.bin", lambda p: p.write_bytes(b""), "empty"),
    "missing_calib": ("radar/training/calib/{f}.txt", Path.unlink, "missing"),
    "calib_without_p2": ("lidar/training/calib/{f}.txt", _drop_line("P2"), "calib"),
    "missing_pose": ("lidar/training/pose/{f}.json", Path.unlink, "missing"),
    "corrupt_pose_json": ("lidar/training/pose/{f}.json",
                          lambda p: p.write_text('{"odomToCamera": [1, 2'), "pose"),
    "unknown_class": ("lidar/training/label_2/{f}.txt", _label_edit(0, "Dinosaur"), "class"),
    "negative_box_size": ("lidar/training/label_2/{f}.txt", _label_edit(8, "-1.5"), "box_size"),
    "nan_in_label": ("lidar/training/label_2/{f}.txt", _label_edit(11, "nan"), "finite"),
    "missing_lidar": ("lidar/training/velodyne/{f}.bin", Path.unlink, "missing"),
    "label_without_points": ("lidar/training/velodyne/{f}.bin",
                             lambda p: [q.unlink() for q in _frame_files(p.parents[3], p.stem)
                                        if q.parent.name != "label_2"], "missing"),
    "symlink_out_of_root": ("lidar/training/velodyne/{f}.bin", _symlink_out(3), "path"),
    "unreadable_file": ("lidar/training/calib/{f}.txt", _unreadable, "path"),
}
KITTI_KINDS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated_bin": ("training/velodyne/{f}.bin", _cut(6), "size"),
    "nan_coords": ("training/velodyne/{f}.bin", _set_value(4, 3, 2, math.nan), "finite"),
    "empty_cloud": ("training/velodyne/{f}.bin", lambda p: p.write_bytes(b""), "empty"),
    "missing_calib": ("training/calib/{f}.txt", Path.unlink, "missing"),
    "calib_without_p2": ("training/calib/{f}.txt", _drop_line("P2"), "calib"),
    "negative_box_size": ("training/label_2/{f}.txt", _label_edit(10, "-0.1"), "box_size"),
    "symlink_out_of_root": ("training/velodyne/{f}.bin", _symlink_out(2), "path"),
}


def _frame_files(root: Path, fid: str) -> list[Path]:
    return sorted(p for p in root.rglob(f"{fid}.*") if "ImageSets" not in p.parts)


def _replicate(src: Path, dst: Path, n: int, width: int, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy `src` with its frames repeated under `n` new ids (0-padded to `width`)."""
    base = sorted({p.stem for p in src.rglob("*.bin")
                   if p.stem.isdigit() and not any(s in p.parts for s in skip)})
    ids = [f"{100 + i:0{width}d}" for i in range(n)]
    for new, old in zip(ids, (base[i % len(base)] for i in range(n)), strict=True):
        for p in _frame_files(src, old):
            if any(s in p.parts for s in skip):
                continue
            out = dst / p.relative_to(src).with_name(f"{new}{p.suffix}")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out)
    return ids


@dataclass(frozen=True)
class _FileLayout:
    """A file-per-frame dataset as the corpus damages it.

    kinds: kind -> (file pattern with {f}, damage, check ingest must report); width: digits of
    a frame id; skip: folders left out of the copy.
    """

    dataset: str
    kinds: dict[str, tuple[str, Callable[[Path], None], str]]
    width: int
    skip: tuple[str, ...] = ()


def _file_corpus(layout: _FileLayout, src: Path, dst: Path, clean: int) -> Corpus:
    kinds = layout.kinds
    ids = _replicate(src, dst, len(kinds) + clean, layout.width, layout.skip)
    corpus = Corpus(layout.dataset, dst, len(ids))
    for fid, (kind, (pattern, damage, check)) in zip(ids[clean:], sorted(kinds.items()),
                                                      strict=True):
        damage(dst / pattern.format(f=fid))
        corpus.cases.append(Case(kind, fid, check))
    return corpus


def vod_corpus(src: Path, dst: Path, clean: int = 2) -> Corpus:
    """Every VoD kind on its own frame, `clean` untouched frames, plus two duplicate kinds."""
    vod = _FileLayout("vod", VOD_KINDS, 5, skip=("label_2_json",))
    corpus = _file_corpus(vod, src, dst, clean)
    ids = sorted({p.stem for p in (dst / "lidar/training/label_2").glob("*.txt")})
    # one frame number spelled twice ("00100" and "100"): the second spelling is the duplicate
    spelled = str(int(ids[0]))
    for p in _frame_files(dst, ids[0]):
        shutil.copyfile(p, p.with_name(spelled + p.suffix))
    corpus.cases.append(Case("duplicate_frame_id", spelled, "duplicate"))
    corpus.n_input += 1
    # one frame in two splits (train and val): a leak or a typo, either way not guessable
    sets = dst / "lidar/ImageSets"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text(f"{ids[0]}\n{ids[1]}\n")
    (sets / "val.txt").write_text(f"{ids[1]}\n")
    corpus.cases.append(Case("frame_in_two_splits", ids[1], "duplicate"))
    return corpus


def kitti_corpus(src: Path, dst: Path, clean: int = 2) -> Corpus:
    """KITTI object layout (`ingest.format = "kitti-radar"`, LiDAR-only)."""
    kitti = _FileLayout("kitti", KITTI_KINDS, 6, skip=("mmdet3d_demo",))
    return _file_corpus(kitti, src, dst, clean)


# ----------------------------------------------------------------------------- nuScenes


def _table(root: Path, name: str) -> list[dict[str, Any]]:
    return list(json.loads((root / "v1.0-mini" / f"{name}.json").read_text()))


def _put(root: Path, name: str, rows: list[dict[str, Any]]) -> None:
    (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows))


def _keyframe(root: Path, sample: str, channel: str) -> dict[str, Any]:
    return next(r for r in _table(root, "sample_data") if r["sample_token"] == sample
                and r["is_key_frame"] and f"/{channel}/" in r["filename"])


def _set_sd(root: Path, sd: dict[str, Any], **kv: Any) -> None:
    _put(root, "sample_data", [{**r, **kv} if r["token"] == sd["token"] else r
                               for r in _table(root, "sample_data")])


def _more_points(raw: bytes) -> bytes:  # the header promises far more points than follow
    return raw.replace(b"\nPOINTS ", b"\nPOINTS 9", 1).replace(b"\nWIDTH ", b"\nWIDTH 9", 1)


def _pcd(fn: Callable[[bytes], bytes]) -> Callable[[Path, dict[str, Any]], None]:
    """Rewrite the sample_data's point file: bytes -> bytes."""
    def go(root: Path, sd: dict[str, Any]) -> None:
        p = root / sd["filename"]
        p.write_bytes(fn(p.read_bytes()))
    return go


def _ann_size(root: Path, sd: dict[str, Any], value: float) -> None:
    anns = _table(root, "sample_annotation")
    i = next(i for i, a in enumerate(anns) if a["sample_token"] == sd["sample_token"])
    anns[i]["size"] = [value, anns[i]["size"][1], anns[i]["size"][2]]
    _put(root, "sample_annotation", anns)


def _header_fields(raw: bytes) -> bytes:  # SIZE names one field fewer than FIELDS
    return raw.replace(b"\nSIZE 4 ", b"\nSIZE ", 1)


NUS_KINDS: dict[str, tuple[str, Callable[[Path, dict[str, Any]], None], str]] = {
    "truncated_bin": ("LIDAR_TOP", _pcd(lambda b: b[:-7]), "size"),
    "nan_coords": ("LIDAR_TOP", _pcd(lambda b: np.full((4, 5), np.nan, "<f4").tobytes()),
                   "finite"),
    "empty_cloud": ("LIDAR_TOP", _pcd(lambda b: b""), "empty"),
    "pcd_points_beyond_payload": ("RADAR_FRONT", _pcd(_more_points),
                                  "payload"),
    "pcd_header_disagrees": ("RADAR_BACK_LEFT", _pcd(_header_fields), "header"),
    "missing_calib": ("RADAR_FRONT_RIGHT",
                      lambda root, sd: _set_sd(root, sd, calibrated_sensor_token=GONE), "calib"),
    "missing_pose": ("LIDAR_TOP", lambda root, sd: _set_sd(root, sd, ego_pose_token=GONE), "pose"),
    "negative_box_size": ("LIDAR_TOP", lambda root, sd: _ann_size(root, sd, -2.0), "box_size"),
    "nan_box": ("LIDAR_TOP", lambda root, sd: _ann_size(root, sd, math.nan), "finite"),
    "time_gap": ("RADAR_BACK_RIGHT",
                 lambda root, sd: _set_sd(root, sd, timestamp=sd["timestamp"] + 250_000),
                 "time_gap"),
    "path_escape": ("LIDAR_TOP", lambda root, sd: _set_sd(root, sd, filename="../../x.pcd.bin"),
                    "path"),
    "absolute_path": ("RADAR_FRONT", lambda root, sd: _set_sd(root, sd, filename="/etc/hostname"),
                      "path"),
    "symlink_out_of_root": ("LIDAR_TOP",
                            lambda root, sd: _symlink_out(2)(root / sd["filename"]), "path"),
    "missing_file": ("RADAR_FRONT_LEFT", lambda root, sd: (root / sd["filename"]).unlink(),
                     "missing"),
    "duplicate_frame_id": ("LIDAR_TOP", lambda root, sd: _put(root, "sample", [
        *_table(root, "sample"), *[s for s in _table(root, "sample")
                                   if s["token"] == sd["sample_token"]]]), "duplicate"),
}


def nuscenes_corpus(src: Path, dst: Path) -> Corpus:
    """A copy of a synthetic nuScenes world, each kind on its own keyframe sample (the world
    needs more samples than kinds; the first and last stay clean)."""
    shutil.copytree(src, dst, symlinks=True)
    samples = _table(dst, "sample")
    if len(samples) < len(NUS_KINDS) + 2:
        raise ValueError(f"{src} has {len(samples)} samples, need {len(NUS_KINDS) + 2}")
    corpus = Corpus("nuscenes", dst, len(samples) + 1)  # + the duplicated sample record
    for s, (kind, (channel, damage, check)) in zip(samples[1:], sorted(NUS_KINDS.items()),
                                                    strict=False):
        damage(dst, _keyframe(dst, s["token"], channel))
        corpus.cases.append(Case(kind, s["token"], check))
    return corpus


def main() -> None:
    kind, src, dst = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    corpus = {"vod": vod_corpus, "kitti": kitti_corpus, "nuscenes": nuscenes_corpus}[kind](src, dst)
    doc = {**asdict(corpus), "root": str(corpus.root)}
    (dst.parent / f"{dst.name}.manifest.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps({"root": str(dst), "frames": corpus.n_input, "damaged": len(corpus.cases)}))


if __name__ == "__main__":
    main()
