"""`audit`: pseudo-labels against held-out ground truth (the stage is in `stage.py`).

`metrics.py` matches and scores, `nuscenes.py` applies DetectionEval's rules, `summary.py`
aggregates, `report.py` and `bev.py` draw the self-contained HTML page.
"""
from kdpipe.stages.audit.stage import STAGE

__all__ = ["STAGE"]
