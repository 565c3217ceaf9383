"""Task-balancing strategies against the generator's oracle: what each buys, at what step time.

    python benchmarks/balancing.py                                   # the full grid (hours)
    python benchmarks/balancing.py --architectures mmoe --relatedness 0.9 --seeds 0
    python benchmarks/balancing.py --strategies fixed,pcgrad,uncertainty --rows 100000
    python benchmarks/balancing.py --table A.json B.json      # README's table from result files

For each relatedness of the synthetic world (`mtrank synth --relatedness`: how much the CTR and
CVR effects share) and each data seed, one `mtrank synth` world of `--rows` rows; on it, every
architecture with every strategy (`loss_weighting`), trained with `--config` (the README quality
table's tuned config by default) and measured as `benchmarks/quality.py` measures: CTR and CTCVR
AUC expected over label draws, over the oracle's (`E/oracle`), on the same test rows. Step time:
seconds per 1,000 training examples over the epochs after the first (tracing excluded), over the
same architecture's fixed-weights run on the same world.

Prints a table per world and a summary (mean over seeds of each ratio, and of the CTCVR ratio's
difference to fixed weights on the same world); writes JSON (`--out`, after every run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from quality import DEFAULT_CONFIG, RESULTS, TEST_COLUMNS, oracle, ratios

from ranker import balancing
from training.cli import main as mtrank
from training.config import TrainConfig
from training.data import read_columns
from training.trainer import train


def step_seconds(result: Any) -> float | None:
    """Seconds per 1,000 training examples, median over the epochs after the first."""
    pairs = list(zip(result.epoch_seconds, result.epoch_examples, strict=True))[1:]
    rates = [seconds / examples * 1000 for seconds, examples in pairs if examples]
    return statistics.median(rates) if rates else None


def world(rows: int, seed: int, relatedness: float) -> Path:
    data = Path(tempfile.mkdtemp(prefix="mtrank-balancing-data-"))
    flags = ["--rows", str(rows), "--seed", str(seed), "--relatedness", str(relatedness)]
    mtrank(["synth", "--out", str(data), *flags])
    return data


def run_world(
    data: Path,
    architectures: list[str],
    strategies: list[str],
    config: TrainConfig,
    results: dict[str, Any],
    save: Any,
) -> None:
    """Every architecture x strategy on one world, into `results`; `save()` after each run."""
    labels = read_columns(data / "test.parquet", TEST_COLUMNS)
    truth = oracle(labels)
    results["oracle"] = truth
    models = Path(tempfile.mkdtemp(prefix="mtrank-balancing-models-"))
    print(
        f"{'model':<24} {'CTR E/oracle':>12} {'CTCVR E/oracle':>14} {'step x fixed':>12} {'epochs':>6}"
    )
    try:
        for architecture in architectures:
            for strategy in strategies:
                name = f"{architecture}+{strategy}"
                started = time.perf_counter()
                tuned = config.model_copy(update={"loss_weighting": strategy})
                result = train(data, architecture, models, tuned, name=name, verbose=False)
                row = {
                    **ratios(labels, truth, result.test_scores, result.test),
                    "architecture": architecture,
                    "strategy": strategy,
                    "step_seconds_per_1k": step_seconds(result),
                    "epochs_run": len(result.history.get("loss", [])),
                    "seconds": time.perf_counter() - started,
                    "history": result.history,
                }
                fixed = results["models"].get(f"{architecture}+fixed")
                if fixed and fixed["step_seconds_per_1k"] and row["step_seconds_per_1k"]:
                    row["step_vs_fixed"] = row["step_seconds_per_1k"] / fixed["step_seconds_per_1k"]
                results["models"][name] = row
                print(
                    f"{name:<24} {row['ctr_expected_ratio']:>12.3f} "
                    f"{row['ctcvr_expected_ratio']:>14.3f} {row.get('step_vs_fixed', 1.0):>12.2f} "
                    f"{row['epochs_run']:>6}",
                    flush=True,
                )
                save()
                shutil.rmtree(models / name, ignore_errors=True)
    finally:
        shutil.rmtree(models, ignore_errors=True)


def summary(worlds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per relatedness and model: mean over seeds of the ratios, the CTCVR ratio's difference to
    the same architecture's fixed weights on the same world, and the step-time ratio."""
    out: dict[str, Any] = {}
    for key, result in worlds.items():
        relatedness = key.split("/")[0]
        for name, row in result["models"].items():
            fixed = result["models"].get(f"{row['architecture']}+fixed")
            cell = out.setdefault(relatedness, {}).setdefault(name, {"runs": []})
            cell["runs"].append(
                {
                    "ctr": row["ctr_expected_ratio"],
                    "ctcvr": row["ctcvr_expected_ratio"],
                    "ctcvr_vs_fixed": None
                    if fixed is None
                    else row["ctcvr_expected_ratio"] - fixed["ctcvr_expected_ratio"],
                    "step": row.get("step_vs_fixed"),
                }
            )
    for models in out.values():
        for cell in models.values():
            for metric in ("ctr", "ctcvr", "ctcvr_vs_fixed", "step"):
                values = [r[metric] for r in cell["runs"] if r[metric] is not None]
                cell[metric] = float(np.mean(values)) if values else None
            cell["seeds"] = len(cell["runs"])
    return out


