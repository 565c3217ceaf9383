"""`mtrank logs`: the service's logs as training data.

    mtrank logs to-dataset --exposures F [F ...] --feedback F [F ...] --out DIR
        [--attribution-window D] [--split 0.8,0.1,0.1] [--model NAME] [--from-feedback NAME,...]

`to-dataset` joins the exposures that `mtrank serve --log-features` logged (every returned
item's served features) with the feedback (`mtrank simulate --feedback`, or real clicks and
conversions in that shape, several lines per item allowed), keeps a conditioned label (a
conversion) only inside `--attribution-window` (default 7d; `30s`, `15m`, `12h`, `7d` or seconds)
after its condition (the click), splits the rows by exposure time and writes
`DIR/{train,val,test}.parquet` and `DIR/schema.yaml`, which `mtrank train --data DIR` reads as
they are (`training.logs` says what each row holds). Several files per flag (a rotated log and
its older parts: `--exposures exposures.jsonl*`).

Progress goes to stderr; the LAST stdout line is a JSON summary: rows per split, requests used,
and every skipped line or item counted by reason. Malformed lines are one-line errors naming
FILE:LINE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    to_dataset = actions.add_parser(
        "to-dataset",
        help="join exposures with feedback into train/val/test Parquet and schema.yaml",
        description="Join the exposures logged by `mtrank serve --log-features` with feedback "
        "into DIR/{train,val,test}.parquet and DIR/schema.yaml for `mtrank train`.",
    )
    to_dataset.add_argument(
        "--exposures", required=True, nargs="+", type=Path, metavar="FILE", help="exposure logs"
    )
    to_dataset.add_argument(
        "--feedback", required=True, nargs="+", type=Path, metavar="FILE", help="feedback logs"
    )
    to_dataset.add_argument("--out", required=True, type=Path, metavar="DIR")
    to_dataset.add_argument(
        "--attribution-window",
        default="7d",
        metavar="D",
        help="a conversion counts this long after its click: 30s, 15m, 12h, 7d or seconds (7d)",
    )
    to_dataset.add_argument(
        "--split",
        default="0.8,0.1,0.1",
        metavar="TRAIN,VAL,TEST",
        help="fractions of the rows, by exposure time (0.8,0.1,0.1)",
    )
    to_dataset.add_argument("--model", metavar="NAME", help="keep only this model's exposures")
    to_dataset.add_argument(
        "--from-feedback",
        default="",
        metavar="NAME,...",
        help="context features taken from the feedback line (e.g. position) instead of served",
    )


def run(args: argparse.Namespace) -> int:
    from training.logs import Options, parse_split, to_dataset
    from training.logs.attribution import parse_window

    names = tuple(name.strip() for name in args.from_feedback.split(",") if name.strip())
    options = Options(
        window=parse_window(args.attribution_window),
        split=parse_split(args.split),
        model=args.model,
        from_feedback=names,
    )
    summary = to_dataset(args.exposures, args.feedback, args.out, options, _progress)
    print(json.dumps(summary))
    return 0


def _progress(line: str) -> None:
    print(f"logs to-dataset: {line}", file=sys.stderr)
