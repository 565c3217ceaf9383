"""`mtrank evaluate --model PATH --data FILE`: score a labelled file with an exported model.

PATH is MODELS/NAME (its latest version) or MODELS/NAME/VERSION. The LAST stdout line is
{TASK: {"auc": .., "logloss": .., "count": .., "ece": .., "calibration": .., ...}, ...}: the
served scores' figures. An export with raw scores (`raw_<name>`, before calibration: every one
`mtrank train` makes since 2026-12-06) adds per binary output `"raw": {"ece", "calibration",
"auc", "logloss"}`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ranker.contract import METADATA_FILE, ExportMetadata
from ranker.errors import MtrankError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="MODELS/NAME (latest version) or MODELS/NAME/VERSION",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="a Parquet (or CSV, TFRecord) file with the schema's features and labels",
    )
    parser.add_argument("--batch-size", type=int, default=8192)


def run(args: argparse.Namespace) -> int:
    from training.export import resolve_version

    version = resolve_version(args.model)
    if not (version / METADATA_FILE).exists():
        raise MtrankError(f"{version}: no {METADATA_FILE} beside saved_model.pb")
    if not args.data.exists():
        raise MtrankError(f"{args.data}: no such file")
    metadata = ExportMetadata.read(version)  # one line naming the file and field if it is bad

    import ranker  # noqa: F401  (Keras 2 mode before TensorFlow loads)
    from training.evaluation import evaluate_file, json_safe, saved_model_scorer

    schema = metadata.model_schema(source=str(version / METADATA_FILE))
    results, _ = evaluate_file(
        schema, saved_model_scorer(version, raw=True), args.data, batch_size=args.batch_size
    )
    print(json.dumps(json_safe(results)))
    return 0
