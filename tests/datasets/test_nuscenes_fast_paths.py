"""The faster nuScenes ingest paths (issue 17) against what they replace, value for value:

* `NusTables` vs the devkit's `NuScenes` (records, reverse-index decorations, box
  velocities one by one and vectorised);
* the devkit names read from its files vs the imported devkit (splits, detection classes);
* `read_radar` vs `read_radar_pcd` on the real radar files and on broken copies (same records,
  same error check and reason), a header seen before included;
* `data_file`'s cached folder resolution vs `safe_join` (escapes, symlinks);
* `rigid` vs the devkit's `transform_matrix` (same bits).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import transform_matrix
from nuscenes.utils.splits import create_splits_scenes
from pyquaternion import Quaternion

from kdpipe.datasets import nuscenes_devkit_data as devkit_data
from kdpipe.datasets import nuscenes_io as nio
from kdpipe.datasets import nuscenes_radar as nra
from kdpipe.datasets.formats.bins import safe_join
from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.formats.pcd import read_radar_pcd
from kdpipe.datasets.nuscenes_tables import TABLES, NusTables
from kdpipe.datasets.synth import SynthConfig, write_nuscenes

V = "v1.0-mini"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nus_fast") / "w"
    write_nuscenes(root, 1, seed=5, cfg=SynthConfig(nus_samples_per_scene=3, image_scale=0.25,
                                                    nus_lidar_azimuths=64, nus_radar_sweeps=2))
    return root


def test_tables_equal_the_devkit(world: Path, tmp_path: Path) -> None:
    shutil.copytree(world / "maps", tmp_path / "maps")  # the devkit checks they exist
    world = shutil.copytree(world / V, tmp_path / V).parent
    rows = json.loads((world / V / "sample_data.json").read_text())
    rows[0]["calibrated_sensor_token"] = "gone"  # noqa: S105 -- an orphan, set aside by both
    (world / V / "sample_data.json").write_text(json.dumps(rows))
    mine = NusTables(world / V)

    class Tolerant(NuScenes):  # type: ignore[misc]
        def __make_reverse_index__(self, verbose: bool) -> None:
            self.sample_data = [r for r in self.sample_data if r["token"] != rows[0]["token"]]
            super().__make_reverse_index__(verbose)

    ref = Tolerant(V, str(world), verbose=False)
    assert list(mine.kd_orphans) == [rows[0]["token"]]
    # logs and maps: the devkit decorates them too (map_token, mask); ingest reads neither
    for name in (t for t in TABLES if t not in ("log", "map")):
        assert getattr(mine, name) == getattr(ref, name), name
        for r in getattr(ref, name):
            assert mine.get(name, r["token"]) == ref.get(name, r["token"])
    tokens = [a["token"] for a in ref.sample_annotation]
    expect = np.array([ref.box_velocity(t) for t in tokens])  # (B, 3)
    assert np.isnan(expect).any() and np.isfinite(expect).any()  # both cases covered
    np.testing.assert_array_equal(mine.box_velocities(tokens), expect)  # NaNs where NaN
    np.testing.assert_array_equal(mine.box_velocity(tokens[0]), expect[0])


def test_devkit_names_equal_the_imported_devkit(world: Path) -> None:
    assert devkit_data.official_splits() == create_splits_scenes()
    cats = [c["name"] for c in json.loads((world / V / "category.json").read_text())]
    for c in [*cats, "vehicle.emergency.police", "no.such.category"]:
        assert devkit_data.detection_name(c) == category_to_detection_name(c)


def _outcome(read: Callable[[Path], np.ndarray], path: Path) -> object:
    try:
        return read(path).tobytes()
    except FormatError as e:
        return (e.check, e.reason)


def _corruptions(raw: bytes) -> dict[str, bytes]:
    stride = 43
    off = raw.index(b"\nDATA binary\n") + len(b"\nDATA binary\n")
    nan = bytearray(raw)
    nan[off:off + 4] = np.float32(np.nan).tobytes()
    inf = bytearray(raw)
    inf[off + 5 * stride:off + 5 * stride + 4] = np.float32(np.inf).tobytes()
    zero = bytearray(raw)
    zero[off + 3 * stride:off + 4 * stride] = bytes(stride)
    return {"ok": raw, "empty": b"", "no_data": raw[:100], "short": raw[:off + 10],
            "more_points": raw.replace(b"WIDTH 125", b"WIDTH 999").replace(b"POINTS 125",
                                                                           b"POINTS 999"),
            "nan_first": bytes(nan), "inf": bytes(inf), "zero_record": bytes(zero),
            "bad_type": raw.replace(b"TYPE F", b"TYPE Q", 1)}


def test_read_radar_equals_read_radar_pcd(real: Path, tmp_path: Path) -> None:
    for src in sorted((real / "nuscenes/radar").glob("*.pcd")):
        for kind, raw in _corruptions(src.read_bytes()).items():
            p = tmp_path / f"{kind}.pcd"
            p.write_bytes(raw)
            for _ in range(2):  # the second read hits the remembered header
                assert _outcome(nra.read_radar, p) == _outcome(read_radar_pcd, p), (src, kind)
    assert _outcome(nra.read_radar, tmp_path / "none.pcd") == \
        _outcome(read_radar_pcd, tmp_path / "none.pcd")


def test_data_file_equals_safe_join(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "samples/A").mkdir(parents=True)
    outside.mkdir()
    (root / "samples/A/f.bin").write_bytes(b"x")
    (outside / "g.bin").write_bytes(b"y")
    os.symlink(outside / "g.bin", root / "samples/A/link.bin")
    os.symlink(outside, root / "samples/B")
    names = ["samples/A/f.bin", "samples/A/link.bin", "samples/B/g.bin", "../outside/g.bin",
             "/etc/passwd", "samples/A/../A/f.bin", "samples/A/", "f.bin", "samples/A/none",
             "~x/f.bin", "samples/A/\x00"]
    def outcome(join: Callable[[Path, str], Path], name: str) -> object:
        try:
            return join(root, name)
        except FormatError as e:
            return (e.check, e.reason)

    for _ in range(2):  # the second pass uses the remembered folders
        for name in names:
            assert outcome(nio._join, name) == outcome(safe_join, name), name
    shutil.rmtree(root)


def test_rigid_equals_the_devkit() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        t, q = rng.normal(size=3) * 100, rng.normal(size=4)
        for inverse in (False, True):
            np.testing.assert_array_equal(nio.rigid(t.tolist(), q.tolist(), inverse),
                                          transform_matrix(t, Quaternion(q), inverse=inverse))
