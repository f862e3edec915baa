"""The report serves any study: a grid seed48 never uses, trained for real on a small
class-folder set, gets a report about its own factors and nothing of the seed report's."""

import re

import pandas as pd
import pytest

from cnnsweep.cli import main
from tests.conftest import write_spec

ANY_GRID = """
name = "anygrid"
description = "augment x width x lr, two seeds."
protocol = "holdout"
seeds = [0, 1]
data = "{data}"

[fixed]
max_epochs = 2
patience = 10
eval_batch_size = 256
train_eval_images = 100

[grid]
augment = [false, true]
width = [0.0625, 0.125]
lr = [0.003, 1e-7]   # the planted effect: a learning rate too small to learn anything
batch_size = [16]    # one level: a fixed setting, ranked and drawn nowhere
"""


@pytest.fixture(scope="module")
def any_grid_report(tmp_path_factory, bars_folder):
    folder = tmp_path_factory.mktemp("anygrid")
    spec = write_spec(folder / "anygrid.toml", ANY_GRID.format(data=bars_folder))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("CNNSWEEP_CACHE", str(folder / "cache"))
        assert main(["run", str(spec), "--workers", "2", "--devices", "cpu"]) == 0
    report = folder / "runs" / "anygrid" / "report"
    return report, (report / "report.html").read_text()


def test_no_seed_report_claims_in_a_study_that_names_none(any_grid_report):
    _, html = any_grid_report
    assert 'id="findings"' not in html and "Claims re-tested" not in html
    assert "Batch norm beats dropout" not in html


def test_one_figure_per_varied_factor_and_none_for_a_fixed_one(any_grid_report):
    report, _ = any_grid_report
    names = sorted(p.stem for p in report.glob("*.png"))
    by_factor = [n for n in names if n.startswith("test_accuracy_by_")]
    assert sorted(by_factor) == ["test_accuracy_by_augment", "test_accuracy_by_lr",
                                 "test_accuracy_by_width"]  # fmt: skip
    assert not any("batch_size" in n for n in names)
    assert any(n.startswith("interaction_lr_") for n in names)
    assert {"train_vs_test", "learning_curves"} <= set(names)


def test_the_planted_factor_is_ranked_first(any_grid_report):
    _, html = any_grid_report
    ranked = re.findall(r'<tr data-factor="([^"]+)">', html.split('id="mattered"')[1])
    assert ranked[0] == "lr" and sorted(ranked) == ["augment", "lr", "width"]
    assert "Not varied among the finished runs (one level): batch_size." in html
    assert 'id="seeds"' in html  # two seeds: the seed-to-seed spread is weighed


def test_the_overfitting_gap_uses_eval_mode_training_accuracy(any_grid_report):
    report, html = any_grid_report
    results = pd.read_csv(report / "results.csv")
    assert results["train_eval_accuracy"].notna().all()
    assert results["train_eval_accuracy"].between(0, 100).all()
    assert "stored before cnnsweep measured" not in html


KFOLD = """
name = "cv"
protocol = "kfold"
seeds = [0]
data = "{data}"

[fixed]
folds = 3
width = 0.0625
max_epochs = 2
eval_batch_size = 256
train_eval_images = 50

[grid]
optimizer = ["adam", "sgd"]
"""


def test_a_kfold_study_is_reported_over_its_folds(tmp_path, bars_folder, monkeypatch):
    """Each configuration runs once per fold; the report aggregates over folds as over seeds."""
    spec = write_spec(tmp_path / "cv.toml", KFOLD.format(data=bars_folder))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(spec), "--workers", "2", "--devices", "cpu"]) == 0
    results = pd.read_csv(tmp_path / "runs" / "cv" / "results.csv")
    assert sorted(results["fold"]) == [0, 0, 1, 1, 2, 2]
    assert (results["val_size"] == 400 // 3 + (results["fold"] < 400 % 3)).all()
    html = (tmp_path / "runs" / "cv" / "report" / "report.html").read_text()
    configurations = html.split('id="configurations"')[1].split("</table>")[0]
    assert configurations.count("<tr><td>optimizer=") == 2  # folds folded into configurations
    assert "one per\nseed and fold" in html
