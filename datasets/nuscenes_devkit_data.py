"""nuscenes-devkit's scene splits and detection-class mapping, read from the installed package's
source without importing it.

`import nuscenes.<anything>` runs `nuscenes/__init__.py`, which imports the NuScenes class and
with it sklearn, scipy.stats and matplotlib: ~4 s of CPU, paid by every ingest driver and Dask
worker only for two tables of names. Both are literals in the devkit's files, read with
`ast.literal_eval`, never executed (`package_dir` and `literals` are also what
`kdpipe.evaluation.nuscenes_devkit` reads the detection settings with): `utils/splits.py`
(the scene lists; `train` there is `sorted(set(train_detect + train_track))`, the one
expression computed here) and
`eval/detection/utils.py` (`detection_mapping` inside `category_to_detection_name`).
tests/stages/test_ingest_nuscenes.py checks both against the imported devkit.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path
from typing import Any


def package_dir() -> Path:
    spec = importlib.util.find_spec("nuscenes")  # finds the package, does not run it
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("nuscenes-devkit is not installed")
    return Path(spec.origin).parent


def literals(body: list[ast.stmt]) -> dict[str, Any]:
    """Name -> value of the single-target assignments of a literal in `body`."""
    out: dict[str, Any] = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # not a literal (e.g. `train = list(sorted(...))`)
                continue
    return out


@functools.cache
def official_splits() -> dict[str, list[str]]:
    """`create_splits_scenes()`: split name -> scene names (train, val, test, mini_train,
    mini_val, train_detect, train_track)."""
    tree = ast.parse((package_dir() / "utils" / "splits.py").read_text())
    lit = literals(tree.body)
    out = {k: list(lit[k]) for k in ("val", "test", "mini_train", "mini_val", "train_detect",
                                     "train_track")}
    out["train"] = sorted(set(lit["train_detect"] + lit["train_track"]))
    return out


@functools.cache
def _detection_mapping() -> dict[str, str]:
    tree = ast.parse((package_dir() / "eval" / "detection" / "utils.py").read_text())
    fn = next(n for n in tree.body
              if isinstance(n, ast.FunctionDef) and n.name == "category_to_detection_name")
    mapping: dict[str, str] = literals(fn.body)["detection_mapping"]
    return mapping


def detection_name(category: str) -> str | None:
    """`category_to_detection_name(category)`: the detection class, None when unmapped."""
    return _detection_mapping().get(category)
