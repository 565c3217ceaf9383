"""The in-process cache in front of Redis: a bounded LRU with a TTL, per entity kind.

Serving reads one user and hundreds of candidate items per request; a user who sends several
requests in a row, or an item that is a candidate in most requests, need not be fetched every
time. A cached row is the entity's stored value itself, the record bytes Redis returned (as
`records.Record.encode` wrote them), not a decoded row: a lookup decodes its cached and fetched
values together in one `records.Record.decode` call, so a hit saves the key and the bytes on the
wire, not the decode. Bytes are one object the garbage collector does not
track, where a decoded row is a list of ~20 values (strings, floats, lists): hundreds of those
entering the cache per lookup and surviving there kept the collector's older generations growing
and being scanned. A cached None means "the store has no row" (new users are common). Rows are
tagged with the table version they were read from: `reset(version)` on a version flip drops them
all, and rows read from an older version are never put back afterwards. A value is only put after
it decoded as a record of its version, so a cached value never fails to decode.

Whether a cache pays is measured in `benchmarks/store_latency.py` (numbers in
docs/feature_store.md). 1 user + 500 items, 5,000-row item cache, idle 2-core machine, p50 / p99
ms (two runs, redis-server 6.2 and 7.0): for uniform candidates (25% item hits) the item cache
costs 2.69 / 5.07 and 3.36 / 9.27 against 2.08 / 4.20 and 2.22 / 4.82 without it: a miss pays a
`get` and a `put` per item, and a hit saves only its bytes on the wire, decoding records being
almost free. For Zipf candidates (84% hits) it gave 1.05 / 2.03 against 1.44 / 2.94 in one run and
1.87 / 4.20 against 1.87 / 5.98 in the other. So `CacheConfig()` caches users only (one row per request, no
measurable cost) and leaves items to Redis; pass an item `EntityCacheConfig` to turn it on for
traffic whose hit ratio makes it pay, or to spare Redis. Rows only change when a version flips,
which clears the caches; the TTL bounds how long a row written with `--ttl` can outlive its
expiry in Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

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
    item: EntityCacheConfig | None = None  # off: it pays only for skewed candidates (above)

    @classmethod
    def off(cls) -> CacheConfig:
        return cls(user=None, item=None)


class Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()
"""What `EntityCache.get` returns when it holds nothing (or nothing fresh) for an id."""


class EntityCache:
    """A bounded LRU of stored values (record bytes, or None: known absent) with a TTL, for one
    table version."""

    def __init__(
        self, config: EntityCacheConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.version: int | None = None
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._now = clock

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups since creation (0.0 before the first lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def get(self, entity_id: str) -> bytes | Missing | None:
        """The cached value of `entity_id` (None: the store has none), or MISSING."""
        entry = self._rows.get(entity_id)
        if entry is None or entry[0] < self._now():
            self.misses += 1
            return MISSING
        self._rows.move_to_end(entity_id)
        self.hits += 1
        return entry[1]

    def put(self, version: int, entity_id: str, blob: bytes | None) -> None:
        """Remember `blob`, the value of `entity_id` read from `version` and decoded as its record
        there; ignored unless `version` is the cache's version."""
        if version != self.version:
            return
        self._rows[entity_id] = (self._now() + self.config.ttl_s, blob)
        self._rows.move_to_end(entity_id)
        if len(self._rows) > self.config.max_size:
            self._rows.popitem(last=False)

    def reset(self, version: int | None) -> None:
        """Forget every row: the store now serves `version`."""
        self._rows.clear()
        self.version = version
