"""Which labels of a shown item count: delayed conversions inside the attribution window.

A task conditioned on another label (`cvr`: label `conversion`, `condition: click`) is observed
only after that label's event, and a conversion is credited to a click only if it happened within
the attribution window after it (last-touch attribution with a lookback window, as ad platforms
report conversions; the delayed-feedback setting of Chapelle, "Modeling Delayed Feedback in
Display Advertising", KDD 2014). So a conditioned label counts only if

    0 <= its event time - its condition's event time <= window,

each event time being what the feedback logged (`conversion_time`, `time`) or, if nothing, the
exposure's time; with several events (a click logged twice), a conditioned label counts if one of
its events is within the window after one of its condition's. A conditioned label that is set
while its condition is not (a conversion without a click) or falls outside the window is 0 in the
dataset, and counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ranker.errors import MtrankError
from ranker.schema import Task
from training.logs.feedback import Feedback
from training.logs.skips import Skips

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([smhd]?)$")
DEFAULT_WINDOW = "7d"


def parse_window(text: str) -> float:
    """Seconds of an attribution window written `30s`, `15m`, `12h`, `7d` or bare seconds."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise MtrankError(
            f"--attribution-window: expected a duration like 30s, 15m, 12h, 7d or a number of "
            f"seconds, got {text!r}"
        )
    return float(found.group(1)) * UNITS[found.group(2) or "s"]


def declare_reasons(tasks: Sequence[Task], skips: Skips) -> None:
    """The per-label skip reasons of the schema's conditioned tasks."""
    for task in tasks:
        if task.condition is not None:
            skips.declare(
                f"{task.label}_without_{task.condition}",
                f"{task.label} set where {task.condition} is not; counted as 0",
            )
            skips.declare(
                f"{task.label}_outside_window",
                f"{task.label} outside the attribution window after its {task.condition}; "
                "counted as 0",
            )


def attributed_labels(
    tasks: Sequence[Task], feedback: Feedback, shown_at: float, window: float, skips: Skips
) -> dict[str, float]:
    """Every task label's value for one shown item: 0 where the feedback has none, conditioned
    labels only inside the window after their condition. Call `declare_reasons` first."""
    by_label: dict[str, Task] = {}
    for task in tasks:
        by_label.setdefault(task.label, task)
    numbers = feedback.numbers()
    labels: dict[str, float] = {}

    def value(label: str) -> float:
        if label in labels:
            return labels[label]
        task = by_label[label]
        if label in feedback.values and label not in numbers:
            raise MtrankError(f"{feedback.where}: {label!r} must be a number")
        raw = numbers.get(label, 0.0)
        if task.type == "binary" and raw not in (0.0, 1.0):
            given = feedback.values[label]
            raise MtrankError(f"{feedback.where}: {label!r} must be 0 or 1, got {given!r}")
        if not math.isfinite(raw):
            raise MtrankError(f"{feedback.where}: {label!r} must be a finite number")
        labels[label] = raw  # provisional, so that a cycle of conditions ends
        condition = task.condition
        if condition is None or raw == 0.0:
            return raw
        if value(condition) == 0.0:
            skips.count(f"{label}_without_{condition}")
            labels[label] = 0.0
            return 0.0
        events = feedback.times.get(label) or [shown_at]
        causes = feedback.times.get(condition) or [shown_at]
        if not any(0.0 <= event - cause <= window for event in events for cause in causes):
            skips.count(f"{label}_outside_window")
            labels[label] = 0.0
        return labels[label]

    for label in by_label:
        value(label)
    return labels
