"""The in-process cache: bounded LRU of stored bytes, TTL, hit ratio, old versions never served."""

from __future__ import annotations

import pytest

from feature_store.cache import MISSING, CacheConfig, EntityCache, EntityCacheConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cache(max_size: int = 2, ttl_s: float = 10.0, clock: Clock | None = None) -> EntityCache:
    cache = EntityCache(EntityCacheConfig(max_size, ttl_s), clock=clock or Clock())
    cache.reset(1)
    return cache


def test_hits_misses_and_absent_rows_are_remembered() -> None:
    cache = _cache()
    assert cache.get("u1") is MISSING
    cache.put(1, "u1", b"\x91\x03")
    cache.put(1, "u2", None)  # known absent: also a hit
    assert cache.get("u1") == b"\x91\x03"
    assert cache.get("u2") is None
    assert (cache.hits, cache.misses, cache.hit_ratio) == (2, 1, pytest.approx(2 / 3))


def test_the_least_recently_used_row_is_evicted() -> None:
    cache = _cache(max_size=2)
    cache.put(1, "a", b"a")
    cache.put(1, "b", b"b")
    assert cache.get("a") == b"a"  # a is now more recent than b
    cache.put(1, "c", b"c")
    assert len(cache) == 2
    assert cache.get("b") is MISSING
    assert cache.get("a") == b"a"
    assert cache.get("c") == b"c"


def test_rows_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = _cache(ttl_s=10.0, clock=clock)
    cache.put(1, "a", b"v1")
    clock.now += 9.9
    assert cache.get("a") == b"v1"
    clock.now += 0.2
    assert cache.get("a") is MISSING


def test_a_reset_forgets_everything_and_rows_read_from_the_old_version_are_not_kept() -> None:
    cache = _cache()
    cache.put(1, "a", b"v1")
    cache.reset(2)
    assert cache.get("a") is MISSING
    cache.put(1, "a", b"v1")  # a lookup that started before the flip finishes late
    assert cache.get("a") is MISSING
    cache.put(2, "a", b"v2")
    assert cache.get("a") == b"v2"


def test_the_default_caches_users_only_and_bad_sizes_are_refused() -> None:
    config = CacheConfig()
    assert config.user is not None and config.item is None
    assert CacheConfig.off() == CacheConfig(user=None, item=None)
    with pytest.raises(ValueError, match="max_size must be >= 1, got 0"):
        EntityCacheConfig(0)
    with pytest.raises(ValueError, match="ttl_s must be > 0, got -1"):
        EntityCacheConfig(10, ttl_s=-1)
