"""Batch preprocessing on the training device: uint8 -> float, augmentation, normalisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# https://pytorch.org/vision/stable/models.html: the statistics torchvision's weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# For grey input, the luminance-free average of the RGB statistics.
IMAGENET_GREY = ((0.449,), (0.226,))

_MAX_SHIFT = 0.125  # random_crop: up to 1/8 of the side, as pad-4-on-32 crops do for CIFAR
_MAX_DEGREES = 15.0  # rotate
_JITTER = 0.4  # color_jitter: brightness, contrast and saturation factors in [0.6, 1.4]


def imagenet_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet mean and std for 1 or 3 channels."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else IMAGENET_GREY


class BatchTransform:
    """Turn a uint8 batch (N, C, H, W) into the model's float input, augmenting when training.

    Augmentation runs per sample but vectorised over the batch, on whatever device the batch is
    on: no PIL work per image per epoch, and the GPU does it when there is one.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        augment: Sequence[str] = (),
        channels_last: bool = False,
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = frozenset(augment)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # (x / 255 - mean) / std as one multiply-add: x * scale + shift, kept per device.
        self._affine_by_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._affine_by_device:
            scale, shift = 1 / (255 * self.std), -self.mean / self.std
            self._affine_by_device[device] = (scale.to(device), shift.to(device))
        return self._affine_by_device[device]

    def __call__(self, images: torch.Tensor, *, train: bool) -> torch.Tensor:
        x = images.float()
        if train and self.augment:
            # Augmentations work on [0, 1] pixels (clamping, zero fill).
            x = self._augment(x.div_(255.0)).mul_(255.0)
        scale, shift = self._scale_shift(x.device)
        return torch.addcmul(shift, x, scale).contiguous(memory_format=self.memory_format)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if "hflip" in self.augment:
            flip = torch.rand(n, device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if "random_crop" in self.augment or "rotate" in self.augment:
            x = self._affine(x)
        if "color_jitter" in self.augment:
            x = self._jitter(x)
        return x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        # One grid_sample for shift and rotation; areas moved in from outside are zero (black),
        # like torchvision's RandomCrop(padding=...) and RandomRotation.
        n, _, height, width = x.shape
        angle = torch.zeros(n, device=x.device)
        shift = torch.zeros(n, 2, device=x.device)
        if "rotate" in self.augment:
            angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(_MAX_DEGREES)
        if "random_crop" in self.augment:
            # Whole-pixel shifts, so a shifted image is an exact crop of the padded one.
            sides = torch.tensor([width, height], device=x.device, dtype=torch.float32)
            pixels = torch.round((torch.rand(n, 2, device=x.device) * 2 - 1) * _MAX_SHIFT * sides)
            shift = pixels * 2 / sides
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]

        def factor() -> torch.Tensor:
            return (1 + (torch.rand(n, device=x.device) * 2 - 1) * _JITTER).view(-1, 1, 1, 1)

        x = x * factor()  # brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean  # contrast
        if x.shape[1] == 3:
            grey = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(
                1, keepdim=True
            )
            x = (x - grey) * factor() + grey  # saturation
        return x.clamp_(0.0, 1.0)


def channel_stats(batches: Sequence[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 batches, as floats in [0, 1] (float64 sums)."""
    total = torch.zeros(0, dtype=torch.float64)
    squares = torch.zeros(0, dtype=torch.float64)
    count = 0
    for batch in batches:
        x = batch.to(torch.float64).div_(255.0)
        sums, sq = x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))
        total = sums if count == 0 else total + sums
        squares = sq if count == 0 else squares + sq
        count += x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()
