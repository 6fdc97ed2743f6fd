"""`curate` / `curate-frames`: pick unlabeled frames worth labeling (the stages are in `stage.py`,
the scoring strategies in `strategies.py`)."""
from kdpipe.stages.curate.stage import FRAMES_STAGE, STAGE

__all__ = ["FRAMES_STAGE", "STAGE"]
