"""nuScenes radar PCDs whose header runs into the zero padding (issue 16): all-zero records are
refused (`payload`, with the count) instead of stored as points at the sensor origin, and no real
fixture file trips the check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kdpipe.datasets.formats.errors import FormatError
from kdpipe.datasets.formats.pcd import RADAR_PCD_DTYPE, read_radar_pcd
from kdpipe.datasets.synth import SynthConfig, write_nuscenes
from kdpipe.testing import ingest_store

HEADER_BYTES = 370  # every real file (PROVENANCE.md)


def _real_pcds(real: Path) -> list[Path]:
    paths = sorted((real / "nuscenes/radar").glob("*.pcd"))
    assert len(paths) == 3
    return paths


def _more_points(raw: bytes, n_old: int, n_new: int) -> bytes:
    return raw.replace(f"WIDTH {n_old}\n".encode(), f"WIDTH {n_new}\n".encode(), 1) \
        .replace(f"POINTS {n_old}\n".encode(), f"POINTS {n_new}\n".encode(), 1)


def test_real_radar_files_pass_and_their_padding_is_zero(real: Path) -> None:
    stride = RADAR_PCD_DTYPE.itemsize
    for path in _real_pcds(real):
        raw = path.read_bytes()
        rec = read_radar_pcd(path)
        assert len(rec) == 125 and (rec["id"] == np.arange(125)).all()
        body = np.frombuffer(raw[HEADER_BYTES:HEADER_BYTES + 125 * stride], np.uint8)
        assert body.reshape(125, stride).any(axis=1).all()  # no real record is all zero ...
        assert not any(raw[HEADER_BYTES + 125 * stride:])   # ... the padding after them is


def test_header_reaching_into_the_padding_is_a_payload_error(real: Path, tmp_path: Path) -> None:
    src = _real_pcds(real)[0]
    bad = tmp_path / "more.pcd"
    bad.write_bytes(_more_points(src.read_bytes(), 125, 200))  # 200 x 43 B fit in the padding
    with pytest.raises(FormatError) as e:
        read_radar_pcd(bad)
    assert e.value.check == "payload"
    assert e.value.reason == ("75 of 200 records are all zero in every field (the header "
                              "promises 200 points but the payload holds 125, then zero bytes).")
    raw = bytearray(src.read_bytes())  # one zeroed record in the middle
    raw[HEADER_BYTES + 7 * 43:HEADER_BYTES + 8 * 43] = bytes(43)
    (tmp_path / "hole.pcd").write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="1 of 125 records are all zero in every field"):
        read_radar_pcd(tmp_path / "hole.pcd")


def test_zero_padded_radar_frame_becomes_one_payload_reject(tmp_path: Path) -> None:
    root = tmp_path / "nus"
    write_nuscenes(root, 1, seed=5, cfg=SynthConfig(nus_samples_per_scene=2, image_scale=0.25,
                                                    nus_lidar_azimuths=128, nus_radar_sweeps=1))
    samples = json.loads((root / "v1.0-mini/sample.json").read_text())
    victim = samples[1]["token"]
    sd = next(r for r in json.loads((root / "v1.0-mini/sample_data.json").read_text())
              if r["sample_token"] == victim and r["is_key_frame"]
              and "/RADAR_FRONT/" in r["filename"])
    path = root / sd["filename"]
    n = len(read_radar_pcd(path))
    path.write_bytes(_more_points(path.read_bytes(), n, n + 9) + bytes(9 * 43))
    art = ingest_store(tmp_path, root, "nuscenes", camera_channels=[])
    rejects = pl.read_parquet(art / "rejects.parquet")
    assert rejects.height == 1, rejects
    r = rejects.row(0, named=True)
    assert (r["frame"], r["check"], r["file"]) == (victim, "payload", str(path))
    assert r["reason"].startswith(f"9 of {n + 9} records are all zero in every field")
    frames = pl.read_parquet(art / "frames.parquet")
    assert frames["frame"].to_list() == [samples[0]["token"]]  # the rest goes on
