"""One exposure: the fields of a line of the exposure log, and the line (format: `serving.exposure`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np


@dataclass
class Exposure:
    """One scored request, as it will be written (numpy score columns until then)."""

    request_id: str
    time: float
    user_id: str
    experiment: str | None
    variant: str | None
    bucket: int | None
    model: str
    version: str
    item_ids: Sequence[str]
    context: Mapping[str, Any]
    scores: Mapping[str, np.ndarray]
    degraded: bool
    shadow: dict[str, dict[str, Any]] = field(default_factory=dict)
    shadow_skipped: bool = False

    def to_json(self) -> str:
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "request_id": self.request_id,
            "time": stamp.replace("+00:00", "Z"),
            "user_id": self.user_id,
            "experiment": self.experiment,
            "variant": self.variant,
            "bucket": self.bucket,
            "model": self.model,
            "version": self.version,
            "item_ids": list(self.item_ids),
            "context": dict(self.context),
            "scores": _columns(self.scores),
            "shadow": {
                name: {k: _columns(v) if k == "scores" else v for k, v in shadow.items()}
                for name, shadow in self.shadow.items()
            },
            "degraded": self.degraded,
        }
        if self.shadow_skipped:
            entry["shadow_skipped"] = True
        return json.dumps(entry, allow_nan=False)


def _columns(scores: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
    """Score columns as lists of floats rounded to 8 decimals (the response's precision)."""
    return {name: np.round(np.asarray(v, np.float64), 8).tolist() for name, v in scores.items()}
