"""The chunk generator of a Parquet or CSV read: pieces -> record batches -> shuffled windows ->
encoded chunks, one pass per epoch.

Shuffling (`shuffle=True`): the pieces of the file (Parquet row groups, CSV blocks) are visited in
a random order each epoch, and rows are permuted within windows of `max(shuffle_buffer,
chunk_rows)` rows. With a `seed`, each epoch's order is reproducible and differs from the last.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from training.data.encoding import Arrays
from training.data.options import ReadOptions
from training.data.plan import Plan
from training.data.sources import Source


def chunk_generator(
    source: Source, plan: Plan, options: ReadOptions
) -> Callable[[], Iterator[Arrays]]:
    """A generator function (called once per epoch) of encoded chunks of this shard's rows."""
    epochs = itertools.count()
    pieces = source.pieces(options.shard_index, options.num_shards)

    def chunks() -> Iterator[Arrays]:
        epoch = next(epochs)
        seed = None if options.seed is None else [options.seed, epoch]
        rng = np.random.default_rng(seed)
        order = pieces
        if options.shuffle and pieces is not None:
            order = [pieces[i] for i in rng.permutation(len(pieces))]
        batches = source.batches(
            plan.columns, order, options.shard_index, options.num_shards, options.chunk_rows
        )
        if options.shuffle:
            window = max(options.shuffle_buffer, options.chunk_rows)
            batches = _shuffled(batches, rng, window, options.chunk_rows)
        for batch in batches:
            yield plan.encode(batch)

    return chunks


def _shuffled(
    batches: Iterator[pa.RecordBatch], rng: np.random.Generator, window: int, rows: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most `rows` rows, permuted within windows of >= `window` rows."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in itertools.chain(batches, [None]):
        if batch is not None:
            pending.append(batch)
            count += batch.num_rows
        if pending and (count >= window or batch is None):
            table = pa.Table.from_batches(pending).take(rng.permutation(count))
            yield from table.combine_chunks().to_batches(max_chunksize=rows)
            pending, count = [], 0
