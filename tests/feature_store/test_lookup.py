"""A lookup without I/O: keys to fetch in request order, cached values skipped, all decoded once."""

from __future__ import annotations

import pytest

from feature_store.cache import MISSING, EntityCache, EntityCacheConfig
from feature_store.codec import Layout, encode_row
from feature_store.errors import CorruptValue
from feature_store.lookup import Lookup

LAYOUT = Layout(user=("age",), item=("price", "category"))
USER = encode_row({"age": 1.0}, LAYOUT.user)


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
    users.put(3, "u1", USER)
    items.put(3, "i2", None)  # known absent
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    assert keys == [b"ns:v3:item:i1"]
    blob = encode_row({"price": 5.0}, LAYOUT.item)
    found = lookup.finish(3, LAYOUT, keys, [blob])
    assert (found.user, found.items) == ({"age": 1.0}, [{"price": 5.0}, None])
    assert items.get("i1") == blob  # the stored bytes, not the decoded row
    again = Lookup("u1", ["i1", "i2"], user_cache=users, item_cache=items)
    assert again.complete
    assert again.finish(3, LAYOUT, [], []).items == [{"price": 5.0}, None]


def test_cached_and_fetched_values_are_decoded_alike_in_request_order() -> None:
    users, items = _cache(), _cache()
    blobs = {
        f"i{n}": encode_row({"price": float(n), "category": f"c{n}"}, LAYOUT.item) for n in range(5)
    }
    first = Lookup("u1", ["i0", "i1", "i2"], user_cache=users, item_cache=items)
    keys = first.keys("ns", 3)
    fetched = first.finish(3, LAYOUT, keys, [USER, blobs["i0"], None, blobs["i2"]])
    assert (users.get("u1"), items.get("i1"), items.get("i2")) == (USER, None, blobs["i2"])
    # i3 and i4 are fetched, between and after cached ones
    mixed = Lookup("u1", ["i2", "i3", "i1", "i0", "i4"], user_cache=users, item_cache=items)
    keys = mixed.keys("ns", 3)
    assert keys == [b"ns:v3:item:i3", b"ns:v3:item:i4"]
    found = mixed.finish(3, LAYOUT, keys, [blobs["i3"], blobs["i4"]])
    assert found.user_values == fetched.user_values == [1.0]
    assert found.item_values == [[2.0, "c2"], [3.0, "c3"], None, [0.0, "c0"], [4.0, "c4"]]
    assert fetched.item_values == [[0.0, "c0"], None, [2.0, "c2"]]
    cached = Lookup("u1", ["i0", "i1", "i2", "i3"], user_cache=users, item_cache=items)
    assert cached.complete
    assert cached.finish(3, LAYOUT, [], []).item_values == [
        [0.0, "c0"],
        None,
        [2.0, "c2"],
        [3.0, "c3"],
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [(b"\xc1", "is not msgpack"), (encode_row({"age": 2.0}, LAYOUT.user), "is a list of 1")],
)
def test_a_corrupt_fetched_value_among_cached_ones_is_named_and_nothing_is_cached(
    bad: bytes, message: str
) -> None:
    users, items = _cache(), _cache()
    users.put(3, "u1", USER)
    items.put(3, "i1", encode_row({"price": 1.0}, LAYOUT.item))
    items.put(3, "i3", None)
    lookup = Lookup("u1", ["i1", "i2", "i3", "i4"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    with pytest.raises(CorruptValue, match=f"'ns:v3:item:i4' {message}"):
        lookup.finish(3, LAYOUT, keys, [encode_row({}, LAYOUT.item), bad])
    assert items.get("i2") is MISSING and items.get("i4") is MISSING


def test_a_corrupt_user_is_named_when_fetched_with_cached_items() -> None:
    users, items = _cache(), _cache()
    items.put(3, "i1", encode_row({"price": 1.0}, LAYOUT.item))
    lookup = Lookup("u1", ["i1"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    with pytest.raises(CorruptValue, match="'ns:v3:user:u1' is not msgpack"):
        lookup.finish(3, LAYOUT, keys, [b"\xc1"])


def test_a_corrupt_item_is_named_when_the_user_is_cached_and_items_are_not() -> None:
    users = _cache()
    users.put(3, "u1", USER)
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users)
    keys = lookup.keys("ns", 3)
    with pytest.raises(CorruptValue, match="'ns:v3:item:i2' is a list of 1"):
        lookup.finish(3, LAYOUT, keys, [None, USER])


def test_values_read_from_a_version_that_flipped_meanwhile_are_not_cached() -> None:
    users, items = _cache(3), _cache(3)
    lookup = Lookup("u1", ["i1"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    users.reset(4)  # another lookup saw version 4 go live
    items.reset(4)
    found = lookup.finish(3, LAYOUT, keys, [USER, encode_row({"price": 1.0}, LAYOUT.item)])
    assert found.items == [{"price": 1.0}]
    assert (users.get("u1"), items.get("i1"), len(users), len(items)) == (MISSING, MISSING, 0, 0)


def test_with_a_user_cache_only_every_item_is_fetched_and_the_user_once() -> None:
    users = _cache()
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users)
    keys = lookup.keys("ns", 3)
    assert keys == [b"ns:v3:user:u1", b"ns:v3:item:i1", b"ns:v3:item:i2"]
    blobs = [encode_row({"age": 1.0}, LAYOUT.user), None, encode_row({}, LAYOUT.item)]
    found = lookup.finish(3, LAYOUT, keys, blobs)
    assert (found.user_values, found.item_values) == ([1.0], [None, [None, None]])
    assert users.get("u1") == blobs[0]
    again = Lookup("u1", ["i2"], user_cache=users)
    assert again.keys("ns", 3) == [b"ns:v3:item:i2"]
    assert again.finish(3, LAYOUT, [b"ns:v3:item:i2"], [None]).user == {"age": 1.0}


def test_a_user_known_absent_is_not_fetched_again() -> None:
    users = _cache()
    first = Lookup("u9", [], user_cache=users)
    first.finish(3, LAYOUT, first.keys("ns", 3), [None])
    assert users.get("u9") is None  # cached as absent
    users.hits = 0
    again = Lookup("u9", ["i1"], user_cache=users)
    assert again.keys("ns", 3) == [b"ns:v3:item:i1"]
    assert again.finish(3, LAYOUT, [b"ns:v3:item:i1"], [None]).missing_user
    assert users.hits == 1


def test_no_live_version_means_every_row_is_absent() -> None:
    found = Lookup("u1", ["i1"]).finish(None, Layout(), [], [])
    assert found.missing_user
    assert found.missing_items == ["i1"]
    assert not found.degraded
