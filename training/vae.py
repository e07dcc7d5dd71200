"""The segmentation-QC variational autoencoder of (map, myocardium mask) pairs on the 96 x 96 crop grid.

Both halves work at half the grid's resolution (48 x 48, 2.5 mm), where the myocardium is still a ring several
pixels thick; the decoder's logits are upsampled bilinearly to 96 x 96, so borders stay sub-pixel. The decoder is
small because the run-time latent search decodes a batch of perturbed latents for every gradient.

Channel 0 is the normalised map (``inference.grids.normalise_map``), channel 1 the myocardium (0/1).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

LATENT_SIZE = 8
GRID_SIZE = 96
_LOW_SIZE = 48
_BOTTOM_SIZE = 6


def coordinates(size: int) -> torch.Tensor:
    """(1, 2, size, size) x and y of each pixel centre, -1 .. 1: the coordinate channels that let convolutions
    place the ring where the latent says (CoordConv), which plain convolutions do poorly."""
    axis = torch.linspace(-1.0, 1.0, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y])[None]


class _WithCoordinates(nn.Module):
    """Append the coordinate channels to a feature map."""

    grid: torch.Tensor  # the buffer registered in __init__

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("grid", coordinates(size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([features, self.grid.expand(features.shape[0], -1, -1, -1)], dim=1)


class Encoder(nn.Module):
    """pair (N, 2, 96, 96) -> mean, log_variance (N, 8)."""

    def __init__(self, latent_size: int = LATENT_SIZE, width: int = 24) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),  # 96 -> 48
            _WithCoordinates(_LOW_SIZE),
            nn.Conv2d(4, width, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(width, width * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.1),  # 24
            nn.Conv2d(width * 2, width * 4, 4, stride=2, padding=1), nn.LeakyReLU(0.1),  # 12
            nn.Conv2d(width * 4, width * 4, 4, stride=2, padding=1), nn.LeakyReLU(0.1),  # 6
        )
        self.head = nn.Linear(width * 4 * _BOTTOM_SIZE * _BOTTOM_SIZE, 2 * latent_size)
        self.latent_size = latent_size

    def forward(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moments = self.head(self.features(pair).flatten(1))
        return moments[:, : self.latent_size], moments[:, self.latent_size:]


class Decoder(nn.Module):
    """latent (N, 8) -> logits (N, 2, 96, 96): channel 0 the map itself, channel 1 the myocardium's logit."""

    def __init__(self, latent_size: int = LATENT_SIZE, width: int = 12) -> None:
        super().__init__()
        self.width = width
        self.head = nn.Linear(latent_size, width * 4 * _BOTTOM_SIZE * _BOTTOM_SIZE)
        self.body = nn.Sequential(
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(width * 4, width * 4, 4, stride=2, padding=1), nn.LeakyReLU(0.1),  # 12
            nn.ConvTranspose2d(width * 4, width * 2, 4, stride=2, padding=1), nn.LeakyReLU(0.1),  # 24
            _WithCoordinates(_LOW_SIZE // 2),
            nn.ConvTranspose2d(width * 2 + 2, width, 4, stride=2, padding=1), nn.LeakyReLU(0.1),  # 48
            _WithCoordinates(_LOW_SIZE),
            nn.Conv2d(width + 2, 2, 3, padding=1),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        low = self.body(self.head(latent).view(-1, self.width * 4, _BOTTOM_SIZE, _BOTTOM_SIZE))
        return functional.interpolate(low, size=(GRID_SIZE, GRID_SIZE), mode="bilinear", align_corners=False)


class ExportedDecoder(nn.Module):
    """The decoder as shipped: the segmentation channel as a probability (sigmoid inside the graph)."""

    def __init__(self, decoder: Decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(latent)
        return torch.cat([logits[:, :1], torch.sigmoid(logits[:, 1:])], dim=1)


class PairVAE(nn.Module):
    """Encoder and decoder trained together; ``forward`` samples the latent (reparameterisation)."""

    def __init__(self, latent_size: int = LATENT_SIZE, decoder_width: int = 12) -> None:
        super().__init__()
        self.encoder = Encoder(latent_size)
        self.decoder = Decoder(latent_size, decoder_width)

    def forward(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encoder(pair)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance) if self.training else mean
        return self.decoder(latent), mean, log_variance


def vae_loss(logits: torch.Tensor, pair: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor, *,
             beta: float, image_weight: float, image_window: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-pixel mean reconstruction (squared error of the map, weighted by ``image_window`` (96, 96) when given,
    plus binary cross-entropy of the mask) and beta times the KL divergence to N(0, I) averaged over latent
    dimensions; batch mean."""
    squared = (logits[:, 0] - pair[:, 0]).pow(2)
    image_error = torch.mean(squared * image_window if image_window is not None else squared)
    mask_error = functional.binary_cross_entropy_with_logits(logits[:, 1], pair[:, 1])
    kl = 0.5 * torch.mean(torch.sum(mean.pow(2) + log_variance.exp() - 1.0 - log_variance, dim=1)) / mean.shape[1]
    total = image_weight * image_error + mask_error + beta * kl
    parts = {"image_mse": float(image_error.detach()), "mask_bce": float(mask_error.detach()),
             "kl_per_dim": float(kl.detach())}
    return total, parts
