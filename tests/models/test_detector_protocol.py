"""`create_model` returns a `Detector`: the attributes and feature taps stages rely on."""
from __future__ import annotations

import pytest
from torch import nn

from kdpipe.models import Detector, create_model, list_models, register_model
from kdpipe.models.batch import FEATURE_TAPS, MODEL_FIELDS
from kdpipe.models.registry import _REGISTRY


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_is_a_detector(name: str) -> None:
    model = create_model(name)
    assert isinstance(model, Detector) and isinstance(model, nn.Module)
    assert model.name == name and tuple(model.classes) == tuple(model.config.classes)
    assert set(model.modalities) <= {*MODEL_FIELDS, "camera"}


@pytest.mark.parametrize("name", list_models())
def test_feature_taps_are_named_by_the_contract(name: str) -> None:
    import torch

    from kdpipe.models.batch import collate

    model = create_model(name, pillar_size_m=3.2, encoder_channels=8, backbone_filters=[8, 16],
                         upsample_filters=[8, 8], head_channels=8)
    model.eval()
    frame = {"lidar": torch.rand(50, 4).numpy() * 20, "radar": torch.rand(10, 6).numpy() * 20}
    if "camera" in model.modalities:
        import numpy as np

        frame.update(camera=np.zeros((1, 3, 16, 32), np.uint8),
                     camera_intrinsics=np.eye(3, dtype=np.float32)[None],
                     camera_to_ego=np.eye(4, dtype=np.float32)[None])
    with torch.no_grad():
        out = model(collate([frame], model.modalities))
    assert set(out["features"]) <= set(FEATURE_TAPS) and out["features"]


def test_a_registered_builder_that_returns_no_detector_is_refused() -> None:
    @register_model("not-a-detector-test")
    def _bad() -> nn.Module:
        return nn.Linear(2, 2)

    try:
        with pytest.raises(TypeError, match="Detector contract"):
            create_model("not-a-detector-test")
    finally:
        _REGISTRY.pop("not-a-detector-test")
