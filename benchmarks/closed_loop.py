"""The closed loop: serve model A, log what it served, train model B on those logs, A/B them.

    .venv/bin/python benchmarks/closed_loop.py [--rows 200000] [--requests 20000]
        [--eval-requests 10000] [--model mmoe] [--workdir DIR]

1. `mtrank synth` (the world and its true model), `mtrank train` model A on its click log,
   `mtrank features materialize`;
2. `mtrank serve` A with `--log-features` and `mtrank simulate --requests N`: the synthetic users
   see A's top 10 of 100 candidates and click and convert by the generator's true model;
3. `mtrank logs to-dataset` joins the served features with that feedback (time split) and
   `mtrank train` fits model B on it, twice: `b` on the served features as they are, and `b_pos`
   with `--from-feedback position` (the position each item was shown at, which A's requests did
   not send: they were scored as if at the top);
4. `mtrank serve` A, B and B_pos as variants of one experiment and `mtrank simulate` again with
   another seed; `mtrank ab-report` compares them.

The generator's truth is the check: every shown item's true P(click) x P(conversion | click) is
known, so each variant's true CTCVR (the mean over its shown items) is measured without the noise
of the drawn clicks. Prints a table and writes benchmarks/results/closed_loop.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from serve_latency import clean_env, server

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def mtrank(*args: object) -> dict[str, Any]:
    """Run `mtrank ARGS`; its last stdout line as JSON (stderr passes through as progress)."""
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", *map(str, args)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"mtrank {args[0]} failed (exit {done.returncode})")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def simulate(port: int, data: Path, requests: int, feedback: Path, seed: int) -> dict[str, Any]:
    return mtrank(
        "simulate", "--url", f"http://127.0.0.1:{port}", "--data", data,
        "--requests", requests, "--top-k", 10, "--feedback", feedback, "--seed", seed,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic click log rows")
    parser.add_argument("--requests", type=int, default=20_000, help="requests served by A")
    parser.add_argument("--eval-requests", type=int, default=15_000, help="requests of the A/B")
    parser.add_argument("--model", default="mmoe", help="the architecture of A and B")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS / "closed_loop.json")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="mtrank-loop-"))
    if work.exists() and args.workdir is not None:
        shutil.rmtree(work)
    data, models, logs = work / "data", work / "models", work / "logs"
    logs.mkdir(parents=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "machine": platform.node(),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }

    # 1. the world, model A, the store
    mtrank("synth", "--out", data, "--rows", args.rows, "--seed", args.seed)
    trained = {"a": mtrank("train", "--data", data, "--model", args.model, "--out", models,
                           "--name", "a", "--quiet")}  # fmt: skip
    mtrank("features", "materialize", "--data", data)
    store = ["--store", str(data)]

    # 2. A serves; its served features and the users' feedback are logged
    served = logs / "round1-exposures.jsonl"
    only_a = work / "models_a"
    shutil.copytree(models / "a", only_a / "a")
    with server(only_a, [*store, "--log-features", "--exposure-log", str(served)]) as port:
        report["round1"] = simulate(port, data, args.requests, logs / "round1-feedback.jsonl", 1)

    # 3. the logs become training data; B learns from them
    exposures = sorted(str(p) for p in logs.glob("round1-exposures.jsonl*"))
    datasets = {}
    for name, extra in (("b", []), ("b_pos", ["--from-feedback", "position"])):
        out = work / f"logdata_{name}"
        datasets[name] = mtrank(
            "logs", "to-dataset", "--exposures", *exposures,
            "--feedback", logs / "round1-feedback.jsonl", "--out", out, *extra,
        )  # fmt: skip
        trained[name] = mtrank(
            "train", "--data", out, "--model", args.model, "--out", models, "--name", name,
            "--quiet",
        )  # fmt: skip
    report["datasets"] = datasets
    report["trained"] = trained

    # 4. A against B and B_pos, on the same users, in one experiment
    experiments = work / "experiments.yaml"
    experiments.write_text(
        "experiments:\n"
        "  - name: loop\n"
        "    salt: closed-loop\n"
        "    variants:\n"
        "      - {name: a, model: a, weight: 34}\n"
        "      - {name: b, model: b, weight: 33}\n"
        "      - {name: b_pos, model: b_pos, weight: 33}\n"
    )
    round2 = logs / "round2-exposures.jsonl"
    feedback2 = logs / "round2-feedback.jsonl"
    flags = ["--experiments", str(experiments), "--exposure-log", str(round2)]
    with server(models, [*store, *flags]) as port:
        report["round2"] = simulate(port, data, args.eval_requests, feedback2, 2)
    mtrank(
        "ab-report", "--exposures", round2, "--feedback", feedback2, "--out", work / "report",
    )  # fmt: skip
    ab = json.loads((work / "report" / "report.json").read_text())
    report["ab_report"] = ab
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print_table(report)
    print(f"wrote {args.out} ({report['seconds']:.0f} s); workdir {work}", file=sys.stderr)
    return 0


def print_table(report: dict[str, Any]) -> None:
    """Per variant of round 2: impressions, observed CTR and CTCVR, the true CTCVR; B's data."""
    print(f"round 1 (A alone): {json.dumps(report['round1'].get('variants', {}))}")
    for name, summary in report["datasets"].items():
        print(f"dataset {name}: {json.dumps(summary)}")
    print(f"{'variant':<8} {'impressions':>11} {'ctr':>8} {'ctcvr':>8} {'true ctcvr':>10}")
    for name, tally in sorted(report["round2"]["variants"].items()):
        print(
            f"{name:<8} {tally['impressions']:>11} {tally['ctr']:>8.4f} {tally['ctcvr']:>8.5f} "
            f"{tally['true_ctcvr']:>10.5f}"
        )


if __name__ == "__main__":
    sys.exit(main())
