"""What every registered model is: the `Detector` protocol `create_model` returns.

Stages and the runtime rely on exactly this (and on `models.batch` for the input side):
`.name`, `.config` (a `DetectorConfig`, stored in checkpoints), `.modalities` (the batch fields it
reads), `.classes` (heatmap channel k is classes[k]); `model(batch)` returns "heatmap", "box",
"bev" and "features" (BEV maps before the 2D backbone, keyed by `models.batch.FEATURE_TAPS`
names: "lidar", "radar", "camera", "fusion" as the model has them); `loss(out, targets)` returns
"loss" plus its named terms; `decode(out)` returns per-frame "boxes", "scores", "labels". Plus the
`nn.Module` methods training needs. `tests/models/test_contract.py` checks every registered name.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor, nn

    from .config import DetectorConfig


@runtime_checkable
class Detector(Protocol):
    name: str
    config: DetectorConfig
    modalities: tuple[str, ...]
    classes: tuple[str, ...]

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]: ...

    def loss(self, out: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]]
             ) -> dict[str, Tensor]: ...

    def decode(self, out: Mapping[str, Any], score_threshold: float = 0.0, top_k: int = 100
               ) -> list[dict[str, Tensor]]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...
