"""`store_latency.py`'s same-run comparisons, timed round-robin: the store's lookup against the
store at git HEAD and against a server-side Lua script (tried, not adopted), each with the
redis-server CPU it costs; the two lookups followed by what serving did to get the model's arrays;
and the two stores' decoding of the same lookups' values. Every comparison first checks that its
cases read the same features.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import cycle
from typing import Any

import numpy as np
import redis.asyncio
from lookup_timing import server_cpu_ms, time_round_robin
from previous_store import (
    PreviousFeatures,
    by_name,
    previous_batch,
    previous_decode_rows,
    previous_lookup,
)
from store_layouts import (
    NAMESPACE,
    PREVIOUS,
    VERSION,
    Request,
    array_keys,
    decode_records,
    record_keys,
    schema,
    stored_columns,
)

from feature_store.cache import CacheConfig
from feature_store.errors import CorruptValue
from feature_store.keys import parse_version, pointer_key
from feature_store.online_features import OnlineFeatures
from feature_store.records import Layout
from feature_store.redis_store import open_async_store


def cycling(
    fn: Callable[[str, list[str]], Awaitable[object]], reqs: list[Request]
) -> Callable[[], Awaitable[object]]:
    """A case that calls `fn` on each of `reqs` in turn (its own cycle: every case of a
    comparison sees the same requests in the same order)."""
    request = cycle(reqs)

    async def case() -> object:
        return await fn(*next(request))

    return case


async def compare_lookups(
    url: str,
    packed: redis.asyncio.Redis,
    layout: Layout,
    uniform: list[Request],
    calls: int,
) -> dict[str, Any]:
    """The store's lookup, the one at HEAD and the Lua script, no cache, and the two lookups
    followed by what serving did to get the model's arrays, timed round-robin; then the
    redis-server CPU each lookup costs."""
    table = schema()
    store = open_async_store(url=url, namespace=NAMESPACE, cache=CacheConfig.off(), timeout=1.0)
    await store.get_online_features(*uniform[0])  # learns the version and its records
    assert store.layout == layout, "the store read another layout than the writer wrote"
    script = packed.register_script(LUA_LOOKUP)

    async def new(user_id: str, item_ids: list[str]) -> OnlineFeatures:
        return await store.get_online_features(user_id, item_ids)

    async def previous(user_id: str, item_ids: list[str]) -> PreviousFeatures:
        return await previous_lookup(packed, PREVIOUS, user_id, item_ids)

    async def lua(user_id: str, item_ids: list[str]) -> OnlineFeatures:
        return await lua_lookup(script, layout, user_id, item_ids)

    async def new_columns(user_id: str, item_ids: list[str]) -> dict[str, np.ndarray]:
        return (await store.get_online_features(user_id, item_ids)).columns(table)

    async def previous_columns(user_id: str, item_ids: list[str]) -> dict[str, np.ndarray]:
        return previous_batch(await previous_lookup(packed, PREVIOUS, user_id, item_ids), table)

    # the lookups agree, and so do the model inputs, before anything is timed
    assert same_rows([await fn(*uniform[0]) for fn in (new, previous, lua)]), "lookups disagree"
    batches = [await fn(*uniform[0]) for fn in (new_columns, previous_columns)]
    assert same_batch(*batches), "the model inputs disagree"
    lookups = {
        "store_no_cache": cycling(new, uniform),
        "store_previous": cycling(previous, uniform),
        "store_lua_script": cycling(lua, uniform),
    }
    cases = {
        **lookups,
        "store_no_cache_columns": cycling(new_columns, uniform),
        "store_previous_columns": cycling(previous_columns, uniform),
    }
    results: dict[str, Any] = await time_round_robin(cases, calls)
    for name, fn in lookups.items():
        results[name]["server_cpu_ms"] = await server_cpu_ms(url, fn, max(calls // 2, 50))
    await store.aclose()
    return results


async def compare_decoders(
    client: redis.asyncio.Redis, layout: Layout, uniform: list[Request], calls: int
) -> dict[str, Any]:
    """The store's decoding of a lookup's values at HEAD (the arrays) and now (the records),
    round-robin, on the values of the same 50 requests."""
    arrays: list[tuple[Any, list[bytes]]] = []  # (blobs, keys) of each request
    records: list[tuple[Any, list[bytes]]] = []
    for user_id, item_ids in uniform[:50]:
        keys = array_keys(user_id, item_ids)
        arrays.append((await client.mget(keys), keys))
        keys = record_keys(user_id, item_ids)
        records.append((await client.mget(keys), keys))
    widths = [len(stored_columns("user"))] + [len(stored_columns("item"))] * (len(keys) - 1)
    next_arrays, next_records = cycle(arrays).__next__, cycle(records).__next__

    async def previous() -> object:
        return previous_decode_rows(*next_arrays(), widths)

    async def now() -> object:
        return decode_records(layout, *next_records())

    decoded = previous_decode_rows(*arrays[0], widths)
    user, items = decode_records(layout, *records[0])
    columns = stored_columns("user"), stored_columns("item")
    assert by_name(decoded[0], columns[0]) == layout.user.values(user[0])
    assert [by_name(row, columns[1]) for row in decoded[1:]] == list(
        map(layout.item.values, items)
    ), "the arrays and the records disagree"
    cases = {"decode_arrays_previous": previous, "decode_records_round_robin": now}
    return await time_round_robin(cases, calls)


# ---- the Lua script tried instead (same-run comparison) -------------------------------------

# KEYS[1]: {ns}:current. ARGV: the namespace, the version whose layout the caller knows ('' if
# none), '1' if the first id is a user's ('0' if all are items), then the ids.
# Returns {version, that version's meta record if the caller did not know it, the records of the
# keys found joined in one string, the 0-based positions of the keys not found}; nothing but
# {nil} when no version is live.
LUA_LOOKUP = """
local live = redis.call('GET', KEYS[1])
if not live or not string.match(live, '^%d+$') then return {live} end
local meta = false
if live ~= ARGV[2] then meta = redis.call('GET', ARGV[1] .. ':v' .. live .. ':meta') end
local prefix = ARGV[1] .. ':v' .. live .. ':'
local n = #ARGV - 3
local keys = {}
for i = 1, n do keys[i] = prefix .. 'item:' .. ARGV[i + 3] end
if ARGV[3] == '1' and n > 0 then keys[1] = prefix .. 'user:' .. ARGV[4] end
local parts, absent = {}, {}
for first = 1, n, 1000 do  -- unpack() is limited by Lua's C stack (about 8000 values)
  local last = math.min(first + 999, n)
  local blobs = redis.call('MGET', unpack(keys, first, last))
  for i = 1, last - first + 1 do
    if blobs[i] then parts[#parts + 1] = blobs[i] else absent[#absent + 1] = first + i - 2 end
  end
end
return {live, meta, table.concat(parts), absent}
"""


async def lua_lookup(
    script: Any, layout: Layout, user_id: str, item_ids: Sequence[str]
) -> OnlineFeatures:
    """The store's lookup through LUA_LOOKUP (EVALSHA, on a hiredis-packed client): one atomic
    call, one bulk reply of the records, read as structured arrays in place. Only the total size
    is checked (the script joined the values): a wrong-sized value cannot be named."""
    pointer = pointer_key(NAMESPACE)
    user, item = layout.user, layout.item
    n = len(item_ids)
    async with asyncio.timeout(1.0):
        live, _, body, absent = await script(
            keys=[pointer], args=[NAMESPACE, VERSION, "1", user_id, *item_ids]
        )
        assert parse_version(live, pointer) == VERSION
        if absent:  # cut the records found out of the body, None where not found
            blobs: list[bytes | None] = []
            at, gone = 0, set(absent)
            for position in range(n + 1):
                size = user.size if position == 0 else item.size
                blobs.append(None if position in gone else body[at : at + size])
                at += 0 if position in gone else size
            user_row = None if blobs[0] is None else user.decode(blobs[:1], [b"(lua)"])
            item_rows = item.decode(blobs[1:], [b"(lua)"] * n)
            missing = [position - 1 for position in absent if position > 0]
            return OnlineFeatures(user_id, item_ids, layout, user_row, item_rows, missing)
        if len(body) != user.size + n * item.size:
            raise CorruptValue(f"the script returned {len(body)} bytes, not 1 + {n} records")
        user_row = np.frombuffer(body, user.dtype, count=1)
        item_rows = np.frombuffer(body, item.dtype, count=n, offset=user.size)
        return OnlineFeatures(user_id, item_ids, layout, user_row, item_rows)


def same_rows(found: Sequence[OnlineFeatures | PreviousFeatures]) -> bool:
    """True if every lookup read the same features (by name) for the user and every item."""
    first = found[0]
    return all(f.user == first.user and f.items == first.items for f in found[1:])


def same_batch(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """True if two sets of model inputs hold the same values (strings as str or as UTF-8 bytes)."""
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            if x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif not np.array_equal(x.astype(str), y.astype(str)):
            return False
    return True
