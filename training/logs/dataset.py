"""Served features + delayed feedback -> the train/val/test Parquet files `mtrank train` reads.

One row per shown item: a (request_id, item_id) that some feedback line names and that its
request returned. Its columns:

- every schema feature, as the service logged it (`mtrank serve --log-features`): the user and
  context values of the request and the item's own values; categorical as string, numeric as
  float64 holding the served float32 value exactly, sequence as list<string>;
- every task label (`click`, `conversion`, ...), attributed (`training.logs.attribution`): 0
  where the feedback has none;
- `request_id`, `item_id`, `time` (the exposure's, unix seconds), `model`, `version`,
  `served_<output>` (the served scores: `served_ctr`, ..., `served_score` for a policy's fused
  value);
- the numeric extras of the feedback (the generator's `p_click`, `p_conversion`, ...), never
  features; one whose name is taken (`position`, a context feature) gets a `feedback_` prefix.

With `--from-feedback NAME`, context feature NAME comes from the feedback line (e.g. the
position the item was shown at) instead of the served value, for position-aware training.

Rows are ordered by exposure time (ties by request_id, then by response order) and cut into
train/val/test by the fractions; each cut moves to the nearest request boundary, so the items of
one request never straddle two splits (they share a user, a context and a moment).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ranker.errors import MtrankError
from ranker.schema import Schema
from training.logs.attribution import declare_reasons
from training.logs.exposures import ExposureLogs, ServedRequest, read_exposures
from training.logs.feedback import FeedbackLogs, read_feedback_logs
from training.logs.rows import Columns
from training.logs.skips import Skips

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Options:
    window: float = 7 * 86400.0  # attribution window, seconds
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    model: str | None = None
    from_feedback: tuple[str, ...] = ()


def parse_split(text: str) -> tuple[float, float, float]:
    """`--split TRAIN,VAL,TEST`: three positive fractions that sum to 1."""
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0.0 < p < 1.0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise MtrankError(
            f"--split: expected three positive fractions summing to 1, like 0.8,0.1,0.1; "
            f"got {text!r}"
        )
    return parts[0], parts[1], parts[2]


def to_dataset(
    exposures: Sequence[Path],
    feedback: Sequence[Path],
    out: Path,
    options: Options = Options(),
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Join, attribute, split and write `out/{train,val,test}.parquet` and `out/schema.yaml`;
    the summary (rows per split, requests used, skips by reason)."""
    if out.exists() and not out.is_dir():
        raise MtrankError(f"--out {out} is a file, not a directory")
    skips = Skips()
    feedback_logs = read_feedback_logs(feedback, skips, progress)
    logs = read_exposures(exposures, feedback_logs.by_request, options.model, skips, progress)
    requests = _described(logs, exposures, skips)
    if not requests:
        raise MtrankError(
            f"no row to write: no exposure with features has feedback ({logs.lines} exposure "
            f"lines, {feedback_logs.items} feedback items; skipped: {skips.to_dict()})"
        )
    schema = _one_feature_set(requests, logs.schemas)
    _check_from_feedback(options.from_feedback, schema, skips)
    declare_reasons(schema.tasks, skips)
    columns = Columns(schema, options.from_feedback, options.window)
    used: set[str] = set()
    for request in requests:
        if columns.add_request(request, feedback_logs.by_request[request.request_id], skips):
            used.add(request.request_id)
    _count_unmatched_feedback(feedback_logs, logs, {r.request_id for r in requests}, skips)
    if columns.rows == 0:
        raise MtrankError(
            f"no row to write: no feedback item matches a usable exposure ({logs.lines} exposure "
            f"lines, {feedback_logs.items} feedback items; skipped: {skips.to_dict()})"
        )
    table = columns.table()
    bounds = split_bounds(columns.request_starts, columns.rows, options.split)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, (start, stop) in zip(SPLITS, itertools.pairwise(bounds), strict=True):
        pq.write_table(table.slice(start, stop - start), out / f"{name}.parquet")
        rows[name] = stop - start
    schema.dump(out / "schema.yaml")
    for line in skips.lines():
        progress(f"skipped {line}")
    progress(f"wrote {out}: " + ", ".join(f"{n} {name} rows" for name, n in rows.items()))
    return {
        "out": str(out),
        "rows": rows,
        "requests": len(used),
        "models": _models(requests, used),
        "positives": columns.positives(),
        "attribution_window_s": options.window,
        "exposures": {
            "lines": logs.lines,
            "schema_lines": logs.schema_lines,
            "with_features": logs.with_features,
            "without_feedback": logs.without_feedback,
        },
        "feedback": {"lines": feedback_logs.lines, "items": feedback_logs.items},
        "skipped": skips.to_dict(),
    }


