"""The preflight's memory estimate: taken on PyTorch's meta device, with the kernels that would
import TorchDynamo (a second of every `cnnsweep run`'s start) replaced by shape-only stand-ins."""

import subprocess
import sys

import pytest

from cnnsweep.config import make_config
from cnnsweep.data import load_data
from cnnsweep.models import build_model
from cnnsweep.preflight import _activation_count, footprint


@pytest.mark.parametrize(
    "regularization",
    [{}, {"batch_norm": True}, {"dropout": True}, {"batch_norm": True, "dropout": True}],
)
def test_the_meta_estimate_counts_what_a_real_model_has(bars_folder, regularization):
    data = load_data(bars_folder)
    config = make_config(width=0.125, batch_size=8, **regularization)
    estimate = footprint(config, data)
    model = build_model(config, data)  # real weights, on the CPU
    assert estimate.parameters == sum(p.numel() for p in model.parameters())
    on_meta = footprint(config.model_copy(update={"batch_size": 16}), data)
    real_activations = _activation_count(model, 8, data)
    # Twice the batch: twice the activations (4 bytes each, kept and their gradients).
    assert on_meta.bytes - estimate.bytes == 2 * 4 * real_activations


def test_the_estimate_for_the_reports_alexnet_loads_no_torchdynamo(bars_folder):
    probe = (
        "import sys\n"
        "from cnnsweep.config import make_config\n"
        "from cnnsweep.data import load_data\n"
        "from cnnsweep.preflight import footprint\n"
        f"data = load_data({str(bars_folder)!r}, progress=False)\n"
        "for reg in ({'batch_norm': True}, {'dropout': True}):\n"
        "    footprint(make_config(**reg), data)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False"
