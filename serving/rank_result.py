"""`RankResult`: one scored `/v1/rank` request, as the response, the exposure log and the shadow
models read it (made by `serving.ranking.Ranker`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_store.online_features import OnlineFeatures
from serving.batcher import Value
from serving.model_router import Route
from serving.servable import Servable


@dataclass(frozen=True)
class RankResult:
    """The request (ids, raw context), where it went (`route`: model, variant, shadows), what
    the store returned (`found`), the context the serving model scored under and its scores."""

    request_id: str
    user_id: str
    item_ids: Sequence[str]
    raw_context: Mapping[str, Any] | None
    route: Route
    found: OnlineFeatures
    context: dict[str, Value]  # typed by the serving model's schema, defaults filled in
    missing_context: list[str]  # the context features the request left out (defaulted)
    scores: dict[str, np.ndarray]  # output -> 1-D float32 scores, one per candidate

    @property
    def servable(self) -> Servable:
        return self.route.servable

    @property
    def degraded(self) -> bool:
        """True when the store could not be read and every candidate got default features."""
        return self.found.degraded

    def head(self) -> dict[str, Any]:
        """The response's fields before its score rows (CONTRACT section 4)."""
        return {
            "request_id": self.request_id,
            "model": self.servable.name,
            "version": self.servable.model_version,
            "variant": self.route.variant,
            "experiment": self.route.experiment,
            "missing": {
                "user": self.found.missing_user,
                "items": self.found.missing_items,
                "context": self.missing_context,
            },
            "degraded": self.degraded,
        }