# ---- which exposures, which schema ---------------------------------------------------------------


def _described(logs: ExposureLogs, paths: Sequence[Path], skips: Skips) -> list[ServedRequest]:
    """The kept exposures that a schema line types, by time (ties by request_id)."""
    if logs.with_features == 0:
        files = ", ".join(map(str, paths))
        if not logs.seen:
            raise MtrankError(f"--exposures {files}: no exposure line")
        raise MtrankError(
            f"--exposures {files}: no exposure line has features: serve with --log-features"
        )
    requests = []
    for request in logs.requests.values():
        if (request.model, request.version) in logs.schemas:
            requests.append(request)
        else:
            skips.count("exposure_without_schema")
    if logs.requests and not requests:
        first = next(iter(logs.requests.values()))
        raise MtrankError(
            f"{first.where}: no schema line describes model {first.model!r} version "
            f"{first.version!r} (--log-features writes one before its first exposure in each file)"
        )
    return sorted(requests, key=lambda r: (r.time, r.request_id))


def _one_feature_set(
    requests: Sequence[ServedRequest], schemas: dict[tuple[str, str], Schema]
) -> Schema:
    """The schema to write: the latest exposure's; every used schema must have its features."""
    last = requests[-1]
    schema = schemas[(last.model, last.version)]
    for key in dict.fromkeys((r.model, r.version) for r in requests):
        other = schemas[key]
        if other.features != schema.features:
            mine = {f.name: f for f in schema.features}
            theirs = {f.name: f for f in other.features}
            differing = sorted(
                n for n in mine.keys() | theirs.keys() if mine.get(n) != theirs.get(n)
            )
            raise MtrankError(
                f"exposures of {key[0]} version {key[1]} and {last.model} version {last.version} "
                f"were served with different features ({', '.join(differing)}); keep one model's "
                "with --model NAME"
            )
    return schema


def _check_from_feedback(names: Sequence[str], schema: Schema, skips: Skips) -> None:
    context = [f.name for f in schema.entity_features("context")]
    for name in names:
        if name not in context:
            raise MtrankError(
                f"--from-feedback {name}: not a context feature of the logged schema "
                f"(context features: {', '.join(context) or 'none'})"
            )
        skips.declare(f"feedback_without_{name}", f"feedback items without a {name!r} field")


def _count_unmatched_feedback(
    feedback: FeedbackLogs, logs: ExposureLogs, described: set[str], skips: Skips
) -> None:
    """Feedback items of requests never logged, or skipped before their rows were made (the
    rows' own skips are counted as they are made)."""
    for request_id, items in feedback.by_request.items():
        if request_id not in logs.seen:
            skips.count("feedback_unknown_request", len(items))
        elif request_id not in described:
            skips.count("feedback_of_skipped_exposure", len(items))


def _models(requests: Sequence[ServedRequest], used: set[str]) -> dict[str, list[str]]:
    versions: dict[str, set[str]] = {}
    for request in requests:
        if request.request_id in used:
            versions.setdefault(request.model, set()).add(request.version)
    return {model: sorted(v, key=lambda s: (len(s), s)) for model, v in sorted(versions.items())}


# ---- the time split -----------------------------------------------------------------------------


def split_bounds(request_starts: Sequence[int], rows: int, fractions: Sequence[float]) -> list[int]:
    """[0, end of train, end of val, rows]: each cut at the request boundary nearest to its
    fraction of the rows; a MtrankError if a split would be empty."""
    boundaries = [*request_starts, rows]
    cuts = [0]
    total = 0.0
    for fraction in fractions[:-1]:
        total += fraction
        target = total * rows
        i = bisect.bisect_left(boundaries, target)
        nearest = [boundaries[j] for j in (i - 1, i) if 0 <= j < len(boundaries)]
        cuts.append(max(cuts[-1], min(nearest, key=lambda b: (abs(b - target), b))))
    cuts.append(rows)
    sizes = [b - a for a, b in itertools.pairwise(cuts)]
    if min(sizes) == 0:
        split = ",".join(f"{f:g}" for f in fractions)
        raise MtrankError(
            f"{rows} rows from {len(request_starts)} requests are too few to split {split} by "
            f"request: train/val/test would have {'/'.join(map(str, sizes))} rows"
        )
    return cuts
