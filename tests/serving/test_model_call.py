"""Model calls (serving.model_call.ModelCalls): requests that wait for a busy model are scored in
one call and get exactly their own rows' scores back; a request that breaks the model fails alone."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from serving.batcher import Batch
from serving.metrics import Metrics
from serving.model_call import ModelCalls
from serving.servable import Servable
from tests.serving.conftest import Export


@pytest.fixture(scope="module")
def servable(export: Export) -> Servable:
    return Servable.load(export.version_dir, "mmoe", 1)


def batches(servable: Servable, sizes: list[int], seed: int = 0) -> list[Batch]:
    """Batches of `sizes` rows, each row a different mix of vocabulary values and numerics."""
    rng = np.random.default_rng(seed)
    out = []
    for rows in sizes:
        batch = servable.batcher.default_batch(rows)
        for feature in servable.schema.features:
            if feature.type == "numeric":
                batch[feature.name] = rng.normal(size=rows).astype(np.float32)
            elif feature.type == "categorical" and feature.vocabulary:
                batch[feature.name] = rng.choice(np.array(feature.vocabulary, object), rows)
        out.append(batch)
    return out


def run(
    servable: Servable, requests: list[Batch], concurrency: int = 1, max_rows: int = 2048
) -> tuple[list[Any], Metrics]:
    """Every request submitted at once to one ModelCalls; each outcome (scores or exception)."""
    metrics = Metrics()

    async def main() -> list[Any]:
        with ThreadPoolExecutor(4) as executor:
            calls = ModelCalls(executor, metrics, concurrency=concurrency, max_rows=max_rows)
            return await asyncio.gather(
                *(calls.scores(servable, batch) for batch in requests), return_exceptions=True
            )

    return asyncio.run(main()), metrics


def calls_by_size(metrics: Metrics) -> dict[str, float]:
    """Requests per call, as mtrank_model_batch_requests counts them: {"count", "sum"}."""
    samples = metrics.model_batch_requests.collect()[0].samples
    return {s.name.rsplit("_", 1)[1]: s.value for s in samples if s.name.endswith(("count", "sum"))}


def test_waiting_requests_are_scored_in_one_call_with_their_own_scores(
    servable: Servable,
) -> None:
    requests = batches(servable, [7, 30, 1, 12, 50])
    outcomes, metrics = run(servable, requests)
    # the first request finds the model idle; the four others wait for it, then go together
    assert calls_by_size(metrics) == {"count": 2, "sum": 5}
    for batch, scores in zip(requests, outcomes, strict=True):
        alone = servable.predict(batch)
        assert set(scores) == set(servable.outputs)
        for name in servable.outputs:
            assert scores[name].shape == alone[name].shape
            np.testing.assert_allclose(scores[name], alone[name], rtol=0, atol=1e-6)


def test_broadcast_views_score_as_their_copies(servable: Servable) -> None:
    """User and context values come as zero-stride views of one row (`rank_batch`), sequences
    included: alone or coalesced, they score as the same values copied row by row."""
    rows = batches(servable, [1, 1], seed=3)
    views = [{name: np.broadcast_to(values, (n, *values.shape[1:])) for name, values in
              row.items()} for row, n in zip(rows, [40, 25], strict=True)]  # fmt: skip
    assert all(v.strides[0] == 0 for view in views for v in view.values())
    outcomes, _ = run(servable, [views[0], views[1], views[0]])
    for view, scores in zip([views[0], views[1], views[0]], outcomes, strict=True):
        copied = servable.predict({name: np.array(values) for name, values in view.items()})
        for name in servable.outputs:
            np.testing.assert_allclose(scores[name], copied[name], rtol=0, atol=1e-6)
            assert np.ptp(scores[name]) <= 1e-6  # rows of the same values: the same score


def test_a_call_takes_waiting_requests_up_to_max_rows(servable: Servable) -> None:
    _, metrics = run(servable, batches(servable, [5, 40, 40, 40, 3]), max_rows=90)
    # 5 alone; then 40 + 40 (a third 40 would pass 90); then 40 + 3
    assert calls_by_size(metrics) == {"count": 3, "sum": 5}
    _, metrics = run(servable, batches(servable, [5, 5, 5]), max_rows=0)
    assert calls_by_size(metrics) == {"count": 3, "sum": 3}  # 0: one call per request
    _, metrics = run(servable, batches(servable, [5, 5, 5, 5]), concurrency=4)
    assert calls_by_size(metrics) == {"count": 4, "sum": 4}  # the model was never busy


def test_a_request_that_breaks_the_model_fails_alone(servable: Servable) -> None:
    good = batches(servable, [4, 6, 8])
    numeric = next(f.name for f in servable.schema.features if f.type == "numeric")
    broken = dict(good[1])
    broken[numeric] = np.array(["not a number"] * 6, object)
    outcomes, metrics = run(servable, [good[0], good[1], broken, good[2]])
    assert calls_by_size(metrics) == {"count": 2, "sum": 4}  # the coalesced call failed, then
    assert isinstance(outcomes[2], Exception)  # each of its requests was called alone
    for at, batch in ((0, good[0]), (1, good[1]), (3, good[2])):
        alone = servable.predict(batch)
        for name in servable.outputs:
            np.testing.assert_allclose(outcomes[at][name], alone[name], rtol=0, atol=1e-6)
