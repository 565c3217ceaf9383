"""`mtrank compare --data DIR --models A,B,... --out REPORT_DIR [--runs R] [--epochs E]`

Trains every architecture in `--models` on the same train/val/test split of DIR, R times each
(seeds `seed`, `seed + 1`, ...; the same seeds for every variant), and writes to REPORT_DIR:

- `report.json`: per model and output (ctr, cvr, ctcvr): AUC mean with its 95% interval over seeds
  (R = 1: DeLong's interval on the test set), GAUC, logloss, calibration, ECE; pairwise DeLong
  tests between variants with p-values; parameter counts, training time; for gated models the mean
  gate weight per expert per task, overall and by user activity tercile, gate entropy and
  expert-collapse warnings;
- `roc_TASK.png`, `calibration_TASK.png` (all variants), `gates_MODEL.png` (gated models);
- `report.html`: the tables, with the PNGs beside it (relative links).

`--config FILE` is a training config shared by every variant (see `training/compare/config.py`,
`CompareConfig`, for `hparams_by_model`). The LAST stdout line is a JSON summary: the best model
per output by mean AUC. Statistics and plots live in the `training/compare/` package.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

from ranker.errors import MtrankError
from training.commands import flags
from training.html_report import Cell, num, p_value, page, row, table, with_interval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, help="directory with schema.yaml and the splits"
    )
    parser.add_argument(
        "--models",
        required=True,
        metavar="A,B,...",
        help="variants to compare: architectures, each optionally +strategy, e.g. mmoe,mmoe+pcgrad,ple",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR")
    parser.add_argument("--runs", type=int, default=3, help="seeds per model (default 3)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (overrides the config)")
    parser.add_argument(
        "--batch-size",
        type=flags.batch_size,
        help="batch size, or 'auto' (from the training rows; overrides the config)",
    )
    parser.add_argument("--seed", type=int, help="first seed (overrides the config; default 0)")
    parser.add_argument(
        "--config", type=Path, help="YAML training config shared by all models (hparams_by_model)"
    )
    parser.add_argument(
        "--level", type=float, default=0.95, help="confidence level of intervals (0.95)"
    )
    parser.add_argument(
        "--export", type=Path, metavar="MODELS", help="keep every run's SavedModel here"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from training.compare.config import CompareConfig

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.runs < 1:
        raise MtrankError(f"--runs must be >= 1, got {args.runs}")
    if not 0.5 <= args.level < 1.0:
        raise MtrankError(f"--level must be in [0.5, 1), got {args.level}")
    if not args.data.is_dir():
        raise MtrankError(f"--data {args.data} is not a directory")
    if args.out.exists() and not args.out.is_dir():
        raise MtrankError(f"--out {args.out} is a file, not a directory")
    # --epochs, --batch-size and --seed are checked against the config's own bounds
    config = CompareConfig.load_compare(args.config).with_overrides(
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed
    )

    from training.compare.comparison import compare
    from training.evaluation import json_safe

    report = compare(
        args.data,
        models,
        args.out,
        config,
        runs=args.runs,
        level=args.level,
        export_dir=args.export,
        verbose=not args.quiet,
    )
    report = json_safe(report)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "report.html").write_text(render_html(report))
    summary = {
        output: {
            "best": best,
            "auc": report["models"][best]["tasks"][output]["auc"]["mean"],
        }
        for output, best in report["best"].items()
    }
    print(json.dumps({"out": str(args.out), "best": summary, "warnings": len(report["warnings"])}))
    return 0


# ---- HTML -------------------------------------------------------------------------------------

_MORE_STYLE = """
img { max-width: 100%; border: 1px solid #eee; margin: 4px; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
.warn { background: #fff6e5; border-left: 4px solid #e0a100; padding: 0.4em 1em; }
"""


def render_html(report: dict[str, Any]) -> str:
    inputs = report["inputs"]
    level = f"{round(inputs['level'] * 100)}%"
    models = inputs["models"]
    body = [
        f"<p class='muted'>data: {html.escape(inputs['data'])}; models: "
        f"{html.escape(', '.join(models))}; runs per model: {inputs['runs']} (seeds "
        f"{', '.join(map(str, inputs['seeds']))}); max epochs: {inputs['epochs']}; "
        f"test rows: {inputs['test_rows']}</p>",
        _verdict(report),
        "<h2>Models</h2>",
        _models_table(report, level),
    ]
    for output in report["best"]:
        body.append(f"<h2>{html.escape(output.upper())}</h2>")
        body.append(_metrics_table(report, output, level))
        body.append(_pairwise_table(report, output, level))
        plots = [report["plots"][kind].get(output) for kind in ("roc", "calibration")]
        body.append(
            "<div class='plots'>"
            + "".join(_img(p, f"{output} plot") for p in plots if p)
            + "</div>"
        )
    if report["plots"].get("balancing"):
        body.append("<h2>Task balancing</h2>")
        body.append(
            "<p class='muted'>Per epoch (first run of each variant): the cosine of each pair of "
            "task gradients on the shared parameters, and each objective's mean coefficient.</p>"
        )
        body.append(_img(report["plots"]["balancing"], "task balancing per epoch"))
    body.append(_gates_section(report))
    return page("mtrank compare", body, report["notes"], more_style=_MORE_STYLE)


def _img(name: str, alt: str) -> str:
    return f"<img src='{html.escape(name)}' alt='{html.escape(alt)}'>"


def _interval(cell: dict[str, Any], digits: int = 4) -> str:
    if cell["low"] is None or cell["high"] is None:
        return num(cell["mean"], digits)
    return with_interval(
        num(cell["mean"], digits), num(cell["low"], digits), num(cell["high"], digits)
    )


def _verdict(report: dict[str, Any]) -> str:
    lines = []
    for output, best in report["best"].items():
        auc = report["models"][best]["tasks"][output]["auc"]
        tests = [t for t in report["pairwise"][output] if best in (t["a"], t["b"])]
        wins = [t for t in tests if t["better"] == best]
        lines.append(
            f"{html.escape(output.upper())}: best mean AUC <b>{html.escape(best)}</b> "
            f"{_interval(auc)}; significantly better (DeLong) than {len(wins)} of "
            f"{len(tests)} other model(s)."
        )
    return "<p class='verdict'>" + "<br>".join(lines) + "</p>"


def _models_table(report: dict[str, Any], level: str) -> str:
    headers = ["model", "trainable parameters", f"training seconds per run [{level}]", "epochs run"]
    rows = [
        row(
            html.escape(name),
            f"{model['params']:,}",
            _interval(model["train_seconds"], 1),
            ", ".join(map(str, model["epochs_run"])),
        )
        for name, model in report["models"].items()
    ]
    return table(headers, rows)


def _metrics_table(report: dict[str, Any], output: str, level: str) -> str:
    headers = ["model", f"AUC [{level}]", "AUC per seed", "GAUC", "logloss", "calibration", "ECE"]
    headers += ["rows", "positives"]
    rows = []
    for name, model in report["models"].items():
        m = model["tasks"][output]
        rows.append(
            row(
                html.escape(name),
                _interval(m["auc"]),
                Cell(", ".join(num(v) for v in m["auc"]["runs"]), css="muted"),
                _interval(m["gauc"]),
                _interval(m["logloss"]),
                _interval(m["calibration"], 3),
                _interval(m["ece"], 5),
                m["count"],
                m["positives"],
                css="good" if report["best"][output] == name else None,
            )
        )
    oracle = (report.get("oracle") or {}).get(output)
    if oracle is not None:
        oracle_name = "oracle (generator's true probabilities)"
        rows.append(row(oracle_name, num(oracle), Cell(colspan=7), css="muted"))
    return table(headers, rows)


def _pairwise_table(report: dict[str, Any], output: str, level: str) -> str:
    tests = report["pairwise"][output]
    if not tests:
        return ""
    headers = ["A vs B", "AUC A", "AUC B", "A - B", "z", "p-value (seed-averaged)", "p per seed"]
    headers.append(f"better at {level}")
    rows = [
        row(
            f"{html.escape(t['a'])} vs {html.escape(t['b'])}",
            num(t["auc_a"]),
            num(t["auc_b"]),
            num(t["difference"]),
            num(t["z"], 2),
            p_value(t["p_value"]),
            Cell(", ".join(p_value(p) for p in t["p_values_by_seed"]), css="muted"),
            html.escape(t["better"] or "neither"),
        )
        for t in tests
    ]
    return table(headers, rows)


def _gates_section(report: dict[str, Any]) -> str:
    parts = ["<h2>What the gates learned</h2>"]
    segments = report["segments"]
    if segments:
        ranges = "; ".join(
            f"{name}: activity {num(s['range'][0], 2)} to {num(s['range'][1], 2)} "
            f"({s['rows']} rows)"
            for name, s in segments["segments"].items()
        )
        parts.append(f"<p class='muted'>Segments ({html.escape(segments['how'])}): {ranges}</p>")
    if report["warnings"]:
        parts.append("<div class='warn'><b>Expert-collapse warnings</b><ul>")
        parts += [f"<li>{html.escape(w)}</li>" for w in report["warnings"]]
        parts.append("</ul></div>")
    gated = False
    for name, model in report["models"].items():
        gates = model["gates"]
        if not gates:
            continue
        gated = True
        shown = gates["runs"][0]
        parts.append(
            f"<h3>{html.escape(name)} <span class='muted'>(seed {shown['seed']})</span></h3>"
        )
        if name in report["plots"]["gates"]:
            parts.append(_img(report["plots"]["gates"][name], f"{name} gate weights"))
        rows = []
        for key, gate in shown["gates"].items():
            weights = ", ".join(f"{e} {num(w, 3)}" for e, w in gate["weights"].items())
            rows.append(
                row(html.escape(key), html.escape(weights), num(gate["entropy_normalized"], 3))
            )
        parts.append(table(["gate", "mean weight per expert", "entropy / log E"], rows))
    if not gated:
        parts.append(
            "<p class='muted'>No gated model (omoe, mmoe, cgc, ple) in this comparison.</p>"
        )
    return "\n".join(parts)
