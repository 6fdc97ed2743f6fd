"""Shared fixtures. Real data is read in place from ../shared/fixtures/real (never copied)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_fixtures() -> Path:
    """KDPIPE_FIXTURES, else `shared/fixtures/real` beside the checkout or any parent of it."""
    if "KDPIPE_FIXTURES" in os.environ:
        return Path(os.environ["KDPIPE_FIXTURES"])
    for parent in REPO.parents:
        cand = parent / "shared" / "fixtures" / "real"
        if cand.is_dir():
            return cand
    return Path("/work/shared/fixtures/real")  # where this project's machines keep them


FIXTURES = _find_fixtures()


@pytest.fixture(scope="session")
def real() -> Path:
    """Root of the real sensor fixtures (see PROVENANCE.md there)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"real fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def vod_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic VoD world (one 40-frame scene: train, val and unlabeled frames)."""
    from kdpipe.datasets.synth import write_vod

    out = tmp_path_factory.mktemp("vod_world") / "vod_synth"
    write_vod(out, 40, seed=3)
    return out
