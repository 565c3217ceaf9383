"""Flag types the `mtrank` subcommands share."""

from __future__ import annotations

import argparse


def batch_size(text: str) -> int | str:
    """`--batch-size`: a number (its bounds are the config's) or 'auto' (from the training rows)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
