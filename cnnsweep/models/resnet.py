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

from cnnsweep.models.common import PooledConvNet, check_image_size, conv_norm, scaled
from cnnsweep.models.registry import register_model

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)
BLOCKS_PER_STAGE = 2


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


class ResNet18CIFAR(PooledConvNet):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        batch_norm: bool = True,
        dropout: bool = False,
        width: float = 1.0,
    ) -> None:
        check_image_size(image_size)
        channels = scaled(64, width)
        layers: list[nn.Module] = [*conv_norm(in_channels, channels, 3, 1, batch_norm),
                                   nn.ReLU(inplace=True)]  # fmt: skip
        for base, stride in STAGES:
            out = scaled(base, width)
            for block in range(BLOCKS_PER_STAGE):
                layers.append(BasicBlock(channels, out, stride if block == 0 else 1, batch_norm))
                channels = out
        super().__init__(layers, channels, num_classes, dropout)


@register_model("resnet18")
def resnet18(**options) -> ResNet18CIFAR:
    return ResNet18CIFAR(**options)
