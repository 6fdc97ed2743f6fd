"""A point file is read straight into an array: every byte the file holds when it is read, and
the digest of exactly those bytes, even when its size changes after the size was asked."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from kdpipe.datasets.formats import bins


@pytest.mark.parametrize("told", [None, 0, 7, 10**6])  # the size fstat reports (None: the truth)
def test_every_byte_and_its_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   told: int | None) -> None:
    data = np.random.default_rng(0).normal(size=(1001, 4)).astype("<f4").tobytes()
    path = tmp_path / "000001.bin"
    path.write_bytes(data)
    if told is not None:  # as if the file grew (or shrank) between fstat and the read
        real = os.fstat

        def fstat(fd: int) -> os.stat_result:
            st = list(real(fd))
            st[6] = told  # st_size
            return os.stat_result(st)

        monkeypatch.setattr(bins.os, "fstat", fstat)
    with bins.recording_digests() as seen:
        arr = bins.read_raw_array(path)
        points = bins.read_float32_bin(path, 4)
    assert arr.tobytes() == data and arr.flags.writeable
    assert seen[str(path)] == hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(points, np.frombuffer(data, "<f4").reshape(-1, 4))
    points[0, 0] = 1.0  # the parser's array is its own: writable (radar is transformed in place)
