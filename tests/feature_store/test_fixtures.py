"""tests/conftest.py marks `redis` exactly the tests that reach the Redis fixture."""

from __future__ import annotations

import pytest


def test_a_test_using_the_redis_fixture_through_another_is_marked(
    request: pytest.FixtureRequest, namespace: str
) -> None:
    assert request.node.get_closest_marker("redis") is not None


def test_a_test_without_redis_is_not_marked(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("redis") is None
