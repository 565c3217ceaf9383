"""mtrank's online feature store: user and item features for serving, loaded from Parquet.

    store = open_async_store(data_dir="data")            # the embedded store `materialize` filled
    store = open_async_store(url="redis://host:6379/0")  # or any Redis
    store = open_async_store(url="redis+cluster://host:7000,host:7001")  # or a Redis Cluster
    found = await store.get_online_features("u42", ["i1", "i2"])   # one round trip
    columns = found.columns(schema)       # raw values per feature, defaults filled in
    await store.aclose()

`StoreUnavailable` means the store did not answer within its timeout (50 ms by default): serve
`OnlineFeatures.unavailable(user_id, item_ids)` (all defaults, degraded) instead. Layout in Redis:
`feature_store.keys` and `feature_store.records`; loading: `feature_store.materialize` (through `feature_store.writer`) and
`mtrank features materialize`. Importing this package opens nothing and imports neither
TensorFlow nor pyarrow.
"""

from feature_store.cache import CacheConfig, EntityCacheConfig
from feature_store.errors import (
    CorruptValue,
    DataFileError,
    FeatureStoreError,
    StoreConfigError,
    StoreUnavailable,
)
from feature_store.online_features import OnlineFeatures, OnlineStore
from feature_store.redis_store import RedisOnlineStore, open_async_store

__all__ = [
    "CacheConfig",
    "CorruptValue",
    "DataFileError",
    "EntityCacheConfig",
    "FeatureStoreError",
    "OnlineFeatures",
    "OnlineStore",
    "RedisOnlineStore",
    "StoreConfigError",
    "StoreUnavailable",
    "open_async_store",
]
