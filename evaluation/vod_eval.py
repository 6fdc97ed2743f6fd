"""View-of-Delft scores with the official vod-tudelft evaluator (AP11 as it reports, plus AP40).

``score_vod`` does what ``vod.evaluation.Evaluation.evaluate`` does (frame list from the
prediction folder, labels through the devkit's reader, ``get_official_eval_result`` for the
entire area and the driving corridor) but passes ``pr_detail_dict``, so the R40 AP comes from the
very precision arrays behind the official R11 numbers; the tests check both equal the tool's.

Evaluator behaviour that shapes the numbers (vod-tudelft 1.0.3, ``kitti_official_evaluate.py``):

* The 41 recall positions are indexed by true positives, not by recall (``get_thresholds``):
  a class with fewer than 41 valid ground-truth boxes cannot reach 100 AP, perfect predictions
  give ``ceil(n_gt / 4) / 11`` (AP11) and ``(n_gt - 1) / 40`` (AP40). ``*_n_gt`` is reported so a
  small evaluation set is recognisable.
* A class without valid ground truth scores 0, not NaN, and still enters the mean.
* Ground truth with a 2D box height <= 40 px, detections < 40 px are ignored; the ROI keeps
  camera x in [-4, 4] m and z <= 25 m (bottom-centre location) for both.
* Detection yaw gets +0.01 rad before the IoU (``calculate_iou_partly`` is called with the
  arguments swapped), so a perfect detection has IoU slightly below 1.
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

import numpy as np
import polars as pl

from kdpipe.evaluation.kitti_export import (
    BoxOptions,
    ExportError,
    write_kitti_ground_truth,
    write_kitti_predictions,
)

CLASSES = ("Car", "Pedestrian", "Cyclist")  # the evaluator's class ids 0, 1, 2
AREAS = {"entire_area": 0, "roi": 3}  # result key -> the evaluator's custom_method
METRICS = ("3d", "bev", "aos")
_OVERLAP = 1  # the evaluator reports the second overlap set (IoU 0.5 / 0.25 / 0.25)


def cached_jit(jit: Callable[..., Any]) -> Callable[..., Any]:
    """`jit` (``numba.jit``) with ``cache=True`` unless the call says otherwise; where numba finds
    no writable cache directory (it raises RuntimeError when the decorator is applied), the
    function is compiled without a cache, as vod-tudelft itself would."""

    def jit_cached(*args: Any, **kwargs: Any) -> Any:
        if "cache" in kwargs:
            return jit(*args, **kwargs)
        try:
            made = jit(*args, cache=True, **kwargs)    # `@jit` on a function: the dispatcher
        except RuntimeError:
            return jit(*args, **kwargs)
        if args and callable(args[0]) and not isinstance(args[0], str):
            return made

        def decorate(func: Callable[..., Any]) -> Any:  # `@jit(...)`: applied here
            try:
                return made(func)
            except RuntimeError:
                return jit(*args, **kwargs)(func)

        return decorate

    return jit_cached


def _koe() -> Any:
    """``vod.evaluation.kitti_official_evaluate``, imported without numba's deprecation noise.

    The evaluator's numba functions were compiled in every new process (~12 s on 2 cores, more
    than the scoring itself). vod-tudelft does not ask numba to cache them, so its module is
    imported with ``numba.jit`` defaulting to ``cache=True``: the machine code goes to numba's
    on-disk cache (beside the package's sources, or the user cache directory where site-packages
    is read-only; ``NUMBA_CACHE_DIR`` moves it) and later processes load it. The compiled code,
    and so every score, is the same either way.
    """
    if "vod.evaluation.kitti_official_evaluate" not in sys.modules:
        import numba

        jit = numba.jit
        numba.jit = cached_jit(jit)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import vod.evaluation.kitti_official_evaluate  # noqa: F401
        finally:
            numba.jit = jit
    return sys.modules["vod.evaluation.kitti_official_evaluate"]


def _quiet() -> contextlib.ExitStack:
    """The evaluator prints progress lines and numba warns on object-mode fallbacks."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def load_annotations(gt_dir: str | Path, pred_dir: str | Path
                     ) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Frame list and (gt, dt) annotations exactly as ``Evaluation.evaluate`` reads them."""
    _koe()  # vod.evaluation's first import compiles numba functions: keep their warnings quiet
    from vod import get_frame_list_from_folder
    from vod.evaluation import evaluation_common

    stems = get_frame_list_from_folder(str(pred_dir))
    if not stems:
        raise ExportError(f"no prediction files (*.txt) in {pred_dir}")
    missing = [s for s in stems if not (Path(gt_dir) / f"{s}.txt").is_file()]
    if missing:
        raise ExportError(f"{len(missing)} prediction file(s) have no ground truth in {gt_dir}, "
                          f"e.g. {missing[0]}.txt")
    dt = evaluation_common.get_label_annotations(str(pred_dir), stems)
    gt = evaluation_common.get_label_annotations(str(gt_dir), stems)
    return stems, gt, dt


def _n_valid_gt(gt: list[dict[str, Any]], dt: list[dict[str, Any]], cls: int,
                method: int) -> int:
    """Ground-truth boxes the evaluator counts for recall (after its height/occlusion/ROI rules)."""
    return int(_koe()._prepare_data(gt, dt, cls, 0, custom_method=method)[-1])


def score_annotations(gt: list[dict[str, Any]], dt: list[dict[str, Any]],
                      classes: tuple[int, ...] = (0, 1, 2)) -> dict[str, float]:
    """Flat scores from the devkit's annotation dicts (see :func:`score_vod` for the keys)."""
    koe = _koe()
    out: dict[str, float] = {}
    for area, method in AREAS.items():
        pr: dict[str, np.ndarray] = {}
        with _quiet():
            official = koe.get_official_eval_result(gt, dt, list(classes), pr_detail_dict=pr,
                                                    custom_method=method)[area]
        for j, cls in enumerate(classes):
            name = CLASSES[cls]
            for metric in METRICS:
                # [class, difficulty, overlap set, 41 positions] -> this class, overlap set 1
                prec = pr[metric][j, 0, _OVERLAP]
                out[f"{area}/{name}_{metric}_ap11"] = float(official[f"{name}_{metric}_all"])
                out[f"{area}/{name}_{metric}_ap40"] = float(koe.get_m_ap_r40(prec))
            out[f"{area}/{name}_n_gt"] = _n_valid_gt(gt, dt, cls, method)
        for metric in ("3d", "bev"):
            for ap in ("ap11", "ap40"):
                vals = [out[f"{area}/{CLASSES[c]}_{metric}_{ap}"] for c in classes]
                out[f"{area}/mAP_{metric}_{ap}"] = float(np.mean(vals))
    return out


