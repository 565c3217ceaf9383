"""The app factory: `create_app(settings)` builds the FastAPI app; its lifespan opens everything.

At startup the lifespan loads and warms the latest version of every model (`ModelManager`),
checks the experiments file against the loaded models, starts the exposure log's writer thread,
opens the online store (`FeatureSource`), starts the thread pool that calls the models and the
task that polls for new versions, then freezes the garbage collector's view of everything
loaded so far (`gc.freeze()`: full collections stop walking the model graphs, which otherwise
adds tens of milliseconds to the latency tail). At shutdown it stops them again, first waiting
for shadow scorings and writing every queued exposure. Nothing happens at import or in
`create_app` beyond building objects.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ranker.errors import MtrankError
from serving.errors import install_error_handlers
from serving.experiments import ExperimentsError, ExperimentsFile
from serving.exposure import ExposureLog, ExposureRecorder
from serving.feature_source import FeatureSource
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.middleware import ServiceMiddleware
from serving.model_router import ExperimentRouter, ModelRouter
from serving.ranking import Ranker
from serving.routes import ROUTERS
from serving.settings import Settings

log = logging.getLogger("mtrank.serving")


def create_app(settings: Settings) -> FastAPI:
    """The service for `settings`; models and store open when the app starts (lifespan)."""
    app = FastAPI(
        title="mtrank",
        summary="Multi-task ranking: per-task scores for a user's candidates",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
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
    exposure_log = open_exposure_log(app, settings, metrics)
    features = FeatureSource.open(settings, metrics)
    executor = ThreadPoolExecutor(settings.model_threads, thread_name_prefix="mtrank-model")
    router = (
        ModelRouter(manager, settings.default_model)
        if experiments is None
        else ExperimentRouter(manager, experiments)
    )
    exposures = ExposureRecorder(exposure_log, executor, metrics)
    app.state.manager = manager
    app.state.features = features
    app.state.executor = executor
    app.state.ranker = Ranker(settings.max_items, router, features, metrics, executor, exposures)
    _freeze(settings)
    poller = None
    if settings.poll_interval_s > 0:
        poller = asyncio.create_task(_poll(manager, settings), name="mtrank-model-poll")
    try:
        yield
    finally:
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        await exposures.aclose()  # shadows finish, then every queued exposure is written
        await features.aclose()
        executor.shutdown(wait=False, cancel_futures=True)


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
        app.state.startup_error = err
        raise
    for experiment in experiments.experiments:
        log.info(
            "experiment %s: %s%s",
            experiment.name,
            ", ".join(f"{v.name}={v.model} ({v.weight:g}%)" for v in experiment.variants),
            f"; shadow {experiment.shadow}" if experiment.shadow else "",
        )
    return experiments


def open_exposure_log(app: FastAPI, settings: Settings, metrics: Metrics) -> ExposureLog | None:
    """The started exposure log writer, or None without `exposure_log`."""
    if settings.exposure_log is None:
        return None
    exposure_log = ExposureLog(settings.exposure_log, metrics, settings.exposure_queue)
    try:
        exposure_log.start()
    except OSError as err:
        error = MtrankError(
            f"--exposure-log {settings.exposure_log}: cannot append to it ({err.strerror})"
        )
        app.state.startup_error = error
        raise error from None
    return exposure_log


async def _poll(manager: ModelManager, settings: Settings) -> None:
    """Look for new (or removed) versions every `poll_interval_s`; loads run in a thread."""
    while True:
        await asyncio.sleep(settings.poll_interval_s)
        try:
            events = await asyncio.to_thread(manager.refresh)
        except Exception:  # a poll must never die: log and try again next time
            log.exception("model poll failed")
            continue
        if any(outcome == "loaded" for _, _, outcome in events):
            _freeze(settings)


def _freeze(settings: Settings) -> None:
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
