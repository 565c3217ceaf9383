"""A lookup without I/O: keys to fetch in request order, cached values skipped, items decoded once."""

from __future__ import annotations

import pytest

from feature_store.cache import MISSING, EntityCache, EntityCacheConfig
from feature_store.errors import CorruptValue
from feature_store.lookup import Lookup
from feature_store.records import Column, Layout, Record, Row

LAYOUT = Layout(
    user=Record((Column("age", "numeric"),)),
    item=Record((Column("price", "numeric"), Column("category", "categorical", width=2))),
)


def user(row: Row) -> bytes:
    return LAYOUT.user.encode([row])[0]


def item(row: Row) -> bytes:
    return LAYOUT.item.encode([row])[0]


USER = user({"age": 1.0})


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
    blobs = [user({"age": 1.0}), None, item({"price": 2.0})]
    found = lookup.finish(3, LAYOUT, keys, blobs)
    assert found.user == {"age": 1.0}
    assert found.item_rows["price"].tolist()[1] == 2.0
    assert found.items == [None, {"price": 2.0}]
    assert found.missing_items == ["i1"]


def test_cached_rows_are_not_fetched_and_fetched_rows_are_cached() -> None:
    users, items = _cache(), _cache()
    users.put(3, "u1", USER)
    items.put(3, "i2", None)  # known absent
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    assert keys == [b"ns:v3:item:i1"]
    blob = item({"price": 5.0})
    found = lookup.finish(3, LAYOUT, keys, [blob])
    assert (found.user, found.items) == ({"age": 1.0}, [{"price": 5.0}, None])
    assert items.get("i1") == blob  # the stored bytes, not the decoded row
    again = Lookup("u1", ["i1", "i2"], user_cache=users, item_cache=items)
    assert again.complete
    assert again.finish(3, LAYOUT, [], []).items == [{"price": 5.0}, None]


def test_cached_and_fetched_values_are_decoded_alike_in_request_order() -> None:
    users, items = _cache(), _cache()
    blobs = {f"i{n}": item({"price": float(n), "category": f"c{n}"}) for n in range(5)}
    first = Lookup("u1", ["i0", "i1", "i2"], user_cache=users, item_cache=items)
    keys = first.keys("ns", 3)
    fetched = first.finish(3, LAYOUT, keys, [USER, blobs["i0"], None, blobs["i2"]])
    assert (users.get("u1"), items.get("i1"), items.get("i2")) == (USER, None, blobs["i2"])
    # i3 and i4 are fetched, between and after cached ones
    mixed = Lookup("u1", ["i2", "i3", "i1", "i0", "i4"], user_cache=users, item_cache=items)
    keys = mixed.keys("ns", 3)
    assert keys == [b"ns:v3:item:i3", b"ns:v3:item:i4"]
    found = mixed.finish(3, LAYOUT, keys, [blobs["i3"], blobs["i4"]])
    assert found.user == fetched.user == {"age": 1.0}
    assert found.items == [
        {"price": 2.0, "category": "c2"},
        {"price": 3.0, "category": "c3"},
        None,
        {"price": 0.0, "category": "c0"},
        {"price": 4.0, "category": "c4"},
    ]
    assert found.missing_items == ["i1"]
    assert fetched.items == [
        {"price": 0.0, "category": "c0"},
        None,
        {"price": 2.0, "category": "c2"},
    ]
    cached = Lookup("u1", ["i0", "i1", "i2", "i3"], user_cache=users, item_cache=items)
    assert cached.complete
    assert cached.finish(3, LAYOUT, [], []).items == [
        {"price": 0.0, "category": "c0"},
        None,
        {"price": 2.0, "category": "c2"},
        {"price": 3.0, "category": "c3"},
    ]


@pytest.mark.parametrize(
    ("bad", "message"),
    [(b"\xc1", "is 1 bytes"), (user({"age": 2.0}), "is 4 bytes, not a record")],
)
def test_a_corrupt_fetched_value_among_cached_ones_is_named_and_nothing_is_cached(
    bad: bytes, message: str
) -> None:
    users, items = _cache(), _cache()
    users.put(3, "u1", USER)
    items.put(3, "i1", item({"price": 1.0}))
    items.put(3, "i3", None)
    lookup = Lookup("u1", ["i1", "i2", "i3", "i4"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    with pytest.raises(CorruptValue, match=f"'ns:v3:item:i4' {message}"):
        lookup.finish(3, LAYOUT, keys, [item({}), bad])
    assert items.get("i2") is MISSING and items.get("i4") is MISSING


def test_a_corrupt_user_is_named_when_fetched_with_cached_items() -> None:
    users, items = _cache(), _cache()
    items.put(3, "i1", item({"price": 1.0}))
    lookup = Lookup("u1", ["i1"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    with pytest.raises(CorruptValue, match="'ns:v3:user:u1' is 1 bytes, not a record"):
        lookup.finish(3, LAYOUT, keys, [b"\xc1"])


def test_a_corrupt_item_is_named_when_the_user_is_cached_and_items_are_not() -> None:
    users = _cache()
    users.put(3, "u1", USER)
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users)
    keys = lookup.keys("ns", 3)
    with pytest.raises(CorruptValue, match="'ns:v3:item:i2' is 4 bytes, not a record"):
        lookup.finish(3, LAYOUT, keys, [None, USER])


def test_values_read_from_a_version_that_flipped_meanwhile_are_not_cached() -> None:
    users, items = _cache(3), _cache(3)
    lookup = Lookup("u1", ["i1"], user_cache=users, item_cache=items)
    keys = lookup.keys("ns", 3)
    users.reset(4)  # another lookup saw version 4 go live
    items.reset(4)
    found = lookup.finish(3, LAYOUT, keys, [USER, item({"price": 1.0})])
    assert found.items == [{"price": 1.0}]
    assert (users.get("u1"), items.get("i1"), len(users), len(items)) == (MISSING, MISSING, 0, 0)


def test_with_a_user_cache_only_every_item_is_fetched_and_the_user_once() -> None:
    users = _cache()
    lookup = Lookup("u1", ["i1", "i2"], user_cache=users)
    keys = lookup.keys("ns", 3)
    assert keys == [b"ns:v3:user:u1", b"ns:v3:item:i1", b"ns:v3:item:i2"]
    blobs = [user({"age": 1.0}), None, item({})]
    found = lookup.finish(3, LAYOUT, keys, blobs)
    assert (found.user, found.items) == ({"age": 1.0}, [None, {}])
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
