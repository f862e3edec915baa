"""Resume inside a run: a run interrupted after epoch e resumes at e + 1 from its checkpoint and
ends exactly as an uninterrupted run; a bad checkpoint means starting over, never a crash."""

from pathlib import Path

import numpy as np
import pytest

from cnnsweep.checkpoint import RunCheckpoint
from cnnsweep.config import make_config
from cnnsweep.data import ImageDataset
from cnnsweep.train import train
from tests.conftest import pattern_image

# Dropout (the global random stream), augmentation (the batch-order stream), restore_best (the
# best weights kept aside) and patience: every piece of state a resume must bring back.
SETTINGS = {"width": 0.0625, "max_epochs": 5, "eval_batch_size": 256, "dropout": True,
            "batch_norm": True, "augment": "crop+flip", "split": 0.8, "patience": 3,
            "train_eval_images": 64, "seed": 5}  # fmt: skip


@pytest.fixture(scope="module")
def patterns() -> ImageDataset:
    rng = np.random.default_rng(2)
    labels = np.arange(400) % 10
    images = np.stack([pattern_image(int(k), rng) for k in labels])[:, None]
    return ImageDataset(images[:300], labels[:300], images[300:], labels[300:],
                        tuple(f"c{i}" for i in range(10)))  # fmt: skip


def metrics(result) -> tuple:
    """Everything a run computes, its timings aside."""
    history = [m.model_dump(exclude={"epoch_time", "images_per_second"}) for m in result.history]
    return (history, result.test_loss, result.test_accuracy, result.best_epoch,
            result.stop_reason, result.train_eval_accuracy)  # fmt: skip


class Preempted(Exception):
    pass


def preempt_after_2(m) -> None:
    """Stops the run as epoch 3 ends, before its checkpoint: the last one saved is epoch 2's."""
    if m.epoch == 3:
        raise Preempted


def test_a_run_interrupted_after_epoch_2_resumes_at_3_and_ends_identically(patterns, tmp_path):
    config = make_config(**SETTINGS)
    whole = train(config, patterns)
    path = tmp_path / "run.pt"
    with pytest.raises(Preempted):
        train(config, patterns, checkpoint=RunCheckpoint(path, "k", 0), on_epoch=preempt_after_2)
    assert path.is_file()
    seen = []
    resumed = train(config, patterns, checkpoint=RunCheckpoint(path, "k", 0), on_epoch=seen.append)
    assert [m.epoch for m in seen] == [3, 4, 5]  # epochs 1 and 2 were not trained again
    assert [m.epoch for m in resumed.history] == [1, 2, 3, 4, 5]
    assert metrics(resumed) == metrics(whole)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-config", "empty"])
def test_a_bad_checkpoint_means_starting_over(patterns, tmp_path, damage, caplog):
    config = make_config(**{**SETTINGS, "max_epochs": 3})
    path = tmp_path / "run.pt"
    with pytest.raises(Preempted):
        train(config, patterns, checkpoint=RunCheckpoint(path, "k", 0), on_epoch=preempt_after_2)
    blob = path.read_bytes()
    key = "k"
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        key = "another config"
    seen = []
    result = train(config, patterns, checkpoint=RunCheckpoint(path, key, 0), on_epoch=seen.append)
    assert [m.epoch for m in seen] == [1, 2, 3]  # from scratch
    assert metrics(result) == metrics(train(config, patterns))
    assert "starting the run over" in caplog.text


def test_checkpoints_are_spaced_out_by_min_interval(patterns, tmp_path):
    path = tmp_path / "run.pt"
    config = make_config(**{**SETTINGS, "max_epochs": 3})
    train(config, patterns, checkpoint=RunCheckpoint(path, "k", 3600))
    assert not path.exists()  # no epoch came an hour after the start


def test_a_checkpoint_folder_that_cannot_be_written_costs_warnings_never_the_run(patterns, caplog):
    """A checkpoint under a path that is no folder (/dev/null, or one made read-only or removed
    mid-study): each save and the final removal say so in a line, and the run trains to its end
    as it would without checkpoints. Before, the removal's error ended the worker."""
    config = make_config(**{**SETTINGS, "max_epochs": 2})
    checkpoint = RunCheckpoint(Path("/dev/null/study/run.pt"), "k", 0)
    result = train(config, patterns, checkpoint=checkpoint)
    checkpoint.remove()
    assert metrics(result) == metrics(train(config, patterns))
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot write checkpoint /dev/null/study/run.pt" in m for m in said), said
    assert any("cannot remove checkpoint /dev/null/study/run.pt" in m for m in said), said
