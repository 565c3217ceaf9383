"""`mtrank ab-report --exposures FILE [FILE ...] --feedback FILE --out REPORT_DIR [--control NAME]`

Joins the service's exposure log (`mtrank serve --exposure-log`; several files for a rotated
log, e.g. `--exposures exposures.jsonl*`; schema lines skipped) with a feedback log (`mtrank
simulate --feedback`, or real clicks in the same shape) per experiment variant, and writes
`REPORT_DIR/report.json` and a self-contained `REPORT_DIR/report.html` (tables and inline SVG
interval plots, no external files):

- per variant: its models and ranking policy (two variants that share a model and differ only
  in policy are two rows), requests, users, impressions, CTR, CVR, CTCVR with 95% Wilson
  intervals, and the true CTCVR when the feedback carries the generator's probabilities;
- lift against the control (`--control`, else the variant named `control`, else the first by
  name): difference and relative lift with intervals, two-proportion z-test p-values;
- per served task (ctr, cvr, ctcvr) and for every shadow model: AUC with its DeLong interval,
  calibration (mean score / observed rate) and ECE, on the shown items.

The statistics live in `training/ab.py`. Missing files and malformed lines are one-line errors
naming FILE:LINE. The LAST stdout line is a JSON summary: per experiment, the best variant by
CTCVR with its interval.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path
from typing import Any

from ranker.errors import MtrankError
from training.html_report import num, p_value, page, row, table, with_interval


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exposures",
        required=True,
        nargs="+",
        type=Path,
        metavar="FILE",
        help="the service's exposure log (several files: a rotated log)",
    )
    parser.add_argument(
        "--feedback", required=True, type=Path, metavar="FILE", help="clicks and conversions"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR")
    parser.add_argument("--control", metavar="NAME", help="the control variant (default: see doc)")
    parser.add_argument(
        "--level", type=float, default=0.95, help="confidence level of intervals (0.95)"
    )


def run(args: argparse.Namespace) -> int:
    from training.ab import build_report

    if not 0.5 <= args.level < 1.0:
        raise MtrankError(f"--level must be in [0.5, 1), got {args.level}")
    if args.out.exists() and not args.out.is_dir():
        raise MtrankError(f"--out {args.out} is a file, not a directory")
    report = build_report(args.exposures, args.feedback, args.control, args.level)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.html").write_text(render_html(report))
    summary = {
        name: {
            "best": section["best"]["variant"],
            "ctcvr": section["best"]["ctcvr"],
            "significant_vs_control": section["best"]["significant"],
            "true_ranking_agrees": (section["true_ranking"] or {}).get("agrees"),
        }
        for name, section in report["experiments"].items()
    }
    print(json.dumps({"out": str(args.out), "experiments": summary}))
    return 0


# ---- HTML -------------------------------------------------------------------------------------


def render_html(report: dict[str, Any]) -> str:
    level = f"{round(report['level'] * 100)}%"
    inputs = report["inputs"]
    body = [
        "<p class='muted'>"
        + ", ".join(
            f"{html.escape(k.replace('_', ' '))}: {html.escape(str(v))}" for k, v in inputs.items()
        )
        + "</p>"
    ]
    for name, section in report["experiments"].items():
        body.append(f"<h2>Experiment {html.escape(name)}</h2>")
        body.append(_verdict(section, level))
        body.append(_rates_table(section, level))
        body.append(_interval_plot(section, "ctcvr", level))
        body.append(_lift_table(section, level))
        body.append(_tasks_table(section, level))
    return page("mtrank A/B report", body, report["notes"])


def _pct(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def _interval(cell: dict[str, Any]) -> str:
    return with_interval(_pct(cell["value"]), _pct(cell["low"]), _pct(cell["high"]))


def _verdict(section: dict[str, Any], level: str) -> str:
    best = section["best"]
    ctcvr = best["ctcvr"]
    text = (
        f"Best by CTCVR: <b>{html.escape(best['variant'])}</b> at {_pct(ctcvr['value'])} "
        f"({level} interval {_pct(ctcvr['low'])} to {_pct(ctcvr['high'])})"
    )
    lift = best["lift_vs_control"]
    if best["is_control"]:
        text += "; it is the control."
    elif lift is not None:
        significance = "significant" if best["significant"] else "not significant"
        text += (
            f"; lift vs control {_signed(lift['relative'])} "
            f"[{_signed(lift['relative_low'])}, {_signed(lift['relative_high'])}], "
            f"p {'' if (lift['p_value'] or 0) < 1e-4 else '= '}{p_value(lift['p_value'])} "
            f"({significance} at {level})."
        )
    truth = section["true_ranking"]
    if truth is not None:
        agrees = "agrees" if truth["agrees"] else "does NOT agree"
        text += (
            f" The generator's true CTCVR ranks "
            f"{html.escape(' > '.join(truth['ranking']))}: {agrees} with the observed order."
        )
    return f"<p class='verdict'>{text}</p>"


def _rates_table(section: dict[str, Any], level: str) -> str:
    headers = ["variant", "models", "policy", "requests", "users", "impressions"]
    headers += [f"CTR [{level}]", f"CVR [{level}]", f"CTCVR [{level}]", "true CTCVR"]
    rows = []
    for name, variant in section["variants"].items():
        marker = " (control)" if name == section["control"] else ""
        models = ", ".join(f"{m} v{v}" for m, v in variant["models"].items())
        policies = ", ".join(f"{p} ({n})" for p, n in variant.get("policies", {}).items())
        rows.append(
            row(
                f"{html.escape(name)}{marker}",
                html.escape(models),
                html.escape(variant.get("policy") or policies or "none"),
                variant["requests"],
                variant["users"],
                variant["impressions"],
                _interval(variant["ctr"]),
                _interval(variant["cvr"]),
                _interval(variant["ctcvr"]),
                _pct(variant["true"]["ctcvr"]),
            )
        )
    return table(headers, rows)


def _lift_table(section: dict[str, Any], level: str) -> str:
    heading = (
        f"<h3>Lift against {html.escape(section['control'])} "
        f"<span class='muted'>({html.escape(section['control_rule'])})</span></h3>"
    )
    headers = ["variant", "metric", "difference", f"relative lift [{level}]", "z", "p-value"]
    rows = []
    for name, variant in section["variants"].items():
        for metric, lift in variant.get("lift", {}).items():
            p = lift["p_value"]
            css = "" if p is None or p >= 0.05 else ("good" if lift["diff"] > 0 else "bad")
            rel = [_pct(lift[k], 1) for k in ("relative", "relative_low", "relative_high")]
            rows.append(
                row(
                    html.escape(name),
                    metric.upper(),
                    _pct(lift["diff"]),
                    f"{rel[0]} [{rel[1]}, {rel[2]}]",
                    num(lift["z"], 2),
                    p_value(p),
                    css=css,
                )
            )
    return heading + "\n" + table(headers, rows)


def _tasks_table(section: dict[str, Any], level: str) -> str:
    headers = ["variant / model", "task", "rows", "positives", f"AUC [{level}]", "calibration"]
    headers.append("ECE")
    rows = []
    for name, variant in section["variants"].items():
        scorers = [(name, variant["tasks"])]
        scorers += [(f"{name} / shadow {m}", t) for m, t in variant["shadow"].items()]
        for label, tasks in scorers:
            for task, m in tasks.items():
                rows.append(
                    row(
                        html.escape(label),
                        task,
                        m["rows"],
                        m["positives"],
                        with_interval(num(m["auc"]), num(m["auc_low"]), num(m["auc_high"])),
                        num(m["calibration"], 3),
                        num(m["ece"], 5),
                    )
                )
    return "<h3>Served scores on the shown items</h3>\n" + table(headers, rows)


def _interval_plot(section: dict[str, Any], metric: str, level: str) -> str:
    """An inline SVG: each variant's rate as a dot with its interval, true rate as a cross."""
    variants = section["variants"]
    values = [
        v
        for variant in variants.values()
        for v in (variant[metric]["low"], variant[metric]["high"], variant["true"].get(metric))
        if v is not None
    ]
    if not values:
        return ""
    top = max(values) * 1.1 or 1.0
    width, left, row_h = 640, 140, 28
    height = row_h * len(variants) + 40
    scale = (width - left - 20) / top
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"role='img' aria-label='{metric} by variant'>",
        f"<text x='{left}' y='14' font-size='12'>{metric.upper()} with {level} interval "
        "(dot, bar); true rate (red cross)</text>",
    ]
    for k, (name, variant) in enumerate(variants.items()):
        y = 34 + k * row_h
        cell = variant[metric]
        out.append(f"<text x='4' y='{y + 4}' font-size='12'>{html.escape(name)}</text>")
        if cell["low"] is not None and cell["high"] is not None:
            x0, x1 = left + cell["low"] * scale, left + cell["high"] * scale
            out.append(
                f"<line x1='{x0:.1f}' y1='{y}' x2='{x1:.1f}' y2='{y}' stroke='#2a6fdb' "
                "stroke-width='2'/>"
            )
        if cell["value"] is not None:
            out.append(
                f"<circle cx='{left + cell['value'] * scale:.1f}' cy='{y}' r='4' fill='#2a6fdb'/>"
            )
        true = variant["true"].get(metric)
        if true is not None:
            x = left + true * scale
            out.append(
                f"<path d='M{x - 4:.1f},{y - 4} L{x + 4:.1f},{y + 4} M{x - 4:.1f},{y + 4} "
                f"L{x + 4:.1f},{y - 4}' stroke='#b3261e' stroke-width='2'/>"
            )
    axis_y = height - 8
    out.append(
        f"<line x1='{left}' y1='{axis_y - 6}' x2='{width - 20}' y2='{axis_y - 6}' stroke='#999'/>"
    )
    for tick in range(5):
        value = top * tick / 4
        x = left + value * scale
        out.append(
            f"<text x='{x:.1f}' y='{axis_y + 6}' font-size='10' text-anchor='middle'>"
            f"{100 * value:.2f}%</text>"
        )
    out.append("</svg>")
    return "\n".join(out)
