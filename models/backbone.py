"""SECOND-style 2D BEV backbone and a CenterPoint-style dense head."""
from __future__ import annotations

import torch
from torch import Tensor, nn

# OpenPCDet's BEV norm settings (small momentum: BEV statistics are noisy across sparse frames).
_BN = {"eps": 1e-3, "momentum": 0.01}


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out, **_BN), nn.ReLU(inplace=True)]


class SecondBackbone(nn.Module):
    """OpenPCDet BaseBEVBackbone: per level a strided 3x3 conv + ``layer_num`` 3x3 convs, then
    every level is transposed-conv upsampled to a common resolution and concatenated.

    Args:
        in_channels: channels of the BEV input.
        layer_nums / strides / filters: one entry per level.
        upsample_strides / upsample_filters: one entry per level (integer strides >= 1).
    """

    def __init__(
        self,
        in_channels: int,
        layer_nums: tuple[int, ...],
        strides: tuple[int, ...],
        filters: tuple[int, ...],
        upsample_strides: tuple[int, ...],
        upsample_filters: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        c_in = in_channels
        for n, s, c, us, uc in zip(layer_nums, strides, filters, upsample_strides,
                                   upsample_filters, strict=True):
            layers = _conv_bn_relu(c_in, c, stride=s)
            for _ in range(n):
                layers += _conv_bn_relu(c, c)
            self.blocks.append(nn.Sequential(*layers))
            self.deblocks.append(nn.Sequential(
                nn.ConvTranspose2d(c, uc, us, stride=us, bias=False),
                nn.BatchNorm2d(uc, **_BN), nn.ReLU(inplace=True),
            ))
            c_in = c
        self.out_channels = sum(upsample_filters)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, sum(upsample_filters), H / s, W / s), s = the head stride."""
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks, strict=True):
            x = block(x)
            ups.append(deblock(x))
        return ups[0] if len(ups) == 1 else torch.cat(ups, dim=1)


class CenterHead(nn.Module):
    """Shared 3x3 conv, then a heatmap branch (K logits) and a box branch (R regressions).

    CenterPoint has one branch per box attribute; one shared box branch is the cheaper variant
    with the same outputs. Each branch: 3x3 conv+BN+ReLU, then a 1x1 conv to its outputs.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, box_code_size: int,
                 init_bias: float) -> None:
        super().__init__()
        self.shared = nn.Sequential(*_conv_bn_relu(in_channels, channels))
        self.heatmap = nn.Sequential(*_conv_bn_relu(channels, channels),
                                     nn.Conv2d(channels, num_classes, 1))
        self.box = nn.Sequential(*_conv_bn_relu(channels, channels),
                                 nn.Conv2d(channels, box_code_size, 1))
        # Start every cell at the ~0.1 prior so the focal loss is not swamped at step 0.
        nn.init.constant_(self.heatmap[-1].bias, init_bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, Ho, Wo) -> heatmap logits (B, K, Ho, Wo), box code (B, R, Ho, Wo)."""
        x = self.shared(x)
        return self.heatmap(x), self.box(x)
