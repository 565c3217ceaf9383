"""`mtrank synth`: write a synthetic click/conversion log, its schema and its true model."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `mtrank synth` (CONTRACT section 2)."""
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument("--rows", type=int, default=200_000, help="impressions (default 200000)")
    parser.add_argument("--users", type=int, default=10_000, help="users (default 10000)")
    parser.add_argument("--items", type=int, default=2_000, help="items (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--relatedness",
        type=float,
        default=0.5,
        help="correlation of the click and conversion affinities, 0..1 (default 0.5)",
    )


def run(args: argparse.Namespace) -> int:
    """Generate the dataset; print a one-line JSON summary (rows per split, CTR, CVR) last."""
    from training.synth.config import SynthConfig
    from training.synth.writer import generate, quiet, stderr_progress

    config = SynthConfig(
        rows=args.rows,
        users=args.users,
        items=args.items,
        seed=args.seed,
        relatedness=args.relatedness,
    )
    config.validate()
    progress = stderr_progress if args.rows >= 500_000 else quiet  # small runs take seconds
    summary = generate(config, args.out, progress)
    print(json.dumps(summary.to_dict()))
    return 0
