"""Raw-format parsers against the real fixtures, plus one corrupted copy per check."""
from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING

import numpy as np
import pytest
from nuscenes.utils.data_classes import RadarPointCloud

from kdpipe.datasets.formats import (
    CHECKS,
    RADAR_PCD_DTYPE,
    FormatError,
    KittiLabels,
    VodLayout,
    read_float32_bin,
    read_kitti_calib,
    read_kitti_labels,
    read_nuscenes_lidar,
    read_radar_pcd,
    read_vod_lidar,
    read_vod_pose,
    read_vod_radar,
    safe_join,
    write_float32_bin,
    write_kitti_calib,
    write_kitti_labels,
    write_radar_pcd,
    write_vod_pose,
)

if TYPE_CHECKING:
    from pathlib import Path

VOD_FRAMES = ("00549", "01047", "01201")
KITTI_FRAMES = ("000000", "000001", "000002")
NUSC_LIDAR = "nuscenes/lidar/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"


def _radar_pcds(real: Path) -> list[Path]:
    return sorted((real / "nuscenes/radar").glob("*.pcd"))


def _raises(check: str, fn, *args, **kwargs) -> FormatError:  # noqa: ANN001
    with pytest.raises(FormatError) as info:
        fn(*args, **kwargs)
    assert info.value.check == check, str(info.value)
    assert str(info.value).startswith(f"{info.value.path}: {check}: ")
    return info.value


# ----------------------------------------------------------------------------- errors


def test_format_error_contract() -> None:
    err = FormatError("a/b.bin", "size", "too short.")
    assert isinstance(err, ValueError)
    assert (err.path, err.check, err.reason, str(err)) == ("a/b.bin", "size", "too short.",
                                                           "a/b.bin: size: too short.")
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 (crosses dask worker boundaries)
    assert (again.path, again.check, again.reason) == (err.path, err.check, err.reason)
    assert {"size", "header", "payload", "finite", "empty", "label", "calib", "pose", "class",
            "box_size", "path"} <= CHECKS  # ingest adds its own (missing, duplicate, ...)
    with pytest.raises(ValueError, match="unknown"):
        FormatError("x", "nope", "r")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- bins (real)


