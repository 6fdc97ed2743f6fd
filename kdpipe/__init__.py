"""kdpipe: cross-modality knowledge distillation pipeline for radar detectors."""
from __future__ import annotations

__version__ = "0.1.0"
