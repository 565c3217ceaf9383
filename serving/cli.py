"""`mtrank serve --models MODELS [--redis URL | --store DIR] [--host H] [--port P] ...`

Serves every model under MODELS (the latest version of each) with the HTTP API of CONTRACT
section 4, in the foreground until Ctrl-C. Flags override `MTRANK_*` environment variables
(`serving.settings.Settings`). The online store is `--redis URL`, else `--store DIR` (the
embedded store `mtrank features materialize --data DIR` filled), else `$MTRANK_REDIS_URL` or
`$REDIS_URL`; with none of these the service runs without a store: every request is scored
with default user and item features and answered with `"degraded": true`.

`--policies FILE` names the ranking policies (`serving.policies`) that `/v1/rank`'s `policy` and
`top_k` and the experiments' variants use; `--log-features` puts the served feature values in
the exposure log, which `--exposure-log-max-mb` / `--exposure-log-rotate-minutes` rotate
(`serving.exposure`).

`--workers N` serves the port from N processes under uvicorn's supervisor (`serving.workers`),
each with its own models, store connection and poll loop; worker K writes the exposure log to
FILE.wK. More workers than cores is allowed, with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from ranker.errors import MtrankError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", required=True, type=Path, metavar="MODELS", help="serves MODELS/NAME/VERSION/"
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--redis", metavar="URL", help="online store in Redis (default: $REDIS_URL)")
    store.add_argument(
        "--store",
        type=Path,
        metavar="DIR",
        help="the embedded store `materialize --data DIR` filled",
    )
    parser.add_argument("--experiments", type=Path, metavar="FILE", help="A/B experiments (YAML)")
    parser.add_argument(
        "--exposure-log", type=Path, metavar="FILE", help="append scored requests here (JSON lines)"
    )
    parser.add_argument(
        "--exposure-log-max-mb",
        type=float,
        metavar="M",
        help="rotate the exposure log (FILE.YYYYMMDDTHHMMSSZ) before it grows past M MiB",
    )
    parser.add_argument(
        "--exposure-log-rotate-minutes",
        type=float,
        metavar="T",
        help="rotate the exposure log once it is T minutes old",
    )
    parser.add_argument(
        "--log-features",
        action="store_true",
        default=None,
        help="exposures also hold the feature values the model was given for the returned items",
    )
    parser.add_argument(
        "--policies",
        type=Path,
        metavar="FILE",
        help="ranking policies (YAML): fusion formulas for `policy` and `top_k`; reloaded on change",
    )
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes on the port (default 1); each loads the models itself",
    )
    parser.add_argument(
        "--poll-interval", type=float, metavar="S", help="seconds between looks for new versions"
    )
    parser.add_argument("--max-items", type=int, metavar="N", help="most candidates per request")
    parser.add_argument(
        "--store-timeout-ms", type=float, metavar="MS", help="online store timeout (default 50)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


def settings_from_args(args: argparse.Namespace) -> Any:
    """The Settings the flags (over the environment) describe; MtrankError if they are bad."""
    from pydantic import ValidationError

    from serving.settings import Settings

    given: dict[str, Any] = {
        "models_dir": args.models,
        "experiments": args.experiments,
        "exposure_log": args.exposure_log,
        "exposure_log_max_mb": args.exposure_log_max_mb,
        "exposure_log_rotate_minutes": args.exposure_log_rotate_minutes,
        "log_features": args.log_features,
        "policies": args.policies,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "poll_interval_s": args.poll_interval,
        "max_items": args.max_items,
        "store_timeout_s": None if args.store_timeout_ms is None else args.store_timeout_ms / 1e3,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.redis is not None:  # a flag beats both store settings of the environment
        given.update(redis_url=args.redis, store_dir=None)
    elif args.store is not None:
        given.update(store_dir=args.store, redis_url=None)
    elif not os.environ.get("MTRANK_REDIS_URL") and not os.environ.get("MTRANK_STORE_DIR"):
        from feature_store.connection import redis_url

        given["redis_url"] = redis_url()
    try:
        settings = Settings(**given)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise MtrankError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    if not settings.models_dir.is_dir():
        raise MtrankError(f"--models {settings.models_dir}: no such directory")
    for flag, path in (("--experiments", settings.experiments), ("--policies", settings.policies)):
        if path is not None and not path.is_file():
            raise MtrankError(f"{flag} {path}: no such file")
    if settings.experiments is not None:
        check_experiments(settings.experiments, settings.models_dir)
    if settings.policies is not None:  # its fit to the models is checked once they load
        from serving.policies import PolicySet

        PolicySet.load(settings.policies)
    if settings.exposure_log is not None and settings.exposure_log.is_dir():
        raise MtrankError(f"--exposure-log {settings.exposure_log}: is a directory, not a file")
    return settings


def check_experiments(path: Path, models_dir: Path) -> None:
    """Validate the experiments file before anything loads: its keys, and that every model it
    names has a version under MODELS (whether each one loads is checked again at startup)."""
    from serving.experiments import ExperimentsFile
    from serving.manager import ModelManager

    experiments = ExperimentsFile.load(path)
    experiments.check_models(set(ModelManager(models_dir).scan()), source=str(path))


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    from serving.logs import configure_logging

    configure_logging(args.log_level)
    if settings.store_dir is not None:  # fail now, in one line, not inside the lifespan
        from feature_store.embedded import store_path

        if not (store_path(settings.store_dir) / "dump.rdb").exists():
            raise MtrankError(
                f"--store {settings.store_dir}: no embedded online store there; run "
                f"`mtrank features materialize --data {settings.store_dir}` first"
            )
    if settings.workers > 1:
        from serving.workers import serve_workers

        return serve_workers(settings, args.log_level)

    import uvicorn

    from serving.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the service writes its own JSON access log
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises Ctrl-C after shutting down, and exits (SystemExit) when startup fails
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        server.run()
    startup_error = getattr(app.state, "startup_error", None)
    if not server.started and isinstance(startup_error, MtrankError):
        raise startup_error  # e.g. an experiment's model that failed to load: one line, exit 2
    return 0 if server.started else 1
