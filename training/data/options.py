"""`ReadOptions`: how a split is read (batching, shuffling, repetition, sharding, labels).

Shuffling (`shuffle=True`) and sharding (`num_shards`, `shard_index`) are carried out per format:
Parquet and CSV by `training.data.sources` and `training.data.chunks`, TFRecord by
`training.data.tfrecord`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadOptions:
    """How a split is read: batching, shuffling, repetition, sharding, and whether labels come."""

    batch_size: int = 1024
    shuffle: bool = False
    shuffle_buffer: int = 100_000
    seed: int | None = None
    repeat: bool = False
    drop_remainder: bool = False
    num_shards: int = 1
    shard_index: int = 0
    labels: bool = True
    chunk_rows: int = 65_536

    def __post_init__(self) -> None:
        for name in ("batch_size", "shuffle_buffer", "num_shards", "chunk_rows"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"shard_index must be in [0, {self.num_shards}), got {self.shard_index}"
            )
