"""Feedback logs read and merged: one `Feedback` per (request_id, item_id).

A feedback line (CONTRACT section 2, `mtrank simulate`) is keyed by `request_id` and `item_id`
and carries labels (`click`, `conversion`, any task's label), optional extras (`position`, the
generator's `p_click` and `p_conversion`) and optional times: `time` (when the line's event
happened) and `LABEL_time` (when that label's event happened, e.g. `conversion_time`; defaults
to `time`), each ISO-8601 UTC or unix seconds.

Event-style logs write several lines for one shown item (an impression, later a click, later a
conversion); they are merged: a numeric field keeps its largest value (a label is 1 if any line
says 1) and the event times of the lines that have that value (a click logged twice keeps both);
any other field keeps its first value. A line repeating an earlier line of the same item field
for field is counted as a duplicate and left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ranker.errors import MtrankError
from training.ab import parse_time, read_json_lines
from training.logs.skips import Skips

IDS = ("request_id", "item_id")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_time_field(name: str) -> bool:
    return name == "time" or name.endswith("_time")


@dataclass
class Feedback:
    """Everything the feedback logs say about one shown item, merged over its lines."""

    where: str  # FILE:LINE of its first line
    values: dict[str, Any] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)  # field -> event times (unix s)
    seen: set[int] = field(default_factory=set)  # hashes of the lines merged in

    def merge(self, row: dict[str, Any], where: str) -> None:
        """Merge one line's fields (numbers: the largest value and its event times; others: the
        first value)."""
        shown_at = parse_time(row["time"], f"{where}: 'time'") if "time" in row else None
        for name, value in row.items():
            if name in IDS or is_time_field(name):
                continue
            if isinstance(value, bool):
                value = int(value)
            if not is_number(value):
                self.values.setdefault(name, value)
                continue
            key = f"{name}_time"
            at = parse_time(row[key], f"{where}: {key!r}") if key in row else shown_at
            current = self.values.get(name)
            if not is_number(current) or value > current:
                self.values[name] = value
                self.times.pop(name, None)
            elif value != current:
                continue
            if at is not None:
                self.times.setdefault(name, []).append(at)

    def numbers(self) -> dict[str, float]:
        """The numeric fields (labels and extras) as floats."""
        return {k: float(v) for k, v in self.values.items() if is_number(v)}


@dataclass
class FeedbackLogs:
    by_request: dict[str, dict[str, Feedback]]
    lines: int = 0

    @property
    def items(self) -> int:
        return sum(len(items) for items in self.by_request.values())


def read_feedback_logs(
    paths: Sequence[Path], skips: Skips, progress: Callable[[str], None]
) -> FeedbackLogs:
    """Every feedback line of `paths`, merged per (request_id, item_id).

    A line without a request_id or item_id, or repeating an earlier line, is counted in `skips`;
    a line that is not a JSON object, ids that are not strings and times that do not parse are
    errors naming FILE:LINE.
    """
    logs = FeedbackLogs(by_request={})
    for path in paths:
        before = logs.lines
        for number, row in read_json_lines(path, "--feedback"):
            where = f"{path}:{number}"
            logs.lines += 1
            if any(key not in row for key in IDS):
                skips.count("feedback_without_ids")
                continue
            request_id, item_id = row["request_id"], row["item_id"]
            if not isinstance(request_id, str) or not isinstance(item_id, str):
                raise MtrankError(f"{where}: 'request_id' and 'item_id' must be strings")
            items = logs.by_request.setdefault(request_id, {})
            feedback = items.get(item_id)
            if feedback is None:
                feedback = items[item_id] = Feedback(where)
            line_hash = hash(json.dumps(row, sort_keys=True))
            if line_hash in feedback.seen:
                skips.count("duplicate_feedback")
                continue
            feedback.seen.add(line_hash)
            feedback.merge(row, where)
        progress(f"{path}: {logs.lines - before} feedback lines")
    return logs
