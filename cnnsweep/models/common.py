"""What the ResNet and MobileNetV2 families share: a convolution with its batch norm, channel
scaling by ``width``, and the head (global average pooling, optional dropout, one linear layer)."""

from __future__ import annotations

import torch
from torch import nn

DROPOUT_P = 0.5


def scaled(base: int, width: float) -> int:
    return max(1, round(base * width))


def conv_norm(in_channels: int, out_channels: int, kernel: int, stride: int, batch_norm: bool,
              groups: int = 1) -> list[nn.Module]:  # fmt: skip
    """A convolution ("same" padding) and, with ``batch_norm``, its batch norm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2,
                     groups=groups, bias=not batch_norm)  # fmt: skip
    return [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]


def check_image_size(image_size: tuple[int, int]) -> None:
    if min(image_size) < 8:  # three stride-2 stages
        raise ValueError(f"image size {image_size} is too small for three stride-2 stages")


class PooledConvNet(nn.Module):
    """``body`` (ending with ``channels`` channels), global average pooling, dropout (p=0.5)
    if asked, one linear layer; convolutions initialised He-normal (fan out)."""

    def __init__(self, body: list[nn.Module], channels: int, num_classes: int, dropout: bool):
        super().__init__()
        self.features = nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        head: list[nn.Module] = [nn.Dropout(DROPOUT_P)] if dropout else []
        self.classifier = nn.Sequential(*head, nn.Linear(channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
