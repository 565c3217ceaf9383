"""Timing for `store_latency.py`: p50/p99/mean of timed calls, after `gc.freeze()` unless asked.

Every timing runs 20 untimed calls first. `time_round_robin` times several cases one call of each
in turn, so that load coming and going on the machine falls on all of them alike;
`time_gen0_thresholds` compares gen-0 thresholds in alternating blocks of GC_BLOCK calls;
`server_cpu_ms` is the redis-server CPU (INFO cpu) a call costs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import redis.asyncio

GC_BLOCK = 25  # calls per block when comparing gen-0 thresholds


def summarize(times_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(times_ms, 99)), 3),
        "mean_ms": round(float(np.mean(times_ms)), 3),
    }


@contextmanager
def frozen(freeze: bool) -> Iterator[None]:
    gc.collect()
    if freeze:
        gc.freeze()  # what a service does after warm-up: the heap is never scanned again
    try:
        yield
    finally:
        gc.unfreeze()


def time_sync(fn: Callable[[], object], calls: int, freeze: bool = True) -> dict[str, float]:
    for _ in range(20):
        fn()
    times = []
    with frozen(freeze):
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return summarize(times)


async def time_async(
    fn: Callable[[], Awaitable[object]], calls: int, freeze: bool = True
) -> dict[str, float]:
    for _ in range(20):
        await fn()
    times = []
    with frozen(freeze):
        for _ in range(calls):
            start = time.perf_counter()
            await fn()
            times.append((time.perf_counter() - start) * 1e3)
    return summarize(times)


async def time_round_robin(
    cases: Mapping[str, Callable[[], Awaitable[object]]], calls: int
) -> dict[str, dict[str, float]]:
    """`calls` timed calls of each case, one of each in turn: load that comes and goes on the
    machine falls on all of them alike, so their ratios hold even where absolute times do not."""
    for fn in cases.values():
        for _ in range(20):
            await fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    with frozen(True):
        for _ in range(calls):
            for name, fn in cases.items():
                start = time.perf_counter()
                await fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: summarize(t) for name, t in times.items()}


async def time_gen0_thresholds(
    fn: Callable[[], Awaitable[object]], thresholds: Sequence[int], calls: int
) -> dict[str, dict[str, float]]:
    """`fn` under each gen-0 threshold, in alternating blocks of GC_BLOCK calls."""
    default = gc.get_threshold()
    for _ in range(20):
        await fn()
    times: dict[int, list[float]] = {t: [] for t in thresholds}
    with frozen(True):
        try:
            for _ in range(max(calls // GC_BLOCK, 1)):
                for threshold in thresholds:
                    gc.set_threshold(threshold, *default[1:])
                    for _ in range(GC_BLOCK):
                        start = time.perf_counter()
                        await fn()
                        times[threshold].append((time.perf_counter() - start) * 1e3)
        finally:
            gc.set_threshold(*default)
    return {f"gc_gen0_{t}": summarize(times[t]) for t in thresholds}


async def server_cpu_ms(url: str, fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """The redis-server CPU time (user + system, from INFO cpu) per call of `fn`, in ms."""
    client = redis.asyncio.Redis.from_url(url)

    async def used() -> float:
        cpu = await client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    before = await used()
    for _ in range(calls):
        await fn()
    spent = await used() - before
    await client.aclose()
    return round(spent / calls * 1e3, 3)
