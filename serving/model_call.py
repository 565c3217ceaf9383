"""The model call of a request, off the event loop.

One SavedModel call per request scores every candidate; it runs in the app's model thread pool
so the event loop keeps accepting and parsing other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from feature_store.online_features import OnlineFeatures
from serving.batcher import Batch, Value
from serving.metrics import Metrics
from serving.servable import Servable


async def run_model(
    servable: Servable, batch: Batch, executor: ThreadPoolExecutor, metrics: Metrics
) -> dict[str, np.ndarray]:
    """`servable.predict(batch)` in `executor`; its latency goes to mtrank_model_latency_seconds."""
    started = time.perf_counter()
    scores = await asyncio.get_running_loop().run_in_executor(executor, servable.predict, batch)
    metrics.model_latency.labels(servable.name).observe(time.perf_counter() - started)
    return scores


async def score_candidates(
    servable: Servable,
    context: Mapping[str, Value],
    found: OnlineFeatures,
    executor: ThreadPoolExecutor,
    metrics: Metrics,
) -> dict[str, np.ndarray]:
    """One model's scores of a request's candidates (`found`) under its context, typed by that
    model's batcher: what `/v1/rank` runs for the serving variant and for each shadow model."""
    return await run_model(servable, servable.batcher.rank_batch(found, context), executor, metrics)
