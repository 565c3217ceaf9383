"""The `mtrank` console script: a dispatcher that imports a subcommand's module only when it runs.

Each subcommand lives in its own module with two functions:

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

Modules keep heavy imports (TensorFlow, TFRS, FastAPI) inside `run`, so `mtrank --help` and
`mtrank X --help` are instant and `mtrank serve` never loads TFRS. Errors the user can fix
(`ranker.errors.MtrankError`) print as one line, `mtrank X: error: ...`, and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from ranker.errors import MtrankError


class Subcommand(NamedTuple):
    module: str
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "synth": Subcommand("training.commands.synth", "write synthetic click/conversion logs"),
    "train": Subcommand("training.commands.train", "train an architecture and export a SavedModel"),
    "evaluate": Subcommand(
        "training.commands.evaluate", "score a Parquet file with an exported model"
    ),
    "features": Subcommand("feature_store.cli", "online feature store: materialize"),
    "serve": Subcommand("serving.cli", "serve exported models over HTTP"),
    "quickstart": Subcommand(
        "training.commands.quickstart", "synth, train, export, materialize, serve"
    ),
    "compare": Subcommand("training.commands.compare", "offline A/B comparison of architectures"),
    "simulate": Subcommand("training.commands.simulate", "play synthetic users against a service"),
    "ab-report": Subcommand(
        "training.commands.ab_report", "join exposures with feedback per variant"
    ),
    "logs": Subcommand("training.commands.logs", "served features + feedback: to-dataset"),
}


def _overview() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: mtrank SUBCOMMAND [options]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "Run `mtrank SUBCOMMAND --help` for a subcommand's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0 if argv else 2
    if argv[0] == "--version":
        from ranker import __version__

        print(f"mtrank {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        print(
            f"mtrank: error: unknown subcommand {name!r} (known: {', '.join(SUBCOMMANDS)})",
            file=sys.stderr,
        )
        return 2
    try:
        module = importlib.import_module(sub.module)
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith(sub.module):
            print(f"mtrank {name}: error: not available in this build yet", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"mtrank {name}", description=sub.summary)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except MtrankError as err:
        print(f"mtrank {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mtrank {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
