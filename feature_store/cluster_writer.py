"""Writing versions of the online tables into a Redis Cluster: `StoreWriter`'s steps, keys and records.

`StoreWriter` runs two Lua scripts that each touch two keys in different hash slots (the version
counter and the pointer; the pointer and the version's meta record), which a cluster refuses
(CROSSSLOT). Here each step touches one slot at a time:

- `begin`: INCR the counter; if the number is not above the live version (the counter was lost,
  say in a failover), INCRBY it past the live one. Every number is still handed out once (INCR
  and INCRBY are atomic) and above the version live when it was handed out.
- `flip`: SET the version's meta record if it has none (NX), then move the pointer forward with a
  compare-and-set, a Lua script on the pointer's key alone (it runs on that key's node).
- `write`: each batch is one MSET per hash slot, which redis-py's cluster client sends as one
  pipeline per node (`mset_nonatomic`); rows with a TTL are SETs with EX in a cluster pipeline.
- deleting a version: SCAN on every master (redis-py's cluster `scan_iter`), UNLINK per slot.

Readers of a cluster never mix two versions without a transaction (`cluster_store`), so older
versions are deleted right after the flip, as on a single Redis. Redis Cluster replicates
asynchronously: a master that fails right after acknowledging a write can lose it when its
replica takes over, so a materialization that ran across a failover is run again.
"""

from __future__ import annotations

import redis.cluster
from redis.exceptions import ClusterError, RedisClusterException

from feature_store.keys import counter_key, meta_key
from feature_store.writer import StoreWriter

# KEYS: pointer; ARGV: version. Sets the pointer unless it is already at or past the version;
# returns {1 if set, the pointer's value before ('' if none)}.
_FLIP_POINTER = """
local live = redis.call('GET', KEYS[1])
if live and tonumber(live) >= tonumber(ARGV[1]) then
  return {0, live}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, live or ''}
"""


class ClusterStoreWriter(StoreWriter):
    """A `StoreWriter` over redis-py's blocking Redis Cluster client; `open_writer` builds one for
    a `redis+cluster://` URL. Same versions, keys and records; the steps differ as the module doc
    says."""

    _outages = (*StoreWriter._outages, ClusterError, RedisClusterException)

    @property
    def _cluster(self) -> redis.cluster.RedisCluster:
        assert isinstance(self._client, redis.cluster.RedisCluster)
        return self._client

    def begin(self) -> int:
        """A new version number, higher than the live one and than any handed out before."""
        counter = counter_key(self.namespace)
        number = int(self._call(self._cluster.incr, counter))
        live = self.current_version()
        if live is not None and number <= live:
            number = int(self._call(self._cluster.incrby, counter, live + 1 - number))
        return number

    def _flip_pointer(self, version: int, minimal_meta: bytes) -> tuple[int, bytes]:
        meta = meta_key(self.namespace, version)
        self._call(self._cluster.execute_command, "SET", meta, minimal_meta, "NX")
        script = self._cluster.register_script(_FLIP_POINTER)
        flipped, before = self._call(script, [self._pointer], [version])
        return int(flipped), before

    def _store(self, values: dict[bytes, bytes], ttl_s: int | None) -> None:
        if ttl_s is not None:
            super()._store(values, ttl_s)  # SETs with EX: the cluster pipeline groups them by node
        else:
            self._call(self._cluster.mset_nonatomic, values)
