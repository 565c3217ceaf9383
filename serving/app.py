"""The app factory: `create_app(settings)` builds the FastAPI app; its lifespan opens everything.

At startup the lifespan sizes TensorFlow's thread pools (`tf_threads`, before TensorFlow runs
anything), loads and warms the latest version of every model (`ModelManager`), checks the
experiments file against the loaded models, loads the ranking policies and checks them (the
default, and each variant's) against the models, starts the exposure log's writer thread, opens the
online store (`FeatureSource`), starts the thread pool that calls the models (`ModelCalls`:
concurrent requests of a busy model are scored in one call) and the task that polls for new
versions (and for edits of the policies file), then freezes the garbage collector's view of
everything loaded so far (`gc.freeze()`: full collections stop walking the model graphs, which
otherwise adds tens of milliseconds to the latency tail). At shutdown it stops them again, first
waiting for shadow scorings and writing every queued exposure. Nothing happens at import or in
`create_app` beyond building objects.

In a worker process of `mtrank serve --workers N` (`serving.workers`), `create_app` is given its
`Worker`: the metrics are prometheus-client's multiprocess ones, the exposure log is the worker's
own file (FILE.wK), a startup error goes to the supervising process, and at shutdown the worker's
live gauges leave the aggregate.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from ranker.errors import MtrankError
from serving.errors import ModelLoadError, install_error_handlers
from serving.experiments import ExperimentsError, ExperimentsFile
from serving.exposure import ExposureLog, ExposureRecorder
from serving.feature_source import FeatureSource
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.middleware import ServiceMiddleware
from serving.model_call import ModelCalls
from serving.model_router import ExperimentRouter, ModelRouter
from serving.policies import PolicySet, PolicyWatcher
from serving.ranking import Ranker
from serving.routes import ROUTERS
from serving.servable import Servable
from serving.settings import Settings
from serving.workers import cpu_cores

if TYPE_CHECKING:
    from serving.workers import Worker

log = logging.getLogger("mtrank.serving")


def create_app(settings: Settings, *, worker: Worker | None = None) -> FastAPI:
    """The service for `settings`; models and store open when the app starts (lifespan).
    `worker`: this process is one of `mtrank serve --workers N` (`serving.workers`)."""
    app = FastAPI(
        title="mtrank",
        summary="Multi-task ranking: per-task scores for a user's candidates",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.worker = worker
    app.state.metrics = Metrics(None if worker is None else worker.metrics_dir)
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(
        ServiceMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_body_bytes,
        log_requests=settings.access_log,
    )
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    worker: Worker | None = app.state.worker
    if settings.tf_threads is not None:
        size_tensorflow(settings.tf_threads)
    manager = ModelManager(
        settings.models_dir, warmup_rows=settings.warmup_rows, listener=metrics.model_event
    )
    await asyncio.to_thread(manager.refresh)
    if manager.ready:
        log.info("serving models %s", manager.names)
    else:
        log.error(
            "no model could be loaded from %s; /readyz answers 503 until one loads",
            settings.models_dir,
        )
    experiments = load_experiments(app, settings, manager)
    policies = load_policies(app, settings, manager, experiments, metrics)
    exposure_log = open_exposure_log(app, settings, metrics)
    features = FeatureSource.open(settings, metrics)
    executor = ThreadPoolExecutor(settings.model_threads, thread_name_prefix="mtrank-model")
    model_calls = ModelCalls(
        executor,
        metrics,
        concurrency=settings.model_concurrency or settings.tf_threads or cpu_cores(),
        max_rows=settings.model_batch_rows,
    )
    router = (
        ModelRouter(manager, settings.default_model)
        if experiments is None
        else ExperimentRouter(manager, experiments)
    )
    exposures = ExposureRecorder(
        exposure_log, model_calls, metrics, log_features=settings.log_features
    )
    app.state.manager = manager
    app.state.features = features
    app.state.model_calls = model_calls
    app.state.policies = policies
    app.state.ranker = Ranker(
        settings.max_items, router, features, metrics, model_calls, exposures, policies
    )
    _freeze(settings)
    poller = None
    if settings.poll_interval_s > 0:
        poller = asyncio.create_task(_poll(manager, policies, settings), name="mtrank-model-poll")
    try:
        yield
    finally:
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        await exposures.aclose()  # shadows finish, then every queued exposure is written
        await features.aclose()
        executor.shutdown(wait=False, cancel_futures=True)
        if worker is not None:
            worker.close()


def load_experiments(
    app: FastAPI, settings: Settings, manager: ModelManager
) -> ExperimentsFile | None:
    """The validated experiments file, or None; every model it names must have loaded.

    A bad file stops the startup: the error is kept on `app.state.startup_error` (so that
    `mtrank serve` can print it as one line and exit 2) and raised.
    """
    if settings.experiments is None:
        return None
    try:
        experiments = ExperimentsFile.load(settings.experiments)
        experiments.check_models(manager.names, source=str(settings.experiments))
    except ExperimentsError as err:
        startup_failed(app, err)
        raise
    for experiment in experiments.experiments:
        log.info(
            "experiment %s: %s%s",
            experiment.name,
            ", ".join(f"{v.name}={v.model} ({v.weight:g}%)" for v in experiment.variants),
            f"; shadow {experiment.shadow}" if experiment.shadow else "",
        )
    return experiments


def load_policies(
    app: FastAPI,
    settings: Settings,
    manager: ModelManager,
    experiments: ExperimentsFile | None,
    metrics: Metrics,
) -> PolicyWatcher:
    """The ranking policies, loaded and checked: the default must fit every loaded model, each
    variant's policy its model. A bad file (or fit) stops the startup like a bad experiments
    file; later edits that fail the same checks are refused while the old policies serve, and so
    are later model versions (`ModelManager.admit`): the old version serves on."""

    def fit(policies: PolicySet, served: Mapping[str, Servable]) -> None:
        policies.check_default(list(served.values()))
        if experiments is not None:
            experiments.check_policies(policies, served, source=str(settings.experiments))

    def check(policies: PolicySet) -> None:
        fit(policies, {name: s for name in manager.names if (s := manager.get(name)) is not None})

    def admit(servable: Servable) -> None:
        try:
            fit(watcher.current, {servable.name: servable})
        except MtrankError as err:
            raise ModelLoadError(f"the ranking policies: {err}", "FAILED_PRECONDITION") from None

    watcher = PolicyWatcher(settings.policies, check, listener=metrics.policy_event)
    try:
        watcher.start()
    except MtrankError as err:
        startup_failed(app, err)
        raise
    manager.admit = admit
    if settings.policies is not None:
        log.info(
            "ranking policies from %s: %s", settings.policies, sorted(watcher.current.policies)
        )
    return watcher


def open_exposure_log(app: FastAPI, settings: Settings, metrics: Metrics) -> ExposureLog | None:
    """The started exposure log writer, or None without `exposure_log`; a worker process of
    `--workers N` writes its own file, FILE.wK."""
    if settings.exposure_log is None:
        return None
    worker: Worker | None = app.state.worker
    path = settings.exposure_log if worker is None else worker.exposure_log(settings.exposure_log)
    max_mb, minutes = settings.exposure_log_max_mb, settings.exposure_log_rotate_minutes
    exposure_log = ExposureLog(
        path,
        metrics,
        settings.exposure_queue,
        max_bytes=None if max_mb is None else max(1, round(max_mb * 2**20)),
        rotate_s=None if minutes is None else minutes * 60.0,
    )
    try:
        exposure_log.start()
    except OSError as err:
        error = MtrankError(f"--exposure-log {path}: cannot append to it ({err.strerror})")
        startup_failed(app, error)
        raise error from None
    return exposure_log


def startup_failed(app: FastAPI, error: MtrankError) -> None:
    """Keep the error that stops the startup, for `mtrank serve` to print as one line (a worker
    process hands it to the supervising process)."""
    app.state.startup_error = error
    worker: Worker | None = app.state.worker
    if worker is not None:
        worker.startup_failed(error)


def size_tensorflow(threads: int) -> None:
    """TensorFlow's intra-op (one kernel's parallelism) and inter-op (kernels side by side)
    pools, `threads` each; before TensorFlow runs anything in this process, or RuntimeError."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


async def _poll(manager: ModelManager, policies: PolicyWatcher, settings: Settings) -> None:
    """Look for new (or removed) versions and for an edited policies file every
    `poll_interval_s`; loads run in a thread."""
    while True:
        await asyncio.sleep(settings.poll_interval_s)
        try:
            events = await asyncio.to_thread(manager.refresh)
        except Exception:  # a poll must never die: log and try again next time
            log.exception("model poll failed")
            continue
        if any(outcome == "loaded" for _, _, outcome in events):
            _freeze(settings)
        try:
            await asyncio.to_thread(policies.refresh)
        except Exception:
            log.exception("policies poll failed")


def _freeze(settings: Settings) -> None:
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
