"""The service's view of the online store: one lookup per request, defaults when it is down.

`FeatureSource.fetch(user_id, item_ids)` reads the user and all candidates in one round trip
through `feature_store`'s async store. When the store raises (`StoreUnavailable` within its
timeout, or any other failure) or none is configured, the request is scored with every stored
feature at its default and marked degraded: the service answers 200, never an error, and no
request waits longer than the store's timeout (the store also stops trying for `retry_after`
seconds after a failure, so an outage costs one timeout per second, not one per request).

Which store: `--redis URL` (or MTRANK_REDIS_URL), else `--store DIR` (the embedded store that
`mtrank features materialize --data DIR` filled), else none: every request is degraded, which
`/readyz` and the startup log say.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal

from feature_store import (
    CacheConfig,
    EntityCacheConfig,
    OnlineFeatures,
    OnlineStore,
    open_async_store,
)
from serving.metrics import Metrics
from serving.settings import Settings

log = logging.getLogger("mtrank.serving")

StoreState = Literal["ok", "unreachable", "disabled"]


class FeatureSource:
    """Fetches online features, degrading to defaults; `store` None means no store configured."""

    def __init__(self, store: OnlineStore | None, description: str, metrics: Metrics) -> None:
        self.store = store
        self.description = description
        self.metrics = metrics
        self._failing = False

    @classmethod
    def open(cls, settings: Settings, metrics: Metrics) -> FeatureSource:
        """The store the settings name (starting the embedded server if it is one), or none."""
        if settings.redis_url is None and settings.store_dir is None:
            log.warning(
                "no online store configured (--redis or --store): every request is scored with "
                "default user and item features and marked degraded"
            )
            return cls(None, "none", metrics)
        store = open_async_store(
            url=settings.redis_url,
            data_dir=settings.store_dir,
            namespace=settings.store_namespace,
            timeout=settings.store_timeout_s,
            retry_after=settings.store_retry_after_s,
            cache=_cache(settings),
        )
        log.info("online store: %s (timeout %.0f ms)", store.description, store.timeout * 1e3)
        return cls(store, store.description, metrics)

    async def fetch(self, user_id: str, item_ids: Sequence[str]) -> OnlineFeatures:
        """The stored features of the user and candidates, or all defaults (degraded)."""
        if self.store is None:
            return OnlineFeatures.unavailable(user_id, item_ids)
        started = time.perf_counter()
        try:
            found = await self.store.get_online_features(user_id, item_ids)
        except Exception as err:  # StoreUnavailable, CorruptValue, or worse: never fail the request
            self.metrics.store_errors.inc()
            if not self._failing:  # one line per outage, not one per request
                log.warning("online store failed, serving defaults until it answers: %s", err)
                self._failing = True
            return OnlineFeatures.unavailable(user_id, item_ids)
        self.metrics.store_latency.observe(time.perf_counter() - started)
        if self._failing:
            log.warning("online store answers again")
            self._failing = False
        return found

    async def state(self) -> StoreState:
        """Whether the store answers a ping now (the readiness probe)."""
        if self.store is None:
            return "disabled"
        try:
            await self.store.ping()
        except Exception:
            return "unreachable"
        return "ok"

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()


def _cache(settings: Settings) -> CacheConfig:
    if settings.store_cache_rows == 0:
        return CacheConfig.off()
    entity = EntityCacheConfig(settings.store_cache_rows, settings.store_cache_ttl_s)
    return CacheConfig(user=entity, item=entity if settings.store_cache_items else None)
