"""One exposure: the fields of a line of the exposure log, and the line (format: `serving.exposure`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ranker.schema import Schema
from serving.exposure.features import served_features


@dataclass
class Exposure:
    """One scored request, as it will be written: numpy columns over every candidate (in
    request order) until then, and `order`, the rows the response returned (None: all), so that
    choosing and encoding the returned rows happens in the writer thread, off the request path."""

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
    scores: Mapping[str, np.ndarray]  # the outputs, and "score" (the policy's) if one applied
    degraded: bool
    policy: str | None = None
    order: np.ndarray | None = None
    batch: Mapping[str, np.ndarray] | None = None  # the serving model's inputs (--log-features)
    schema: Schema | None = None  # the serving model's schema (with `batch`)
    shadow: dict[str, dict[str, Any]] = field(default_factory=dict)
    shadow_skipped: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(model, version): what a schema line describes."""
        return self.model, self.version

    def to_json(self) -> str:
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        order = self.order
        item_ids = self.item_ids if order is None else [self.item_ids[i] for i in order.tolist()]
        entry: dict[str, Any] = {
            "request_id": self.request_id,
            "time": stamp.replace("+00:00", "Z"),
            "user_id": self.user_id,
            "experiment": self.experiment,
            "variant": self.variant,
            "bucket": self.bucket,
            "model": self.model,
            "version": self.version,
            "policy": self.policy,
            "candidates": len(self.item_ids),
            "item_ids": list(item_ids),
            "context": dict(self.context),
            "scores": _columns(self.scores, order),
            "shadow": {
                name: {k: _columns(v, order) if k == "scores" else v for k, v in shadow.items()}
                for name, shadow in self.shadow.items()
            },
            "degraded": self.degraded,
        }
        if self.batch is not None and self.schema is not None:
            entry["features"] = served_features(self.schema, self.batch, order)
        if self.shadow_skipped:
            entry["shadow_skipped"] = True
        return json.dumps(entry, allow_nan=False)

    def schema_line(self) -> str | None:
        """The schema line that goes before this model version's first exposure in a file
        (only when features are logged): `{"kind": "schema", "model", "version", "schema"}`."""
        if self.batch is None or self.schema is None:
            return None
        line = {
            "kind": "schema",
            "model": self.model,
            "version": self.version,
            "schema": self.schema.to_dict(),
        }
        return json.dumps(line, allow_nan=False)


def _columns(scores: Mapping[str, np.ndarray], order: np.ndarray | None) -> dict[str, list[float]]:
    """Score columns (their `order` rows) as lists of floats rounded to 8 decimals (the
    response's precision)."""
    return {
        name: np.round(
            np.asarray(v if order is None else np.asarray(v)[order], np.float64), 8
        ).tolist()
        for name, v in scores.items()
    }
