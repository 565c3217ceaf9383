"""mtrank's online feature store: user and item features for serving, loaded from Parquet.

    store = open_store(data_dir="data")            # the embedded store `materialize` filled
    store = open_store(url="redis://host:6379/0")  # or any Redis
    found = store.get_online_features("u42", ["i1", "i2"])   # one round trip
    columns = found.columns(schema)                 # raw values per feature, defaults filled in

`StoreUnavailable` means the store did not answer in time: serve
`OnlineFeatures.unavailable(user_id, item_ids)` (all defaults, degraded) instead. Layout in Redis:
`feature_store.codec`; loading: `feature_store.materialize` and `mtrank features materialize`.
Importing this package opens nothing and imports neither TensorFlow nor pyarrow.
"""

from feature_store.errors import (
    CorruptValue,
    DataFileError,
    FeatureStoreError,
    StoreConfigError,
    StoreUnavailable,
)
from feature_store.redis_store import RedisOnlineStore, open_store
from feature_store.store import OnlineFeatures, OnlineStore

__all__ = [
    "CorruptValue",
    "DataFileError",
    "FeatureStoreError",
    "OnlineFeatures",
    "OnlineStore",
    "RedisOnlineStore",
    "StoreConfigError",
    "StoreUnavailable",
    "open_store",
]