def table(paths: list[Path]) -> str:
    """A markdown table of the strategies over result files (a later file's run of the same model
    on the same world replaces an earlier one's; each difference is to the fixed weights of the
    model's own file and world): per relatedness and architecture, the mean over seeds of CTR /
    CTCVR E/oracle and, in brackets, CTCVR minus fixed weights'; then the step time over fixed."""
    worlds: dict[str, dict[str, Any]] = {}
    for path in paths:
        for key, result in json.loads(path.read_text())["worlds"].items():
            for name, row in result["models"].items():
                fixed = result["models"][f"{row['architecture']}+fixed"]
                row = {
                    **row,
                    "vs_fixed": row["ctcvr_expected_ratio"] - fixed["ctcvr_expected_ratio"],
                }
                worlds.setdefault(key, {})[name] = row
    columns = sorted(
        {(k.split("/")[0], r["architecture"]) for k, w in worlds.items() for r in w.values()},
        key=lambda c: (c[1], -float(c[0])),
    )
    strategies = list(dict.fromkeys(r["strategy"] for w in worlds.values() for r in w.values()))
    head = " | ".join(f"{a}, rel. {rel}: CTR / CTCVR (vs fixed)" for rel, a in columns)
    lines = [
        f"| strategy | {head} | step time x fixed | seeds |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for strategy in strategies:
        cells, steps, seeds = [], [], set()
        for relatedness, architecture in columns:
            rows = [
                w[f"{architecture}+{strategy}"]
                for k, w in worlds.items()
                if k.split("/")[0] == relatedness and f"{architecture}+{strategy}" in w
            ]
            seeds.add(len(rows))
            if not rows:
                cells.append("-")
                continue
            steps += [r["step_vs_fixed"] for r in rows if r.get("step_vs_fixed")]
            ctr = statistics.mean(r["ctr_expected_ratio"] for r in rows)
            ctcvr = statistics.mean(r["ctcvr_expected_ratio"] for r in rows)
            vs = statistics.mean(r["vs_fixed"] for r in rows)
            cells.append(f"{ctr:.3f} / {ctcvr:.3f} ({vs:+.3f})")
        step = f"{min(steps):.2f}-{max(steps):.2f}" if steps else "1.00"
        lines.append(
            f"| {strategy} | {' | '.join(cells)} | {step} | {'/'.join(map(str, sorted(seeds)))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table", type=Path, nargs="+", help="print the table of these results")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--seeds", default="0,1,2", help="data seeds, one world each")
    parser.add_argument("--relatedness", default="0.2,0.9", help="of the CTR and CVR effects")
    parser.add_argument("--architectures", default="mmoe,ple")
    parser.add_argument("--strategies", default=",".join(balancing.names()))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=RESULTS / "balancing.json")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    strategies = args.strategies.split(",")
    for name in strategies:
        balancing.get(name)  # an unknown name fails before any data is made
    # fixed weights first: the baseline of the step time and of the differences
    strategies = ["fixed", *(name for name in strategies if name != "fixed")]
    config = TrainConfig.load(args.config)
    document: dict[str, Any] = {
        "rows": args.rows,
        "config": config.model_dump(mode="json"),
        "worlds": {},
    }

    def save() -> None:
        document["summary"] = summary(document["worlds"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2, default=float))

    for relatedness in (float(r) for r in args.relatedness.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            print(f"\n== relatedness {relatedness}, data seed {seed} ==")
            data = world(args.rows, seed, relatedness)
            results: dict[str, Any] = {"models": {}}
            document["worlds"][f"{relatedness}/{seed}"] = results
            try:
                run_world(data, args.architectures.split(","), strategies, config, results, save)
            finally:
                shutil.rmtree(data, ignore_errors=True)
    print("\nmean over seeds: E/oracle CTR, CTCVR, CTCVR minus fixed's, step time x fixed's")
    for relatedness, models in document["summary"].items():
        print(f"-- relatedness {relatedness}")
        for name, cell in models.items():
            vs = cell["ctcvr_vs_fixed"]
            print(
                f"{name:<24} {cell['ctr']:.3f} {cell['ctcvr']:.3f} "
                f"{'' if vs is None else f'{vs:+.3f}':>7} {cell['step'] or 1.0:.2f}  ({cell['seeds']} seeds)"
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
