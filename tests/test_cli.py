import json
import subprocess
import sys

import pytest

from cnnsweep.cli import main
from tests.conftest import write_cifar_archive, write_image_folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnsweep", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def bars(tmp_path):
    return write_image_folder(tmp_path / "bars", train_per_class=12, test_per_class=4)


def test_train_prints_the_result_as_json(bars, private_cache, capsys):
    """In this process (a real one runs in test_errors_exit_non_zero_from_a_real_process)."""
    assert main([
        "train", "--data", str(bars), "--batch-norm", "--optimizer", "sgd", "--lr", "0.01",
        "--batch-size", "16", "--split", "0.75", "--protocol", "holdout", "--max-epochs", "2",
        "--width", "0.0625", "--device", "cpu",
    ]) == 0  # fmt: skip
    done = capsys.readouterr()
    result = json.loads(done.out)
    assert result["config"]["optimizer"] == "sgd" and result["config"]["batch_norm"] is True
    assert result["epochs_trained"] == 2 and len(result["history"]) == 2
    assert result["train_size"] == 90 and result["val_size"] == 30 and result["test_size"] == 40
    assert "epoch 2/2" in done.err  # per-epoch progress goes to stderr


def test_every_training_setting_is_an_option_and_unset_ones_stay_unset():
    """The options are generated from TrainConfig: none is missing, none has a default of its
    own (the config's and the protocol's defaults apply)."""
    from cnnsweep.cli import _config_settings, build_parser
    from cnnsweep.config import TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "--restore-best", "--eval-batch-size", "256",
                              "--no-amp", "--monitor", "val_loss"])  # fmt: skip
    assert _config_settings(args) == {
        "restore_best": True, "eval_batch_size": 256, "amp": False, "monitor": "val_loss",
    }  # fmt: skip
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for name, field in TrainConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in help_text
        assert field.description, f"TrainConfig.{name} has no description (its --help)"


def test_data_describes_a_source(tmp_path, capsys):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    assert main(["data", str(archive)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_images"] == 100 and summary["classes"][0] == "airplane"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "0"], "invalid lr=0.0: must be greater than 0"),
        (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["--split", "1.2"], "invalid split=1.2: must be less than 1"),
        (["--optimizer", "adagrad"], "argument --optimizer: invalid choice: 'adagrad'"),
        (["--protocol", "cv"], "argument --protocol: invalid choice: 'cv'"),
        (["--model", "resnet999"], "unknown model 'resnet999'; valid models: alexnet"),
        (["--device", "cuda:7"], "device 'cuda:7' does not exist"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--data", "/no/such/folder"], "data path does not exist: /no/such/folder"),
        (["--batch-size", "500"], "batch size 500 is larger than the training split (108 images)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(bars, args, message, capsys, private_cache):
    argv = ["train", "--width", "0.0625", "--max-epochs", "1", "--quiet"]
    if "--data" not in args:
        argv += ["--data", str(bars)]
    assert main([*argv, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnsweep: error: ")
    assert message in err


def test_errors_exit_non_zero_from_a_real_process(tmp_path):
    done = run_cli("train", "--data", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"cnnsweep: error: data path does not exist: {tmp_path / 'missing'}"
    ]
    assert done.stdout == ""


def test_version():
    assert run_cli("--version").stdout.startswith("cnnsweep ")
