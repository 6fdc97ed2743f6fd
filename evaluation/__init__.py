"""kdpipe.evaluation: official evaluation and export, on tables (no model code).

* :mod:`.kitti_export` -- KITTI label folders (predictions and ground truth) for VoD's evaluator.
* :mod:`.vod_eval` -- vod-tudelft scores: AP11 as the tool reports, AP40 from its arrays.
* :mod:`.nuscenes_eval` -- nuScenes submission JSON and ``DetectionEval`` scores.

Submodules import the devkits lazily inside their functions.
"""
from __future__ import annotations
