"""Cross-modality alignment for radar BEV maps (RadarDistill's CMA, as we read it).

Radar gives a few returns per object, so most cells a LiDAR teacher describes are empty in the
radar map and no adapter can reproduce the teacher there. A stack of residual dilated 3x3 convs
(dilation 2, 4, ...) spreads each return's features over its neighbourhood before the backbone:
the student's map becomes dense where objects are, and distillation has something to pull on.
It is part of the student (it runs at inference), enabled by `radar_align_layers > 0`.
"""
from __future__ import annotations

from torch import Tensor, nn

_BN = {"eps": 1e-3, "momentum": 0.01}


class RadarAlign(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x + f_n(... f_1(x)), f_i = conv3x3(dilation 2^i)+BN+ReLU."""

    def __init__(self, channels: int, layers: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            d = 2 ** (i + 1)
            blocks += [nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False),
                       nn.BatchNorm2d(channels, **_BN), nn.ReLU(inplace=True)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.blocks(x)
