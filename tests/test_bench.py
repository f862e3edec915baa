import json
import os
import subprocess
import sys

from tests.conftest import REPO, SHARED_ARCHIVE


def test_throughput_benchmark_prints_both_figures_and_their_ratio(
    real_cifar, session_cache, tmp_path
):
    """A small-width run of bench/throughput.py; the real figure is measured at width 1 (README)."""
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "throughput.py"), "--data", str(SHARED_ARCHIVE),
         "--width", "0.125", "--images", "512", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "CNNSWEEP_CACHE": str(session_cache)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "report loop" in done.stdout and "ratio" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["train_images"] == 512
    assert figures["report_loop_img_per_s"] > 0 and figures["cnnsweep_img_per_s"] > 0
    ratio = figures["cnnsweep_img_per_s"] / figures["report_loop_img_per_s"]
    assert abs(figures["ratio"] - ratio) < 0.01
