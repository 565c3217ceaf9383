"""The in-process cache in front of Redis: a bounded LRU with a TTL, per entity kind.

Serving reads one user and hundreds of candidate items per request; a user who sends several
requests in a row, or an item that is a candidate in most requests, need not be fetched and
decoded every time. A cached row is the decoded array itself, in its version's column order
(shared between requests: never mutate it); a cached None means "the store has no row" (new users
are common). Rows are tagged with the table version they were read from: `reset(version)` on a
version flip drops them all (and with them the column order they were in), and rows read from an
older version are never put back afterwards.

Whether a cache pays is measured in `benchmarks/store_latency.py` (numbers in
docs/feature_store.md). With rows stored as msgpack arrays (cheap to decode), the item cache costs
more than it saves at the tail: on a quiet machine, 1 user + 500 items, p99 26.9 ms with it against
6.8 ms without for uniform candidates (25% hits), and 7.8 ms against 5.7 ms even for Zipf candidates
(84% hits, where its p50 is 2.2 against 2.7 ms). So `CacheConfig()` caches users only (one row per
request, no measurable cost) and leaves items to Redis; pass an item `EntityCacheConfig` to turn it
on for traffic whose hit ratio makes it pay. Rows only change when a version flips, which clears the caches; the
TTL bounds how long a row written with `--ttl` can outlive its expiry in Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from feature_store.codec import Values

DEFAULT_TTL_S = 30.0


@dataclass(frozen=True)
class EntityCacheConfig:
    """How many rows of one entity kind to keep, and for how long (seconds)."""

    max_size: int
    ttl_s: float = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {self.max_size}")
        if not self.ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {self.ttl_s}")


@dataclass(frozen=True)
class CacheConfig:
    """Which entity kinds the store caches in process; None turns an entity's cache off."""

    user: EntityCacheConfig | None = field(default_factory=lambda: EntityCacheConfig(10_000))
    item: EntityCacheConfig | None = None  # off: it costs more than it saves at p99 (see above)

    @classmethod
    def off(cls) -> CacheConfig:
        return cls(user=None, item=None)


class Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()
"""What `EntityCache.get` returns when it holds nothing (or nothing fresh) for an id."""


class EntityCache:
    """A bounded LRU of decoded rows (or None: known absent) with a TTL, for one table version."""

    def __init__(
        self, config: EntityCacheConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.version: int | None = None
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[str, tuple[float, Values | None]] = OrderedDict()
        self._now = clock

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups since creation (0.0 before the first lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, entity_id: str) -> Values | Missing | None:
        """The cached row of `entity_id` (None: the store has none), or MISSING."""
        entry = self._rows.get(entity_id)
        if entry is None or entry[0] < self._now():
            self.misses += 1
            return MISSING
        self._rows.move_to_end(entity_id)
        self.hits += 1
        return entry[1]

    def put(self, version: int, entity_id: str, row: Values | None) -> None:
        """Remember `row` as read from `version`; ignored unless that is the cache's version."""
        if version != self.version:
            return
        self._rows[entity_id] = (self._now() + self.config.ttl_s, row)
        self._rows.move_to_end(entity_id)
        if len(self._rows) > self.config.max_size:
            self._rows.popitem(last=False)

    def reset(self, version: int | None) -> None:
        """Forget every row: the store now serves `version`."""
        self._rows.clear()
        self.version = version
