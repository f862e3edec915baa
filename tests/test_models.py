import math

import pytest
import torch

from cnnsweep.devices import bf16_supported
from cnnsweep.errors import ConfigError
from cnnsweep.models import create_model, list_models


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_alexnet_has_the_reports_parameter_count():
    assert count(create_model("alexnet")) == 35_154_570
    assert count(create_model("alexnet", dropout=True)) == 35_154_570
    assert count(create_model("alexnet", batch_norm=True)) == 35_156_490


def test_alexnet_layout_matches_the_report():
    model = create_model("alexnet", batch_norm=True, dropout=True)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    kinds = [type(m).__name__ for m in model.features]
    # max-pool after the 1st, 2nd and 5th conv blocks
    assert kinds.count("MaxPool2d") == 3
    assert kinds[3] == "MaxPool2d" and kinds[7] == "MaxPool2d" and kinds[-1] == "MaxPool2d"
    fc = [type(m).__name__ for m in model.classifier]
    # Linear -> Dropout -> ReLU, as in the report's fc_block
    assert fc == ["Linear", "Dropout", "ReLU", "Linear", "Dropout", "ReLU", "Linear"]
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [4096, 4096, 10]
    assert all(not m.bias.detach().any() for m in linears)


def test_alexnet_adapts_to_grayscale_28x28_and_width():
    model = create_model("alexnet", in_channels=1, image_size=(28, 28), num_classes=7, width=0.25)
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 7)
    assert model.features[0].out_channels == 16
    assert model.classifier[0].in_features == 64 * 3 * 3


def test_too_small_images_are_refused():
    with pytest.raises(ConfigError, match="too small"):
        create_model("alexnet", image_size=(4, 4))


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'vgg'.*alexnet, mobilenetv2, resnet18"):
        create_model("vgg")
    assert "alexnet" in list_models()


def test_every_built_in_family_registers_under_its_known_name():
    """registry.FAMILIES names each family before its module is imported; importing that module
    must register exactly that name."""
    import importlib

    from cnnsweep.models.registry import _REGISTRY, FAMILIES

    for name, module in FAMILIES.items():
        importlib.import_module(module)
        assert name in _REGISTRY, f"{module} does not register {name!r}"


@pytest.mark.parametrize(
    ("name", "parameters"), [("resnet18", 11_173_962), ("mobilenetv2", 2_296_922)]
)
def test_cifar_variants_have_their_published_parameter_counts(name, parameters):
    """The common CIFAR variants (3x3 stem, no early downsampling), with batch norm."""
    model = create_model(name, batch_norm=True)
    assert count(model) == parameters
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # dropout adds no parameters; width scales them; grayscale 28x28 and other class counts fit
    assert count(create_model(name, batch_norm=True, dropout=True)) == parameters
    small = create_model(name, batch_norm=True, width=0.25, in_channels=1, image_size=(28, 28),
                         num_classes=7)  # fmt: skip
    assert count(small) < parameters / 8
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    without = create_model(name, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "mobilenetv2"])
def test_each_model_learns_a_batch_in_a_few_steps_channels_last_and_bf16(name):
    """Channels-last inputs and bf16 autocast, as train.py uses them: where the CPU runs bf16
    natively (on a CPU without, train.py trains in fp32, and bf16 is emulated at a tenth of
    the speed); the loss falls."""
    use_bf16 = bf16_supported(torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model(name, batch_norm=True, width=0.25).to(memory_format=torch.channels_last)
    images = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(16) % 10
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(math.isfinite, losses)) and losses[-1] < losses[0] * 0.8, losses
