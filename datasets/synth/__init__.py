"""kdpipe.datasets.synth: a procedural street world written in real dataset formats.

Public API:

* :func:`write_vod` -- View-of-Delft layout (LiDAR, 4D radar incl. 3/5-scan accumulation,
  camera, KITTI labels, calib, poses, ImageSets with train / val / unlabeled splits).
* :func:`write_nuscenes` -- nuScenes ``v1.0-mini`` dataroot (13 tables, LIDAR_TOP, five ARS408
  radars, cameras, keyframes and sweeps) that nuscenes-devkit loads and evaluates.
* :class:`SynthConfig` -- the knobs, with defaults.

Everything is deterministic in the seed: every frame draws from its own RNG keyed by
(seed, dataset, scene, frame, stream), so the same seed gives byte-identical files.
"""
from __future__ import annotations

from kdpipe.datasets.synth.config import SynthConfig
from kdpipe.datasets.synth.nuscenes_writer import write_nuscenes
from kdpipe.datasets.synth.vod_writer import write_vod

__all__ = ["SynthConfig", "write_nuscenes", "write_vod"]
