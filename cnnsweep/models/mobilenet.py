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

from cnnsweep.models.registry import register_model
from cnnsweep.models.resnet import DROPOUT_P, conv_norm, scaled

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


class MobileNetV2CIFAR(nn.Module):
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
        if min(image_size) < 8:
            raise ValueError(f"image size {image_size} is too small for three stride-2 stages")
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
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        head: list[nn.Module] = [nn.Dropout(DROPOUT_P)] if dropout else []
        self.classifier = nn.Sequential(*head, nn.Linear(last, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("mobilenetv2")
def mobilenetv2(**options) -> MobileNetV2CIFAR:
    return MobileNetV2CIFAR(**options)
