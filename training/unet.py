"""U-Net with a residual encoder and decoder, sized to train from scratch on a CPU.

Ronneberger, Fischer and Brox, "U-Net: convolutional networks for biomedical image segmentation", MICCAI 2015,
with the residual units of He et al., "Deep residual learning for image recognition", CVPR 2016: every block is
conv-BN-ReLU, conv-BN plus a (1x1 projected) skip, then ReLU. Batch normalisation folds into the convolutions when
exported, so inference pays nothing for it.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a skip connection (1x1 conv-BN where the channel count changes)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.skip(x))


class UNet(nn.Module):
    """Encoder of ``levels`` resolutions (channels ``base_channels`` * 2**level, 2x2 max-pooling between them), a
    decoder of 2x2 transposed convolutions and skip concatenations, and a 1x1 head giving class logits.

    Input (N, in_channels, H, W) with H and W divisible by 2**(levels - 1); output (N, n_classes, H, W).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 3, base_channels: int = 16, levels: int = 4) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        channels = [base_channels * 2**level for level in range(levels)]
        self.encoder = nn.ModuleList([ResidualBlock(in_channels, channels[0])])
        self.encoder.extend(ResidualBlock(channels[i - 1], channels[i]) for i in range(1, levels))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i], channels[i - 1], 2, stride=2) for i in range(levels - 1, 0, -1)
        )
        self.decoder = nn.ModuleList(
            ResidualBlock(2 * channels[i - 1], channels[i - 1]) for i in range(levels - 1, 0, -1)
        )
        self.head = nn.Conv2d(channels[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.encoder):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
