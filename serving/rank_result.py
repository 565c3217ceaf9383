"""`RankResult`: one scored `/v1/rank` request, as the response, the exposure log and the shadow
models read it (made by `serving.ranking.Ranker`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_store.online_features import OnlineFeatures
from serving.batcher import Batch, Value
from serving.model_router import Route
from serving.policies import SCORE, Policy
from serving.servable import Servable


@dataclass(frozen=True)
class RankResult:
    """The request (ids, raw context), where it went (`route`: model, variant, shadows), what
    the store returned (`found`), the batch the serving model was called with and its scores,
    and the ranking policy's fused `score` and the rows it returned (`order`)."""

    request_id: str
    user_id: str
    item_ids: Sequence[str]
    raw_context: Mapping[str, Any] | None
    route: Route
    found: OnlineFeatures
    context: dict[str, Value]  # typed by the serving model's schema, defaults filled in
    missing_context: list[str]  # the context features the request left out (defaulted)
    scores: dict[str, np.ndarray]  # output -> 1-D float32 scores, one per candidate
    batch: Batch  # the serving model's input arrays (a reference, not a copy): feature logs
    policy: Policy | None = None
    score: np.ndarray | None = None  # the policy's fused value per candidate (float64)
    order: np.ndarray | None = None  # the returned candidates, best first (top_k); None: all

    @property
    def servable(self) -> Servable:
        return self.route.servable

    @property
    def degraded(self) -> bool:
        """True when the store could not be read and every candidate got default features."""
        return self.found.degraded

    @property
    def columns(self) -> list[str]:
        """The score columns of a row: the model's outputs, then `score` with a policy."""
        outputs = self.servable.outputs
        return outputs if self.score is None else [*outputs, SCORE]

    def returned_ids(self) -> Sequence[str]:
        """The item ids of the response's rows, in its order."""
        if self.order is None:
            return self.item_ids
        return [self.item_ids[i] for i in self.order.tolist()]

    def returned_scores(self) -> dict[str, np.ndarray]:
        """Every column of `columns` for the response's rows, in its order."""
        columns = dict(self.scores)
        if self.score is not None:
            columns[SCORE] = self.score
        return {name: take(values, self.order) for name, values in columns.items()}

    def head(self) -> dict[str, Any]:
        """The response's fields before its score rows (CONTRACT section 4)."""
        return {
            "request_id": self.request_id,
            "model": self.servable.name,
            "version": self.servable.model_version,
            "variant": self.route.variant,
            "experiment": self.route.experiment,
            "policy": None if self.policy is None else self.policy.name,
            "missing": {
                "user": self.found.missing_user,
                "items": self.found.missing_items,
                "context": self.missing_context,
            },
            "degraded": self.degraded,
        }


def take(values: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """The rows `order` of `values` (all of them, as they are, for None)."""
    return values if order is None else values[order]
