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

`--config FILE` is a training config shared by every variant (see `training/compare.py`,
`CompareConfig`, for `hparams_by_model`). The LAST stdout line is a JSON summary: the best model
per output by mean AUC. Statistics and plots live in `training/compare.py`.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

from ranker.errors import MtrankError
from training.commands.ab_report import _STYLE, _num, _p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, help="directory with schema.yaml and the splits"
    )
    parser.add_argument(
        "--models", required=True, metavar="A,B,...", help="architectures to compare, e.g. mmoe,ple"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR")
    parser.add_argument("--runs", type=int, default=3, help="seeds per model (default 3)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (overrides the config)")
    parser.add_argument("--batch-size", type=int, help="batch size (overrides the config)")
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
    from training.compare import CompareConfig

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.runs < 1:
        raise MtrankError(f"--runs must be >= 1, got {args.runs}")
    if not 0.5 <= args.level < 1.0:
        raise MtrankError(f"--level must be in [0.5, 1), got {args.level}")
    for flag, value in (("epochs", args.epochs), ("batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise MtrankError(f"--{flag} must be >= 1, got {value}")
    if args.seed is not None and args.seed < 0:
        raise MtrankError(f"--seed must be >= 0, got {args.seed}")
    if not args.data.is_dir():
        raise MtrankError(f"--data {args.data} is not a directory")
    if args.out.exists() and not args.out.is_dir():
        raise MtrankError(f"--out {args.out} is a file, not a directory")
    config = CompareConfig.load_compare(args.config)
    updates = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    config = config.model_copy(update={k: v for k, v in updates.items() if v is not None})

    from training.compare import compare
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
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mtrank compare</title>",
        f"<style>{_STYLE}{_MORE_STYLE}</style></head><body><h1>mtrank compare</h1>",
        f"<p class='muted'>data: {html.escape(inputs['data'])}; models: "
        f"{html.escape(', '.join(models))}; runs per model: {inputs['runs']} (seeds "
        f"{', '.join(map(str, inputs['seeds']))}); max epochs: {inputs['epochs']}; "
        f"test rows: {inputs['test_rows']}</p>",
        _verdict(report),
        "<h2>Models</h2>",
        _models_table(report, level),
    ]
    for output in report["best"]:
        parts.append(f"<h2>{html.escape(output.upper())}</h2>")
        parts.append(_metrics_table(report, output, level))
        parts.append(_pairwise_table(report, output, level))
        plots = [report["plots"][kind].get(output) for kind in ("roc", "calibration")]
        parts.append(
            "<div class='plots'>"
            + "".join(_img(p, f"{output} plot") for p in plots if p)
            + "</div>"
        )
    parts.append(_gates_section(report))
    parts.append("<h2>Notes</h2><ul>")
    parts += [f"<li>{html.escape(note)}</li>" for note in report["notes"]]
    parts.append("</ul></body></html>\n")
    return "\n".join(parts)


def _img(name: str, alt: str) -> str:
    return f"<img src='{html.escape(name)}' alt='{html.escape(alt)}'>"


def _interval(cell: dict[str, Any], digits: int = 4) -> str:
    if cell["low"] is None or cell["high"] is None:
        return _num(cell["mean"], digits)
    return (
        f"{_num(cell['mean'], digits)} <span class='muted'>[{_num(cell['low'], digits)}, "
        f"{_num(cell['high'], digits)}]</span>"
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
    rows = [
        "<table><tr><th>model</th><th>trainable parameters</th>"
        f"<th>training seconds per run [{level}]</th><th>epochs run</th></tr>"
    ]
    for name, model in report["models"].items():
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{model['params']:,}</td>"
            f"<td>{_interval(model['train_seconds'], 1)}</td>"
            f"<td>{', '.join(map(str, model['epochs_run']))}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _metrics_table(report: dict[str, Any], output: str, level: str) -> str:
    rows = [
        f"<table><tr><th>model</th><th>AUC [{level}]</th><th>AUC per seed</th>"
        "<th>GAUC</th><th>logloss</th><th>calibration</th><th>ECE</th><th>rows</th>"
        "<th>positives</th></tr>"
    ]
    for name, model in report["models"].items():
        m = model["tasks"][output]
        seeds = ", ".join(_num(v) for v in m["auc"]["runs"])
        css = " class='good'" if report["best"][output] == name else ""
        rows.append(
            f"<tr{css}><td>{html.escape(name)}</td><td>{_interval(m['auc'])}</td>"
            f"<td class='muted'>{seeds}</td><td>{_interval(m['gauc'])}</td>"
            f"<td>{_interval(m['logloss'])}</td><td>{_interval(m['calibration'], 3)}</td>"
            f"<td>{_interval(m['ece'], 5)}</td><td>{m['count']}</td><td>{m['positives']}</td></tr>"
        )
    oracle = (report.get("oracle") or {}).get(output)
    if oracle is not None:
        rows.append(
            f"<tr class='muted'><td>oracle (generator's true probabilities)</td>"
            f"<td>{_num(oracle)}</td><td colspan='7'></td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _pairwise_table(report: dict[str, Any], output: str, level: str) -> str:
    tests = report["pairwise"][output]
    if not tests:
        return ""
    rows = [
        "<table><tr><th>A vs B</th><th>AUC A</th><th>AUC B</th><th>A - B</th><th>z</th>"
        f"<th>p-value (seed-averaged)</th><th>p per seed</th><th>better at {level}</th></tr>"
    ]
    for t in tests:
        per_seed = ", ".join(_p(p) for p in t["p_values_by_seed"])
        rows.append(
            f"<tr><td>{html.escape(t['a'])} vs {html.escape(t['b'])}</td>"
            f"<td>{_num(t['auc_a'])}</td><td>{_num(t['auc_b'])}</td>"
            f"<td>{_num(t['difference'])}</td><td>{_num(t['z'], 2)}</td><td>{_p(t['p_value'])}</td>"
            f"<td class='muted'>{per_seed}</td><td>{html.escape(t['better'] or 'neither')}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _gates_section(report: dict[str, Any]) -> str:
    parts = ["<h2>What the gates learned</h2>"]
    segments = report["segments"]
    if segments:
        ranges = "; ".join(
            f"{name}: activity {_num(s['range'][0], 2)} to {_num(s['range'][1], 2)} "
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
        rows = [
            "<table><tr><th>gate</th><th>mean weight per expert</th><th>entropy / log E</th></tr>"
        ]
        for key, gate in shown["gates"].items():
            weights = ", ".join(f"{e} {_num(w, 3)}" for e, w in gate["weights"].items())
            rows.append(
                f"<tr><td>{html.escape(key)}</td><td>{html.escape(weights)}</td>"
                f"<td>{_num(gate['entropy_normalized'], 3)}</td></tr>"
            )
        rows.append("</table>")
        parts.append("\n".join(rows))
    if not gated:
        parts.append(
            "<p class='muted'>No gated model (omoe, mmoe, cgc, ple) in this comparison.</p>"
        )
    return "\n".join(parts)
