"""kdpipe: cross-modality knowledge distillation pipeline for radar detectors."""
from __future__ import annotations

from kdpipe.pipeline.threads import sleep_while_waiting

__version__ = "0.1.0"

# Before anything loads torch: OpenMP threads that sleep while they wait (pipeline/threads.py).
sleep_while_waiting()
