"""The app's dependencies (`serving.deps`)."""

from __future__ import annotations

import inspect

from serving import deps


def test_dependencies_run_on_the_event_loop() -> None:
    """A plain `def` dependency runs in FastAPI's thread pool: one thread hop per dependency
    per request, which cost /v1/rank about 1 ms of its latency on 2 cores."""
    for function in (
        deps.get_settings,
        deps.get_manager,
        deps.get_ranker,
        deps.get_features,
        deps.get_metrics,
        deps.get_model_calls,
        deps.require_admin,
    ):
        assert inspect.iscoroutinefunction(function), function.__name__
