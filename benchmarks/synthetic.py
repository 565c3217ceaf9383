"""The synthetic click log a benchmark runs on: `--data DIR`, or a fresh `mtrank synth` of
`--rows` rows with `--seed` in a temporary directory."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from training.cli import main as mtrank


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="a `mtrank synth` directory (default: a new one)")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=0)


def data_dir(args: argparse.Namespace) -> Path:
    """`--data`, or a new synthetic log of `--rows` rows and `--seed`."""
    return args.data if args.data is not None else synth(args.rows, args.seed)


def synth(rows: int, seed: int) -> Path:
    """A new `mtrank synth --rows ROWS --seed SEED` directory under the system's temp folder."""
    data = Path(tempfile.mkdtemp(prefix="mtrank-synth-"))
    mtrank(["synth", "--out", str(data), "--rows", str(rows), "--seed", str(seed)])
    return data
