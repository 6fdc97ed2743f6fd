"""nuscenes-devkit's detection settings and names, read from the installed package's files
without importing it.

`import nuscenes.eval...` runs `nuscenes/__init__.py`, which loads the NuScenes class and with
it matplotlib and OpenCV: 2 s of CPU before a command can score anything. The numbers live in
two files of the package: `eval/detection/configs/<name>.json` (what `config_factory` loads,
unchanged) and `eval/detection/constants.py` (literal lists, read with `ast.literal_eval`,
never executed). `tests/stages/test_audit_submission.py` checks both against the imported
devkit.
"""
from __future__ import annotations

import ast
import functools
import json
from pathlib import Path
from typing import Any

from kdpipe.datasets.nuscenes_devkit_data import literals, package_dir


def _detection_dir() -> Path:
    return package_dir() / "eval" / "detection"


@functools.cache
def detection_config(name: str = "detection_cvpr_2019") -> dict[str, Any]:
    """The JSON `config_factory(name)` deserialises: class_range (its key order is the class
    order), dist_ths, dist_th_tp, min_recall, min_precision, max_boxes_per_sample,
    mean_ap_weight."""
    data: dict[str, Any] = json.loads((_detection_dir() / "configs" / f"{name}.json").read_text())
    return data


@functools.cache
def detection_constants() -> dict[str, Any]:
    """The literal top-level assignments of `nuscenes/eval/detection/constants.py`
    (DETECTION_NAMES, ATTRIBUTE_NAMES, TP_METRICS, ...)."""
    return literals(ast.parse((_detection_dir() / "constants.py").read_text()).body)
