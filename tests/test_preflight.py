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


def test_runs_of_one_shape_are_measured_on_meta_once(bars_folder):
    """A worker trains many runs of one shape (seeds, learning rates, optimizers, splits): the
    model is measured once per shape, and what differs per run (optimizer state, data) still
    counts in each run's footprint."""
    from cnnsweep.preflight import _model_counts

    data = load_data(bars_folder)
    _model_counts.cache_clear()
    adam = make_config(width=0.125, batch_size=8, batch_norm=True, optimizer="adam", lr=1e-3)
    first = footprint(adam, data)
    changes = ({"lr": 1e-4}, {"seed": 3}, {"optimizer": "sgd", "lr": 0.01})
    again = [footprint(adam.model_copy(update=change), data) for change in changes]
    info = _model_counts.cache_info()
    assert (info.misses, info.hits) == (1, 3)
    assert again[0] == again[1] == first
    # SGD keeps one state tensor a parameter (momentum) where Adam keeps two.
    assert first.bytes - again[2].bytes == 4 * first.parameters
    footprint(adam.model_copy(update={"batch_size": 16}), data)  # another shape: measured
    assert _model_counts.cache_info().misses == 2
