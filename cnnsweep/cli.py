"""The ``cnnsweep`` command line. Thin: it parses, calls the library, and prints.

Every user-facing problem surfaces as one line ``cnnsweep: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from cnnsweep import __version__
from cnnsweep.errors import CnnsweepError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (no usage block) like every other error here."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"cnnsweep: error: {message}\n")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model", default="alexnet", help="registered model name (default: alexnet)"
    )
    model.add_argument("--batch-norm", action="store_true", help="batch norm after each conv")
    model.add_argument("--dropout", action="store_true", help="dropout p=0.5 in the FC blocks")
    model.add_argument("--width", type=float, default=1.0, help="channel multiplier (default: 1.0)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--optimizer", default="adam", help="sgd, rmsprop or adam (default: adam)")
    optim.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    optim.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    optim.add_argument("--max-epochs", type=int, default=50, help="epoch limit (default: 50)")
    optim.add_argument("--seed", type=int, default=0, help="split, init and batch order (0)")

    protocol = parser.add_argument_group("protocol and early stopping")
    protocol.add_argument("--protocol", default="holdout", help="holdout (default) or seed")
    protocol.add_argument("--split", type=float, default=0.9, help="training fraction (0.9)")
    protocol.add_argument("--monitor", help="val_accuracy, val_loss, train_accuracy or train_loss")
    protocol.add_argument("--patience", type=int, help="epochs without improvement before stopping")
    protocol.add_argument("--min-delta", type=float, default=0.0, help="smallest improvement")
    protocol.add_argument("--augment", action="store_true", help="random crop + flip on device")
    protocol.add_argument("--normalization", default="auto", help="auto, train or report")
    protocol.add_argument("--max-train-images", type=int, help="class-balanced training subset")
    protocol.add_argument("--max-test-images", type=int, help="class-balanced test subset")

    speed = parser.add_argument_group("speed")
    speed.add_argument("--no-amp", action="store_true", help="train in fp32 (no bf16 autocast)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model")
    speed.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto)")


def _config_settings(args: argparse.Namespace) -> dict:
    settings = {
        "model": args.model,
        "batch_norm": args.batch_norm,
        "dropout": args.dropout,
        "width": args.width,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "protocol": args.protocol,
        "split": args.split,
        "monitor": args.monitor,
        "patience": args.patience,
        "min_delta": args.min_delta,
        "augment": args.augment,
        "normalization": args.normalization,
        "max_train_images": args.max_train_images,
        "max_test_images": args.max_test_images,
        "amp": not args.no_amp,
        "compile": args.compile,
    }
    return {k: v for k, v in settings.items() if v is not None}


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cnnsweep.config import make_config
    from cnnsweep.data import load_data
    from cnnsweep.devices import resolve_device
    from cnnsweep.train import train

    config = make_config(**_config_settings(args))  # fail fast, before any data is read
    device = resolve_device(args.device)
    data = load_data(args.data)

    bar = tqdm(total=0, unit="batch", leave=False, file=sys.stderr, disable=args.quiet or None)

    def on_batch(done: int, total: int) -> None:
        if done == 1:
            bar.reset(total=total)
        bar.update(1)

    def on_epoch(m) -> None:
        val = f" val_loss={m.val_loss:.4f} val_acc={m.val_accuracy:.2f}" if m.val_loss else ""
        line = (
            f"epoch {m.epoch}/{config.max_epochs} loss={m.train_loss:.4f} "
            f"acc={m.train_accuracy:.2f}{val} {m.images_per_second:.0f} img/s"
        )
        if not args.quiet:
            bar.write(line, file=sys.stderr)

    bar.set_description("train")
    try:
        result = train(config, data, device, on_epoch=on_epoch, on_batch=on_batch)
    finally:
        bar.close()
    print(result.model_dump_json(indent=2))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from cnnsweep.data import load_data

    data = load_data(args.data)
    summary = {
        "source": data.source,
        "fingerprint": data.fingerprint,
        "classes": list(data.classes),
        "channels": data.channels,
        "image_size": list(data.image_size),
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
    }
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnsweep", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"cnnsweep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train one configuration and print its result")
    train.add_argument(
        "--data",
        help="CIFAR-10 archive/folder or class-folder tree (default: "
        "download CIFAR-10 into the cache)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress output")
    _add_train_options(train)
    train.set_defaults(handler=cmd_train)

    data = commands.add_parser("data", help="load (and cache) a data set and describe it")
    data.add_argument("data", nargs="?", help="data path (default: CIFAR-10, downloaded once)")
    data.set_defaults(handler=cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return int(done.code or 0)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CnnsweepError as exc:
        print(f"cnnsweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cnnsweep: interrupted", file=sys.stderr)
        return 130
