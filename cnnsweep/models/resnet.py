"""ResNet-18, CIFAR variant (He et al. 2016, as commonly adapted to 32x32 images): a 3x3 stem
with no early downsampling, four stages of two basic blocks (64, 128, 256, 512 channels; stride
1, 2, 2, 2), global average pooling, one linear layer. At 32x32x3 and 10 classes it has
11,173,962 parameters (with batch norm).

Options as for every family: ``batch_norm`` (after each convolution, the architecture's own;
without it the convolutions get biases), ``dropout`` (p=0.5 before the classifier), ``width``.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnsweep.models.registry import register_model

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)
BLOCKS_PER_STAGE = 2
DROPOUT_P = 0.5


def scaled(base: int, width: float) -> int:
    return max(1, round(base * width))


def conv_norm(in_channels: int, out_channels: int, kernel: int, stride: int, batch_norm: bool,
              groups: int = 1) -> list[nn.Module]:  # fmt: skip
    """A convolution ("same" padding) and, with ``batch_norm``, its batch norm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2,
                     groups=groups, bias=not batch_norm)  # fmt: skip
    return [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, batch_norm: bool):
        super().__init__()
        self.body = nn.Sequential(
            *conv_norm(in_channels, out_channels, 3, stride, batch_norm),
            nn.ReLU(inplace=True),
            *conv_norm(out_channels, out_channels, 3, 1, batch_norm),
        )
        self.shortcut = (
            nn.Sequential(*conv_norm(in_channels, out_channels, 1, stride, batch_norm))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18CIFAR(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        batch_norm: bool = True,
        dropout: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if min(image_size) < 8:  # three stride-2 stages
            raise ValueError(f"image size {image_size} is too small for three stride-2 stages")
        channels = scaled(64, width)
        layers: list[nn.Module] = [*conv_norm(in_channels, channels, 3, 1, batch_norm),
                                   nn.ReLU(inplace=True)]  # fmt: skip
        for base, stride in STAGES:
            out = scaled(base, width)
            for block in range(BLOCKS_PER_STAGE):
                layers.append(BasicBlock(channels, out, stride if block == 0 else 1, batch_norm))
                channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        head: list[nn.Module] = [nn.Dropout(DROPOUT_P)] if dropout else []
        self.classifier = nn.Sequential(*head, nn.Linear(channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("resnet18")
def resnet18(**options) -> ResNet18CIFAR:
    return ResNet18CIFAR(**options)
