"""The consensus network: a small fully convolutional U-Net from (map, one reader's myocardium) to the myocardium
the experts converge to.

Fully convolutional rather than an encoder with a dense per-pixel output layer: the correction a contour needs
(a shifted border, fat or blood pool included, a missed sector) is local, so convolutions see what matters with a
few hundred thousand weights instead of tens of millions, and the same weights serve every position.
"""

from __future__ import annotations

import torch
from torch import nn

IN_CHANNELS = 2  # normalised map, reader's myocardium mask
WIDTHS = (16, 32, 64, 96)


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ConsensusNet(nn.Module):
    """U-Net of ``len(widths)`` levels (3 poolings for the default widths: 96 -> 12 pixels at the bottom, a
    receptive field wider than the wall and the errors readers make); one output channel, the myocardium logit."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.encoders = nn.ModuleList()
        previous = IN_CHANNELS
        for width in widths:
            self.encoders.append(_DoubleConv(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.decoders = nn.ModuleList(
            _DoubleConv(deep + shallow, shallow) for deep, shallow in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        skips = []
        features = pair
        for index, encoder in enumerate(self.encoders):
            if index:
                features = self.pool(features)
            features = encoder(features)
            skips.append(features)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            features = decoder(torch.cat([self.upsample(features), skip], dim=1))
        return self.head(features)


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
