"""`mtrank train --data DIR --model NAME --out MODELS`: train, evaluate on test, export a version.

The LAST stdout line is one JSON object:
{"model": NAME, "version": V, "path": "...", "test": {TASK: {"auc": .., "logloss": .., ...}}}
The test figures are the exported (calibrated) scores'; each binary output's `raw` holds its raw
score's ece, calibration, auc and logloss. Progress and per-epoch metrics go to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.commands import flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="directory with schema.yaml and train/val/test splits",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="architecture: a registered name (mmoe, ple, esmm, ...; README lists them all)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="models directory; the export goes to OUT/NAME/VERSION/",
    )
    parser.add_argument(
        "--epochs", type=int, help="the most epochs; early stopping may end sooner (default 20)"
    )
    parser.add_argument(
        "--batch-size",
        type=flags.batch_size,
        help="global batch size, or 'auto' (the default: from the training rows, 128 to 4096)",
    )
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument(
        "--config", type=Path, help="YAML training config (hparams, optimizer, early stopping, ...)"
    )
    parser.add_argument(
        "--name", help="export name (default: the architecture), e.g. to keep two ESMM bases apart"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="finish a run that trained but failed in evaluation or export, without training "
        "again; or continue a killed run from its last finished epoch",
    )
    parser.add_argument(
        "--mixed-precision", action="store_true", help="mixed_float16 on GPU, mixed_bfloat16 on CPU"
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="MODELS/NAME[/VERSION]",
        help="start from this export's weights (same architecture, hyperparameters and features; "
        "tasks may be added: their towers start fresh)",
    )
    parser.add_argument(
        "--negative-sampling-rate",
        type=float,
        metavar="R",
        help="train.parquet kept the root task's negatives (click=0 rows for ctr) with "
        "probability R, 0 < R <= 1 (val and test did not); the export corrects that task's score "
        "(default 1: not sampled)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from ranker.errors import ConfigError
    from training.config import TrainConfig

    config = TrainConfig.load(args.config).with_overrides(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        mixed_precision=True if args.mixed_precision else None,
        negative_sampling_rate=args.negative_sampling_rate,
    )
    if not (args.data / "schema.yaml").exists():
        raise ConfigError(
            f"{args.data}: no schema.yaml (run `mtrank synth --out {args.data}` to make data)"
        )

    from training.trainer import train

    result = train(
        args.data,
        args.model,
        args.out,
        config,
        name=args.name,
        resume=args.resume,
        verbose=not args.quiet,
        init_from=args.init_from,
    )
    from training.evaluation import json_safe

    summary = {
        "model": result.name,
        "version": result.version,
        "path": str(result.path.resolve()),
        "test": json_safe(result.test),
    }
    if result.warm_start is not None:
        # the old tasks' test figures before (the export's) beside the new ones
        summary["init_from"] = {
            "path": str(result.warm_start.source),
            "test_before": json_safe(result.warm_start.test_before),
        }
    print(json.dumps(summary))
    return 0