def score_vod(gt_dir: str | Path, pred_dir: str | Path,
              classes: tuple[int, ...] = (0, 1, 2)) -> dict[str, float]:
    """Score a prediction folder against a ground-truth folder with vod-tudelft.

    Args:
        gt_dir: ground-truth label folder (every prediction stem must have a file here; extra
            files are not read).
        pred_dir: prediction folder, one file per evaluated frame (empty = no detections); the
            frame list is every ``*.txt`` under it, sub-folders included.
        classes: evaluator class ids (0 Car, 1 Pedestrian, 2 Cyclist).

    Returns:
        ``{area}/{Class}_{3d|bev|aos}_{ap11|ap40}`` in percent (``area`` is ``entire_area`` or
        ``roi``; ap11 is the number the tool reports), ``{area}/{Class}_n_gt`` (valid ground
        truth), ``{area}/mAP_{3d|bev}_{ap11|ap40}`` (mean over ``classes``, as the devkit's own
        mAP), and ``n_frames``.
    """
    stems, gt, dt = load_annotations(gt_dir, pred_dir)
    return {**score_annotations(gt, dt, classes), "n_frames": len(stems)}


def evaluate_tables(dets: pl.DataFrame, gt_boxes: pl.DataFrame, frames: pl.DataFrame,
                    calibration: pl.DataFrame, frame_ids: list[str] | None,
                    workdir: str | Path, **options: Unpack[BoxOptions]) -> dict[str, float]:
    """Write ``workdir/gt`` and ``workdir/pred`` for ``frame_ids`` and score them.

    ``frame_ids=None`` evaluates every frame of ``frames`` that has ground truth or detections;
    pass the split's frames so frames without either still count (they can only add FPs).
    ``options`` (``names``, ``all_states``) apply to the detections, as in
    ``write_kitti_predictions``.
    """
    if frame_ids is None:
        have = set(gt_boxes["frame_id"].to_list()) | set(dets["frame_id"].to_list())
        frame_ids = [f for f in frames["frame_id"].to_list() if f in have]
    work = Path(workdir)
    # siblings, never nested: the evaluator walks the prediction folder recursively
    write_kitti_ground_truth(gt_boxes, frames, calibration, work / "gt", frame_ids=frame_ids)
    write_kitti_predictions(dets, frames, calibration, work / "pred", frame_ids, **options)
    return score_vod(work / "gt", work / "pred")