@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_points(real: Path, frame: str) -> None:
    radar_path = real / f"vod/radar/training/velodyne/{frame}.bin"
    lidar_path = real / f"vod/lidar/training/velodyne/{frame}.bin"
    radar, lidar = read_vod_radar(radar_path), read_vod_lidar(lidar_path)
    assert radar.dtype == np.float32 and radar.shape == (radar_path.stat().st_size // 28, 7)
    assert lidar.dtype == np.float32 and lidar.shape == (lidar_path.stat().st_size // 16, 4)
    assert np.all(radar[:, 6] == 0)  # single-scan folder: time == 0
    assert lidar[:, 3].max() > 1.0  # VoD reflectance is 1..255, not KITTI's 0..1


def test_nuscenes_lidar(real: Path) -> None:
    scan = read_nuscenes_lidar(real / NUSC_LIDAR)
    assert scan.shape == (34_688, 5)
    assert 0 <= scan[:, 4].min() and scan[:, 4].max() <= 31  # ring index
    small = sorted((real / "nuscenes/lidar_truncated").rglob("*.pcd.bin"))
    shapes = sorted(read_nuscenes_lidar(p).shape for p in small)
    assert shapes == [(100, 5), (400, 5)]
    by_n = {len(a): a for a in (read_nuscenes_lidar(p) for p in small)}
    np.testing.assert_array_equal(by_n[100], by_n[400][:100])  # PROVENANCE: same prefix


@pytest.mark.parametrize("frame", KITTI_FRAMES)
def test_kitti_velodyne(real: Path, frame: str) -> None:
    path = real / f"kitti/training/velodyne/{frame}.bin"
    pts = read_float32_bin(path, 4)
    assert pts.shape == (path.stat().st_size // 16, 4) and pts[:, 3].max() < 1.0


def test_bin_round_trip(tmp_path: Path) -> None:
    pts = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    write_float32_bin(tmp_path / "a.bin", pts)
    np.testing.assert_array_equal(read_float32_bin(tmp_path / "a.bin", 7), pts)


# ----------------------------------------------------------------------------- bins (corrupt)


def test_bin_checks(real: Path, tmp_path: Path) -> None:
    raw = (real / "vod/radar/training/velodyne/00549.bin").read_bytes()
    (tmp_path / "trunc.bin").write_bytes(raw[:-5])
    _raises("size", read_vod_radar, tmp_path / "trunc.bin")
    (tmp_path / "wrong.bin").write_bytes(raw[: 28 * 3])  # 84 B: 7 floats x 3 but not 4 x k? 84 % 16
    _raises("size", read_vod_lidar, tmp_path / "wrong.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    _raises("empty", read_vod_radar, tmp_path / "empty.bin")
    pts = np.frombuffer(raw, np.float32).reshape(-1, 7).copy()
    pts[10, 1] = np.nan
    write_float32_bin(tmp_path / "nan.bin", pts)
    err = _raises("finite", read_vod_radar, tmp_path / "nan.bin")
    assert "row 10" in err.reason
    pts[10, 1], pts[3, 4] = 0.0, np.inf  # non-finite outside xyz is not a coordinate error
    write_float32_bin(tmp_path / "inf_vel.bin", pts)
    assert read_vod_radar(tmp_path / "inf_vel.bin").shape == pts.shape
    _raises("path", read_vod_radar, tmp_path / "missing.bin")


def test_safe_join(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "samples").mkdir(parents=True)
    (root / "samples" / "a.bin").write_bytes(b"")
    assert safe_join(root, "samples/a.bin") == (root / "samples/a.bin").resolve()
    assert safe_join(root, "samples/../samples/a.bin") == (root / "samples/a.bin").resolve()
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", root / "samples" / "link")
    os.symlink(root / "samples" / "a.bin", root / "samples" / "inner_link")
    assert safe_join(root, "samples/inner_link") == (root / "samples/a.bin").resolve()
    for bad in ("../secret", "samples/../../secret", str(tmp_path / "secret"), "/etc/passwd",
                "samples/link", "", "a\x00b", "~/x", "C:/x"):
        _raises("path", safe_join, root, bad)


# ----------------------------------------------------------------------------- radar PCD


def test_radar_pcd_matches_devkit(real: Path) -> None:
    paths = _radar_pcds(real)
    assert len(paths) == 3
    RadarPointCloud.disable_filters()
    try:
        for path in paths:
            ours = read_radar_pcd(path)
            assert ours.dtype == RADAR_PCD_DTYPE and ours.dtype.itemsize == 43
            assert len(ours) == 125
            np.testing.assert_array_equal(ours["id"], np.arange(125))
            dev = RadarPointCloud.from_file(str(path)).points  # (18, N) float64
            assert dev.shape == (18, 125)
            for k, name in enumerate(RADAR_PCD_DTYPE.names):
                np.testing.assert_array_equal(ours[name].astype(np.float64), dev[k], err_msg=name)
    finally:
        RadarPointCloud.default_filters()


def test_radar_pcd_write_round_trip(real: Path, tmp_path: Path) -> None:
    src = _radar_pcds(real)[0]
    raw = src.read_bytes()
    ours = read_radar_pcd(src)
    write_radar_pcd(tmp_path / "x.pcd", ours)
    out = (tmp_path / "x.pcd").read_bytes()
    assert out[:370] == raw[:370]  # identical header layout
    assert out[370 : 370 + 125 * 43] == raw[370 : 370 + 125 * 43]  # byte-identical records
    assert read_radar_pcd(tmp_path / "x.pcd").tobytes() == ours.tobytes()
    RadarPointCloud.disable_filters()
    try:  # the devkit can read what we write (it needs >= 1 byte after the last record)
        assert RadarPointCloud.from_file(str(tmp_path / "x.pcd")).points.shape == (18, 125)
    finally:
        RadarPointCloud.default_filters()
    write_radar_pcd(tmp_path / "empty.pcd", ours[:0])
    assert len(read_radar_pcd(tmp_path / "empty.pcd")) == 0  # NaN first point = empty cloud


def _pcd_with(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw[:370]
    return raw.replace(old, new, 1)


def test_radar_pcd_checks(real: Path, tmp_path: Path) -> None:
    raw = _radar_pcds(real)[0].read_bytes()
    cases = {
        "header": [
            _pcd_with(raw, b"POINTS 125", b"POINTS 126"),  # disagrees with WIDTH
            _pcd_with(raw, b"VERSION 0.7", b"VERSION 0.6"),
            _pcd_with(raw, b"DATA binary", b"DATA ascii"),
            _pcd_with(raw, b"HEIGHT 1", b"HEIGHT 2"),
            _pcd_with(raw, b"COUNT 1 1 1", b"COUNT 1 1"),  # 17 counts for 18 fields
            _pcd_with(raw, b"TYPE F", b"TYPE Q"),
            _pcd_with(raw, b"WIDTH 125", b"WIDTH abc"),
            b"hello world, not a pcd" * 10,
            raw[:200],  # header cut before DATA
        ],
        # WIDTH/POINTS agree but promise more records than the payload holds (with padding!).
        "payload": [_pcd_with(_pcd_with(raw, b"WIDTH 125", b"WIDTH 400"), b"POINTS 125",
                              b"POINTS 400"), raw[: 370 + 124 * 43]],
        "empty": [b""],
    }
    for check, blobs in cases.items():
        for i, blob in enumerate(blobs):
            path = tmp_path / f"{check}{i}.pcd"
            path.write_bytes(blob)
            _raises(check, read_radar_pcd, path)
    arr = read_radar_pcd(_radar_pcds(real)[0])
    arr["y"][5] = np.nan  # NaN not in the first record is a bad coordinate, not "empty"
    write_radar_pcd(tmp_path / "nan.pcd", arr)
    _raises("finite", read_radar_pcd, tmp_path / "nan.pcd")
    arr = read_radar_pcd(_radar_pcds(real)[0])
    arr["vy_comp"][0] = np.nan  # a NaN in any float field of record 0: the devkit's empty cloud
    write_radar_pcd(tmp_path / "nan0.pcd", arr)
    assert len(read_radar_pcd(tmp_path / "nan0.pcd")) == 0
    RadarPointCloud.disable_filters()
    try:
        assert RadarPointCloud.from_file(str(tmp_path / "nan0.pcd")).points.shape == (18, 0)
    finally:
        RadarPointCloud.default_filters()


# ----------------------------------------------------------------------------- KITTI labels


@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_labels(real: Path, frame: str) -> None:
    path = real / f"vod/lidar/training/label_2/{frame}.txt"
    lines = path.read_text().splitlines()
    labels = read_kitti_labels(path)
    assert len(labels) == len(lines) and labels.has_score
    assert list(labels.class_name) == [ln.split()[0] for ln in lines]  # verbatim, e.g. "rider"
    np.testing.assert_array_equal(labels.rows()[:, 7:10],
                                  np.array([ln.split()[8:11] for ln in lines], float))
    assert np.all(labels.score == 1.0)


def test_kitti_labels(real: Path) -> None:
    d = real / "kitti/training/label_2"
    assert list(read_kitti_labels(d / "000000.txt").class_name) == ["Pedestrian"]
    one = read_kitti_labels(d / "000001.txt")
    assert list(one.class_name) == ["Truck", "Car", "Cyclist"] + ["DontCare"] * 4
    assert not one.has_score and np.isnan(one.score).all()
    np.testing.assert_array_equal(one.dims_hwl[3], [-1, -1, -1])  # DontCare kept as is
    assert one.occluded.dtype == np.int64 and one.occluded[2] == 3
    assert list(read_kitti_labels(d / "000002.txt").class_name) == ["Misc", "Car"]
    kept = read_kitti_labels(d / "000001.txt", allowed_classes={"Truck", "Car", "Cyclist"})
    assert len(kept) == 7  # DontCare needs no listing


def test_labels_round_trip(real: Path, tmp_path: Path) -> None:
    vod = read_kitti_labels(real / "vod/lidar/training/label_2/01047.txt")
    write_kitti_labels(tmp_path / "v.txt", vod)
    back = read_kitti_labels(tmp_path / "v.txt")
    assert list(back.class_name) == list(vod.class_name)
    np.testing.assert_array_equal(back.rows(), vod.rows())  # shortest repr: exact
    src = real / "kitti/training/label_2/000001.txt"
    write_kitti_labels(tmp_path / "k.txt", read_kitti_labels(src), precision=2)
    assert (tmp_path / "k.txt").read_text().splitlines()[0] == src.read_text().splitlines()[0]
    write_kitti_labels(tmp_path / "none.txt", KittiLabels.from_rows(np.zeros((0, 15)), []))
    assert (tmp_path / "none.txt").read_bytes() == b""


def test_label_checks(real: Path, tmp_path: Path) -> None:
    good = (real / "vod/lidar/training/label_2/00549.txt").read_text().splitlines()
    (tmp_path / "empty.txt").write_text("")
    assert len(read_kitti_labels(tmp_path / "empty.txt")) == 0  # valid: no objects

    def variant(name: str, lineno: int, fn) -> Path:  # noqa: ANN001
        lines = list(good)
        lines[lineno - 1] = fn(lines[lineno - 1].split())
        path = tmp_path / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    err = _raises("label", read_kitti_labels, variant("cols", 3, lambda t: " ".join(t[:12])))
    assert "line 3" in err.reason
    _raises("label", read_kitti_labels,
            variant("num", 2, lambda t: " ".join([*t[:9], "x1", *t[10:]])))
    _raises("label", read_kitti_labels, variant("mixed", 2, lambda t: " ".join(t[:15])))
    _raises("finite", read_kitti_labels,
            variant("nan", 4, lambda t: " ".join([*t[:12], "nan", *t[13:]])))
    err = _raises("box_size", read_kitti_labels,
                  variant("neg", 5, lambda t: " ".join([*t[:9], "-0.5", *t[10:]])))
    assert "line 5" in err.reason
    _raises("class", read_kitti_labels, real / "vod/lidar/training/label_2/00549.txt",
            allowed_classes={"Car", "Pedestrian", "Cyclist"})
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    _raises("label", read_kitti_labels, tmp_path / "bin.txt")
    _raises("path", read_kitti_labels, tmp_path / "missing.txt")


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("sensor", ["lidar", "radar"])
@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_calib(real: Path, sensor: str, frame: str) -> None:
    calib = read_kitti_calib(real / f"vod/{sensor}/training/calib/{frame}.txt")
    assert calib["P2"].shape == (3, 4) and calib["P2"][0, 0] == pytest.approx(1495.468642)
    assert "Tr_imu_to_velo" not in calib  # present but empty in VoD
    np.testing.assert_array_equal(calib["R0_rect"], np.eye(3))
    T = calib["T_rect_from_velo"]
    np.testing.assert_array_equal(T[:3], calib["Tr_velo_to_cam"])
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5)


@pytest.mark.parametrize("frame", KITTI_FRAMES)
def test_kitti_calib(real: Path, frame: str) -> None:
    calib = read_kitti_calib(real / f"kitti/training/calib/{frame}.txt")
    keys = ("P0", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")
    shapes = {k: calib[k].shape for k in keys}
    assert shapes == {"P0": (3, 4), "P3": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4),
                      "Tr_imu_to_velo": (3, 4)}
    np.testing.assert_allclose(calib["T_rect_from_velo"],
                               calib["R0_rect_4x4"] @ calib["Tr_velo_to_cam_4x4"])


def test_calib_round_trip_and_checks(real: Path, tmp_path: Path) -> None:
    src = real / "vod/lidar/training/calib/00549.txt"
    calib = read_kitti_calib(src)
    write_kitti_calib(tmp_path / "c.txt", calib)
    back = read_kitti_calib(tmp_path / "c.txt")
    for key in ("P0", "P2", "R0_rect", "Tr_velo_to_cam", "T_rect_from_velo"):
        np.testing.assert_array_equal(back[key], calib[key])
    # Same line order as the source: the VoD devkit reads P2 / Tr_velo_to_cam by line number.
    keys = [ln.split(":")[0] for ln in (tmp_path / "c.txt").read_text().splitlines()]
    assert keys == [ln.split(":")[0] for ln in src.read_text().splitlines()]
    kitti = read_kitti_calib(real / "kitti/training/calib/000000.txt")
    write_kitti_calib(tmp_path / "k.txt", kitti, float_format="{:.12e}")
    assert (tmp_path / "k.txt").read_text().strip() == \
        (real / "kitti/training/calib/000000.txt").read_text().strip()
    lines = src.read_text().splitlines()
    (tmp_path / "nop2.txt").write_text("\n".join(ln for ln in lines if not ln.startswith("P2")))
    _raises("calib", read_kitti_calib, tmp_path / "nop2.txt")
    no_tr = "\n".join(ln for ln in lines if not ln.startswith("Tr_velo"))
    (tmp_path / "notr.txt").write_text(no_tr)
    _raises("calib", read_kitti_calib, tmp_path / "notr.txt")
    short = "\n".join(ln[:40] if ln.startswith("P2") else ln for ln in lines)
    (tmp_path / "short.txt").write_text(short)
    _raises("calib", read_kitti_calib, tmp_path / "short.txt")
    (tmp_path / "text.txt").write_text(src.read_text().replace("0.0 0.0 1.0", "0.0 zero 1.0", 1))
    _raises("calib", read_kitti_calib, tmp_path / "text.txt")


# ----------------------------------------------------------------------------- VoD pose / layout


@pytest.mark.parametrize("frame", VOD_FRAMES)
def test_vod_pose(real: Path, frame: str, tmp_path: Path) -> None:
    path = real / f"vod/lidar/training/pose/{frame}.json"
    poses = read_vod_pose(path)
    assert set(poses) == {"odomToCamera", "mapToCamera", "UTMToCamera"}
    for T in poses.values():
        assert T.shape == (4, 4)
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    radar = read_vod_pose(real / f"vod/radar/training/pose/{frame}.json")
    for key, T in poses.items():
        np.testing.assert_array_equal(radar[key], T)
    write_vod_pose(tmp_path / "p.json", poses)
    assert (tmp_path / "p.json").read_bytes() == path.read_bytes()


def test_pose_checks(real: Path, tmp_path: Path) -> None:
    lines = (real / "vod/lidar/training/pose/00549.json").read_text().splitlines()
    bad = {
        "json": "\n".join([lines[0], lines[1][:-5], lines[2]]),
        "missing": "\n".join(lines[:2]),
        "short": lines[0] + "\n" + lines[1] + '\n{"UTMToCamera": [1.0, 2.0]}',
        "array": "[1, 2, 3]",
        "bottom": "\n".join([lines[0].replace("0.0, 0.0, 0.0, 1.0]", "0.0, 0.0, 1.0, 1.0]"),
                             *lines[1:]]),
        "nan": "\n".join([lines[0].replace("0.0, 0.0, 0.0, 1.0]", "0.0, 0.0, 0.0, NaN]"),
                          *lines[1:]]),
    }
    for name, text in bad.items():
        (tmp_path / f"{name}.json").write_text(text)
        _raises("pose", read_vod_pose, tmp_path / f"{name}.json")
    # One whole JSON object is accepted too.
    merged = "{" + ", ".join(ln.strip()[1:-1] for ln in lines) + "}"
    (tmp_path / "one.json").write_text(merged)
    assert set(read_vod_pose(tmp_path / "one.json")) == {"odomToCamera", "mapToCamera",
                                                         "UTMToCamera"}


def test_vod_layout_real(real: Path) -> None:
    layout = VodLayout(real / "vod")
    assert layout.frame_ids() == list(VOD_FRAMES) == layout.frame_ids("radar")
    assert layout.read_split("train") is None
    assert layout.accumulated_radar_dir(3) is None
    paths = layout.frame("01047")
    for p in (paths.lidar_bin, paths.radar_bin, paths.label, paths.lidar_calib, paths.radar_calib,
              paths.pose, paths.image):
        assert p is not None and p.is_file(), p
    assert paths.image.suffix == ".jpg" and paths.radar_5scans_bin is None
    _raises("path", layout.frame, "../01047")


def test_vod_layout_spellings_and_splits(tmp_path: Path) -> None:
    (tmp_path / "lidar/ImageSets").mkdir(parents=True)
    (tmp_path / "lidar/ImageSets/train.txt").write_text("00001\n00002\n")
    (tmp_path / "radar_3frames/training/velodyne").mkdir(parents=True)
    (tmp_path / "radar_5_scans/training/velodyne").mkdir(parents=True)
    layout = VodLayout(tmp_path)
    assert layout.read_split("train") == ["00001", "00002"]
    assert layout.accumulated_radar_dir(3) == tmp_path / "radar_3frames/training/velodyne"
    assert layout.accumulated_radar_dir(5) == tmp_path / "radar_5_scans/training/velodyne"
    assert layout.frame("00001").radar_3scans_bin == \
        tmp_path / "radar_3frames/training/velodyne/00001.bin"
    os.symlink(tmp_path / "radar_3frames", tmp_path / "radar_3_scans")  # same folder: fine
    assert layout.accumulated_radar_dir(3) is not None
    (tmp_path / "radar_5frames/training").mkdir(parents=True)
    _raises("path", layout.accumulated_radar_dir, 5)
    (tmp_path / "lidar/ImageSets/val.txt").write_text("00001\n../../etc\n")
    _raises("payload", layout.read_split, "val")


# ----------------------------------------------------------------------------- fuzz


@pytest.mark.parametrize(
    ("rel", "reader"),
    [
        ("nuscenes/radar/n008-2018-05-21-11-06-59-0400__RADAR_FRONT__1526915243042374.pcd",
         read_radar_pcd),
        ("vod/lidar/training/label_2/00549.txt", read_kitti_labels),
        ("vod/lidar/training/calib/00549.txt", read_kitti_calib),
        ("kitti/training/calib/000001.txt", read_kitti_calib),
        ("vod/lidar/training/pose/00549.json", read_vod_pose),
    ],
)
def test_random_corruption_only_raises_format_error(real: Path, tmp_path: Path, rel: str,
                                                    reader) -> None:  # noqa: ANN001
    """Flipped bytes and truncations either parse or raise FormatError, never anything else."""
    raw = (real / rel).read_bytes()
    rng = np.random.default_rng(0)
    limit = min(len(raw), 600)  # the header / first lines carry the structure
    for trial in range(150):
        blob = bytearray(raw)
        if trial % 3 == 0:
            blob = blob[: int(rng.integers(0, len(raw)))]
        else:
            for pos in rng.integers(0, limit, size=int(rng.integers(1, 4))):
                choices = [0, 10, 32, 45, 46, 48, 57, 101, 255, rng.integers(256)]
                blob[pos] = int(rng.choice(choices))
        path = tmp_path / f"f{trial}{''.join(real.joinpath(rel).suffixes)}"
        path.write_bytes(bytes(blob))
        try:
            reader(path)
        except FormatError as err:
            assert err.check in CHECKS
