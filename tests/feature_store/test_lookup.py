"""A lookup without I/O: keys to fetch in request order, cached rows skipped, replies decoded."""

from __future__ import annotations

from feature_store.cache import EntityCache, EntityCacheConfig
from feature_store.codec import Layout, encode_row
from feature_store.lookup import Lookup

LAYOUT = Layout(user=("age",), item=("price", "category"))


def _cache(version: int = 3) -> EntityCache:
    cache = EntityCache(EntityCacheConfig(100))
    cache.reset(version)
    return cache


def test_keys_are_the_user_then_the_items_in_request_order() -> None:
    lookup = Lookup("u1", ["i2", "i1", "i2"])
    assert lookup.keys("ns", 3) == [
        b"ns:v3:user:u1",
        b"ns:v3:item:i2",
        b"ns:v3:item:i1",
        b"ns:v3:item:i2",
    ]


def test_replies_are_decoded_in_place_with_none_where_absent() -> None:
    lookup = Lookup("u1", ["i1", "i2"])
    keys = lookup.keys("ns", 3)
    blobs = [encode_row({"age": 1.0}, LAYOUT.user), None, encode_row({"price": 2.0}, LAYOUT.item)]
    found = lookup.finish(3, LAYOUT, keys, blobs)
    assert (found.user_values, found.item_values) == ([1.0], [None, [2.0, None]])
    assert found.user == {"age": 1.0}
    assert found.items == [None, {"price": 2.0}]
    assert found.missing_items == ["i1"]


def test_cached_rows_are_not_fetched_and_fetched_rows_are_cached() -> None:
    users, items = _cache(), _cache()
    users.put(3, "u1", [1.0])
    items.put(3, "i2", None)  # known absent
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    assert keys == [b"ns:v3:item:i1"]
    found = lookup.finish(3, LAYOUT, keys, [encode_row({"price": 5.0}, LAYOUT.item)])
    assert (found.user, found.items) == ({"age": 1.0}, [{"price": 5.0}, None])
    again = Lookup("u1", ["i1", "i2"], user_cache=users, item_cache=items)
    assert again.complete
    assert again.finish(3, LAYOUT, [], []).items == [{"price": 5.0}, None]


def test_with_a_user_cache_only_every_item_is_fetched_and_the_user_once() -> None:
    users = _cache()
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users)
    keys = lookup.keys("ns", 3)
    assert keys == [b"ns:v3:user:u1", b"ns:v3:item:i1", b"ns:v3:item:i2"]
    blobs = [encode_row({"age": 1.0}, LAYOUT.user), None, encode_row({}, LAYOUT.item)]
    found = lookup.finish(3, LAYOUT, keys, blobs)
    assert (found.user_values, found.item_values) == ([1.0], [None, [None, None]])
    again = Lookup("u1", ["i2"], user_cache=users)
    assert again.keys("ns", 3) == [b"ns:v3:item:i2"]
    assert again.finish(3, LAYOUT, [b"ns:v3:item:i2"], [None]).user == {"age": 1.0}


def test_a_user_known_absent_is_not_fetched_again() -> None:
    users = _cache()
    first = Lookup("u9", [], user_cache=users)
    first.finish(3, LAYOUT, first.keys("ns", 3), [None])
    again = Lookup("u9", ["i1"], user_cache=users)
    assert again.keys("ns", 3) == [b"ns:v3:item:i1"]
    assert again.finish(3, LAYOUT, [b"ns:v3:item:i1"], [None]).missing_user


def test_no_live_version_means_every_row_is_absent() -> None:
    found = Lookup("u1", ["i1"]).finish(None, Layout(), [], [])
    assert found.missing_user
    assert found.missing_items == ["i1"]
    assert not found.degraded
