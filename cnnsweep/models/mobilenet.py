"""MobileNetV2, CIFAR variant (Sandler et al. 2018, as commonly adapted to 32x32 images): a 3x3
stride-1 stem and the second stage at stride 1 (so 32x32 inputs end at 4x4), inverted residual
blocks (1x1 expansion, 3x3 depthwise, 1x1 linear projection), a 1x1 convolution to 1,280
channels, global average pooling, one linear layer. At 32x32x3 and 10 classes it has 2,296,922
parameters (with batch norm).

Options as for every family: ``batch_norm`` (after each convolution, the architecture's own;
without it the convolutions get biases), ``dropout`` (p=0.5 before the classifier), ``width``.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnsweep.models.common import PooledConvNet, check_image_size, conv_norm, scaled
from cnnsweep.models.registry import register_model

# (expansion, output channels, blocks, stride of the first block); stage 2's stride is 1 here
# where ImageNet's MobileNetV2 has 2, and the stem's stride is 1 where it has 2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
STEM, LAST = 32, 1280


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int,
                 batch_norm: bool) -> None:  # fmt: skip
        super().__init__()
        hidden = in_channels * expansion
        self.body = nn.Sequential(
            *conv_norm(in_channels, hidden, 1, 1, batch_norm),
            nn.ReLU6(inplace=True),
            *conv_norm(hidden, hidden, 3, stride, batch_norm, groups=hidden),
            nn.ReLU6(inplace=True),
            *conv_norm(hidden, out_channels, 1, 1, batch_norm),  # linear bottleneck: no ReLU
        )
        self.stride = stride
        self.shortcut = (
            nn.Sequential(*conv_norm(in_channels, out_channels, 1, 1, batch_norm))
            if stride == 1 and in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2CIFAR(PooledConvNet):
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
        channels = scaled(STEM, width)
        layers: list[nn.Module] = [*conv_norm(in_channels, channels, 3, 1, batch_norm),
                                   nn.ReLU6(inplace=True)]  # fmt: skip
        for expansion, base, blocks, stride in STAGES:
            out = scaled(base, width)
            for block in range(blocks):
                first_stride = stride if block == 0 else 1
                layers.append(InvertedResidual(channels, out, expansion, first_stride, batch_norm))
                channels = out
        last = scaled(LAST, width)
        layers += [*conv_norm(channels, last, 1, 1, batch_norm), nn.ReLU6(inplace=True)]
        super().__init__(layers, last, num_classes, dropout)


@register_model("mobilenetv2")
def mobilenetv2(**options) -> MobileNetV2CIFAR:
    return MobileNetV2CIFAR(**options)
