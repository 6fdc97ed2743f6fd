"""kdpipe.models: BEV radar/LiDAR detectors (SCKD teacher, LiDAR-only, radar-only) and the IMKD
camera+radar student, by registry name.

    from kdpipe.models import create_model
    model = create_model("sckd-teacher", size="small")
    out = model(batch); losses = model.loss(out, targets); dets = model.decode(out)

Importing the package registers every model (``detectors`` and ``imkd``, no lazy magic).
"""
from __future__ import annotations

from . import augment
from .config import DetectorConfig
from .contract import Detector
from .decode import decode_boxes
from .detectors import CenterPointDetector, SCKDTeacher, SingleModalityDetector
from .fusion import AdaptiveFusion, modality_dropout_gate
from .imkd import IMKDConfig, IMKDStudent
from .iou import boxes_iou_3d, boxes_iou_bev, nms_bev
from .registry import create_model, from_checkpoint, list_models, register_model, to_checkpoint
from .targets import CenterTargets, build_targets

__all__ = [
    "AdaptiveFusion",
    "CenterPointDetector",
    "CenterTargets",
    "Detector",
    "DetectorConfig",
    "IMKDConfig",
    "IMKDStudent",
    "SCKDTeacher",
    "SingleModalityDetector",
    "augment",
    "boxes_iou_3d",
    "boxes_iou_bev",
    "build_targets",
    "create_model",
    "decode_boxes",
    "from_checkpoint",
    "list_models",
    "modality_dropout_gate",
    "nms_bev",
    "register_model",
    "to_checkpoint",
]
