"""The `ingest` config: one model per format behind flat workflow keys, checked at plan time.

Planning only (no data is read): every shipped workflow plans, a user-style nuScenes table gives
the nuScenes model, a key of another format or an unknown format fails in one line, and a
format's config (hence its cache key) holds no other format's fields.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kdpipe.config import load_workflow
from kdpipe.datasets.ingest_format import IngestConfig, formats
from kdpipe.datasets.kitti_radar import KittiRadarIngestConfig
from kdpipe.datasets.nuscenes import NuscenesIngestConfig
from kdpipe.datasets.vod import VodIngestConfig
from kdpipe.pipeline.dag import build_plan
from kdpipe.pipeline.errors import ConfigError

WORKFLOWS = sorted((Path(__file__).parents[2] / "workflows").glob("*.toml"))
NUSCENES_ONLY = {"version", "radar_sweeps", "radar_filter", "max_time_gap_ms", "camera_channels",
                 "camera_downscale"}


def plan_ingest(tmp: Path, table: str, overrides: tuple[str, ...] = ()) -> IngestConfig:
    """The planned `ingest` config of a one-stage workflow with this `[ingest]` table."""
    wf_path = tmp / "wf.toml"
    wf_path.write_text(f'[workflow]\nstages = ["ingest"]\n[ingest]\n{table}\n')
    wf = load_workflow(wf_path, overrides)
    cfg = build_plan(wf.stages, wf.deltas, fingerprint=False).nodes["ingest"].config
    assert isinstance(cfg, IngestConfig)
    return cfg


def one_line_error(tmp: Path, table: str) -> str:
    with pytest.raises(ConfigError) as err:
        plan_ingest(tmp, table)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_plans(path: Path) -> None:
    wf = load_workflow(path)
    plan = build_plan(wf.stages, wf.deltas, fingerprint=False)
    cfg = plan.nodes["ingest"].config
    assert type(cfg) is formats()[cfg.format].config


def test_user_nuscenes_table_gives_the_nuscenes_model(tmp_path: Path) -> None:
    cfg = plan_ingest(tmp_path, 'format = "nuscenes"\nroots = ["/data/nuscenes"]\n'
                      'version = "v1.0-trainval"\ncamera_channels = ["CAM_FRONT"]\n'
                      "radar_sweeps = 3\ncamera_downscale = 8",
                      overrides=("ingest.radar_sweeps=5",))
    assert isinstance(cfg, NuscenesIngestConfig)
    assert (cfg.roots, cfg.version, cfg.camera_channels) == (["/data/nuscenes"],
                                                            "v1.0-trainval", ["CAM_FRONT"])
    assert (cfg.radar_sweeps, cfg.camera_downscale) == (5, 8)  # --set wins over the file


def test_key_of_another_format_fails_in_one_line(tmp_path: Path) -> None:
    msg = one_line_error(tmp_path, 'format = "vod"\nversion = "v1.0-mini"')
    assert msg == "ingest.version: a nuscenes option; this ingest has format 'vod'"
    msg = one_line_error(tmp_path, 'format = "nuscenes"\nblock_frames = 8')
    assert msg == "ingest.block_frames: a kitti-radar / vod option; this ingest has format " \
                  "'nuscenes'"
    assert "ingest.camera_downscale: a nuscenes option" in one_line_error(
        tmp_path, "camera_downscale = 2")  # no format: VoD, the default


def test_vod_config_holds_no_other_format_keys(tmp_path: Path) -> None:
    cfg = plan_ingest(tmp_path, 'format = "vod"\nroots = ["/data/vod"]\nblock_frames = 16')
    dump = cfg.model_dump(mode="json")
    assert isinstance(cfg, VodIngestConfig) and dump["block_frames"] == 16
    assert not NUSCENES_ONLY & set(dump)
    assert not {"radar_columns", "radar_n_fields"} & set(dump)
    kitti = KittiRadarIngestConfig.model_validate({"roots": ["/data/kitti"]})
    assert not NUSCENES_ONLY & set(kitti.model_dump(mode="json"))


def test_unknown_format_lists_the_known_ones(tmp_path: Path) -> None:
    msg = one_line_error(tmp_path, 'format = "waymo"')
    assert msg == "ingest.format: unknown format 'waymo' (known: kitti-radar, nuscenes, vod)"


def test_bare_common_config_is_refused() -> None:
    with pytest.raises(ValueError, match="common part only"):
        IngestConfig(roots=["/data/vod"])
