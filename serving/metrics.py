"""Prometheus metrics of one app (its own registry, so several apps can live in one process).

mtrank_requests_total{route, model, variant, status}        requests answered
mtrank_request_latency_seconds{route, model, variant}       end-to-end latency
mtrank_model_latency_seconds{model}                          the SavedModel call (and its wait)
mtrank_model_batch_requests{model}                           requests per SavedModel call
mtrank_store_latency_seconds                                 one online-store round trip
mtrank_store_errors_total                                    lookups that failed (degraded)
mtrank_degraded_requests_total                               answered with defaults only
mtrank_missing_features_total{entity}                        users/items/context defaulted
mtrank_candidates                                            candidates per /v1/rank request
mtrank_model_version{model}                                  the version serving now
mtrank_model_loads_total{model, outcome}                     versions loaded or refused
mtrank_experiment_requests_total{experiment, variant}        /v1/rank requests per variant
mtrank_shadow_requests_total{experiment, model, outcome}     shadow scorings (scored/failed/skipped)
mtrank_exposures_total{outcome}                              exposure lines written/dropped/failed
mtrank_exposure_log_rotations_total                          exposure log files rotated
mtrank_rank_policy_requests_total{policy}                    /v1/rank requests by ranking policy
mtrank_policy_reloads_total{outcome}                         policies file loads (loaded/refused)
mtrank_policies                                              policies of the file serving now

With `mtrank serve --workers N` (`serving.workers`) every worker process writes its values to
memory-mapped files in the run's PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess
mode, chosen when prometheus_client is imported) and /metrics of any worker reports all of them
(`MultiProcessCollector`): counters and histograms summed over the workers, dead ones included
(their files stay, so totals never go down); the gauges as the largest value among live workers
(`livemax`: the newest version any worker serves; during a swap some may still serve the one
before).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from serving.policies import PolicySet

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class Metrics:
    """The collectors, registered in `registry`; `exposition()` is what /metrics shows.

    `multiprocess_dir`: this process is a worker of several, whose values live there (the
    PROMETHEUS_MULTIPROC_DIR it was started with); /metrics then shows the workers' aggregate.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mtrank_requests",
            "Requests answered, by route template, model, variant and HTTP status.",
            ["route", "model", "variant", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mtrank_request_latency_seconds",
            "End-to-end request latency in the service, by route, model and variant.",
            ["route", "model", "variant"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "mtrank_model_latency_seconds",
            "Latency of a request's SavedModel call (all its candidates), with the wait for "
            "a busy model.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_batch_requests = Histogram(
            "mtrank_model_batch_requests",
            "Requests per SavedModel call: more than one when requests that waited for a busy "
            "model were coalesced into one call.",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=r,
        )
        self.store_latency = Histogram(
            "mtrank_store_latency_seconds",
            "Latency of one online-store lookup (user and all candidates).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "mtrank_store_errors", "Online-store lookups that failed or timed out.", registry=r
        )
        self.degraded = Counter(
            "mtrank_degraded_requests",
            "Requests scored with default features because the store was unreachable or off.",
            registry=r,
        )
        self.missing = Counter(
            "mtrank_missing_features",
            "Entities scored with default features: user, item (per candidate), context "
            "(per feature).",
            ["entity"],
            registry=r,
        )
        self.candidates = Histogram(
            "mtrank_candidates",
            "Candidates per /v1/rank request.",
            buckets=(1, 10, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.model_version = Gauge(
            "mtrank_model_version",
            "The version of each model that serves now.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_loads = Counter(
            "mtrank_model_loads",
            "Model versions loaded (outcome=loaded) or refused (outcome=refused).",
            ["model", "outcome"],
            registry=r,
        )

        self.assignments = Counter(
            "mtrank_experiment_requests",
            "/v1/rank requests assigned to each experiment variant.",
            ["experiment", "variant"],
            registry=r,
        )
        self.shadows = Counter(
            "mtrank_shadow_requests",
            "Shadow model scorings, by experiment, model and outcome (scored, failed, skipped).",
            ["experiment", "model", "outcome"],
            registry=r,
        )
        self.exposures = Counter(
            "mtrank_exposures",
            "Exposure log lines by outcome: written, dropped (queue full), failed.",
            ["outcome"],
            registry=r,
        )
        self.rotations = Counter(
            "mtrank_exposure_log_rotations",
            "Exposure log files closed and renamed (by size or age).",
            registry=r,
        )

        self.policy_requests = Counter(
            "mtrank_rank_policy_requests",
            "/v1/rank requests by the ranking policy that fused their scores ('' for none); "
            "the names are bounded by the policies file and the models' outputs.",
            ["policy"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "mtrank_policy_reloads",
            "Loads of the policies file: loaded, or refused (the previous policies serve on).",
            ["outcome"],
            registry=r,
        )
        self.policies = Gauge(
            "mtrank_policies",
            "Policies of the policies file serving now.",
            registry=r,
            multiprocess_mode="livemax",
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of this process's collectors, or of all workers'."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)

    def model_event(self, model: str, version: int, outcome: str) -> None:
        """The manager's listener: count the load, and show the serving version."""
        self.model_loads.labels(model, outcome).inc()
        if outcome == "loaded":
            self.model_version.labels(model).set(version)

    def policy_event(self, outcome: str, policies: PolicySet) -> None:
        """The policy watcher's listener: count the load, and show how many policies serve."""
        self.policy_reloads.labels(outcome).inc()
        self.policies.set(len(policies.policies))
