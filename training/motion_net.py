"""Multi-stream CNN with a class-activation-map head: motion artefacts per AHA segment position.

Three small residual streams read the raw inversion-recovery stack, the T1 map and the R2 map of the fit; their
features are concatenated with the slice's AHA segment layout and fused. A 1x1 convolution turns the fused
features into one class activation map (CAM, Zhou et al., "Learning deep features for discriminative
localization", CVPR 2016) per segment position, at the input's resolution (the fused features upsampled, with the
segment layout itself, so that a map can follow its segment's border); a segment's logit is the mean of its map
over that segment's pixels, so the map is where the decision is made and can be shown to the reader. The
whole-image logit comes from the globally pooled features.

Every model input is on the 96 x 96 crop grid (inference/grids.py); the myocardium of every phantom slice lies
within 36 pixels of the grid centre, so the network reads the central 80 x 80 pixels (+-50 mm) and works at half
that resolution (2.5 mm); the maps are made at full resolution. Attention maps come back on the full 96 x 96
grid, 0 outside the central part.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as nnf

N_IMAGES = 11
N_POSITIONS = 6
GRID_SIZE = 96
WORK_SIZE = 80
_MARGIN = (GRID_SIZE - WORK_SIZE) // 2
_EPS = 1e-6
JACCARD_WEIGHT = 2.0  # the soft Jaccard term against the cross-entropy (which cannot fall below the mask entropy)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers (optionally dilated) with an identity skip."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        return self.relu(self.norm2(self.conv2(out)) + x)


def _stream(in_channels: int, channels: int) -> nn.Sequential:
    """One input kind: a stride-2 conv to the working resolution, then a residual block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        ResidualBlock(channels),
    )


class MotionNet(nn.Module):
    """Inputs (N, 11|1|1|6, 96, 96): IR stack, T1 map, R2 map, segment layout. Outputs: segment logits (N, 6),
    whole-image logit (N, 1), attention (N, 6, 96, 96) in 0..1 per map, and (training only) the raw CAMs on the
    central 80 x 80 pixels with the segment masks they were pooled over."""

    def __init__(self, image_channels: int = 24, map_channels: int = 8, fused_channels: int = 32,
                 context_channels: int = 48) -> None:
        super().__init__()
        self.images = _stream(N_IMAGES, image_channels)
        self.t1 = _stream(1, map_channels)
        self.r2 = _stream(1, map_channels)
        fused_in = image_channels + 2 * map_channels + N_POSITIONS
        self.fuse = nn.Sequential(
            nn.Conv2d(fused_in, fused_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(fused_channels),
            nn.ReLU(inplace=True),
            ResidualBlock(fused_channels),
        )
        # Context at a quarter of the working resolution (5 mm), added back: the whole slice's motion pattern.
        self.down = nn.Sequential(
            nn.Conv2d(fused_channels, context_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(context_channels),
            nn.ReLU(inplace=True),
            ResidualBlock(context_channels, dilation=2),
        )
        self.lateral = nn.Conv2d(context_channels, fused_channels, 1)
        self.refine = ResidualBlock(fused_channels)
        self.cam = nn.Conv2d(fused_channels + N_POSITIONS, N_POSITIONS, 1)
        self.whole = nn.Linear(2 * (fused_channels + context_channels), 1)

    def forward_all(self, ir_images: torch.Tensor, t1_map: torch.Tensor, r2_map: torch.Tensor,
                    segments: torch.Tensor) -> tuple[torch.Tensor, ...]:
        window = slice(_MARGIN, _MARGIN + WORK_SIZE)
        ir_images, t1_map, r2_map, segments = (x[:, :, window, window] for x in (ir_images, t1_map, r2_map, segments))
        weights = nnf.avg_pool2d(segments, 2)  # fraction of each working pixel in each segment
        features = torch.cat([self.images(ir_images), self.t1(t1_map), self.r2(r2_map), weights], dim=1)
        fused = self.fuse(features)
        context = self.down(fused)
        up = nnf.interpolate(self.lateral(context), scale_factor=2.0, mode="bilinear", align_corners=False)
        fused = self.refine(fused + up)
        full = nnf.interpolate(fused, scale_factor=2.0, mode="bilinear", align_corners=False)
        cams = self.cam(torch.cat([full, segments], dim=1))
        segment_logits = (cams * segments).sum(dim=(2, 3)) / (segments.sum(dim=(2, 3)) + _EPS)
        pooled = torch.cat([fused.mean(dim=(2, 3)), fused.amax(dim=(2, 3)), context.mean(dim=(2, 3)),
                            context.amax(dim=(2, 3))], dim=1)
        whole_logit = self.whole(pooled)
        low = cams.amin(dim=(2, 3), keepdim=True)
        high = cams.amax(dim=(2, 3), keepdim=True)
        scaled = (cams - low) / (high - low + _EPS)
        attention = nnf.pad(scaled, (_MARGIN, _MARGIN, _MARGIN, _MARGIN))
        return segment_logits, whole_logit, attention, cams, segments

    def forward(self, ir_images: torch.Tensor, t1_map: torch.Tensor, r2_map: torch.Tensor,
                segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        segment_logits, whole_logit, attention, _, _ = self.forward_all(ir_images, t1_map, r2_map, segments)
        return segment_logits, whole_logit, attention


def attention_loss(cams: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pushes every segment's map onto its own segment, mean over the segments present: the cross-entropy between
    the mask (as a spatial distribution) and the map's spatial softmax, plus the soft Jaccard distance between the
    mask and the map scaled 0..1 (the attention shown to the reader)."""
    n, k = cams.shape[:2]
    flat = cams.reshape(n, k, -1)
    target = masks.reshape(n, k, -1)
    cross_entropy = -(target / (target.sum(dim=2, keepdim=True) + _EPS) * nnf.log_softmax(flat, dim=2)).sum(dim=2)
    low, high = flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)
    scaled = (flat - low) / (high - low + _EPS)
    overlap = (scaled * target).sum(dim=2)
    soft_jaccard = 1.0 - overlap / (scaled.sum(dim=2) + target.sum(dim=2) - overlap + _EPS)
    mask = valid.float()
    return ((cross_entropy + JACCARD_WEIGHT * soft_jaccard) * mask).sum() / mask.sum().clamp(min=1.0)
