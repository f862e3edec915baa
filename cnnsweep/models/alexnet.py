"""The report's CIFAR-sized AlexNet (``alexnet_cifar10.py`` in the seed report).

Five 3x3 convolutions (64, 128, 256, 256, 256 channels) with max-pooling after the 1st, 2nd and
5th, then fully connected 4096-4096-classes. Batch norm (after each convolution) and dropout
(p=0.5, between each hidden Linear and its ReLU, where the report puts it) are options. At 32x32x3
and 10 classes it has the report's 35,154,570 parameters (35,156,490 with batch norm).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnsweep.models.registry import register_model

CONV_CHANNELS = (64, 128, 256, 256, 256)
POOL_AFTER = (0, 1, 4)  # indices of the convolutions followed by 2x2 max-pooling
HIDDEN_FEATURES = 4096
DROPOUT_P = 0.5


def _scaled(base: int, width: float) -> int:
    return max(1, round(base * width))


class AlexNetCIFAR(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        batch_norm: bool = False,
        dropout: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        height, width_px = image_size
        for index, base in enumerate(CONV_CHANNELS):
            out = _scaled(base, width)
            layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            if index in POOL_AFTER:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                height, width_px = height // 2, width_px // 2
            channels = out
        if height < 1 or width_px < 1:
            raise ValueError(f"image size {image_size} is too small for three 2x2 poolings")
        self.features = nn.Sequential(*layers)

        hidden = _scaled(HIDDEN_FEATURES, width)
        flat = channels * height * width_px  # 256 * 4 * 4 for the report's 32x32 input
        self.classifier = nn.Sequential(
            *_fc_block(flat, hidden, dropout),
            *_fc_block(hidden, hidden, dropout),
            nn.Linear(hidden, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _fc_block(in_features: int, out_features: int, dropout: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    if dropout:
        layers.append(nn.Dropout(DROPOUT_P))
    layers.append(nn.ReLU(inplace=True))
    return layers


@register_model("alexnet")
def alexnet(**options) -> AlexNetCIFAR:
    return AlexNetCIFAR(**options)
