"""The service's settings: `MTRANK_*` environment variables, overridden by `mtrank serve` flags.

Read once, when `Settings()` is built (by the CLI or a test), never at import. Tests build them
directly: `create_app(Settings(models_dir=path, store_dir=data, poll_interval_s=0))`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything `create_app` needs. Env var: `MTRANK_` + the field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="MTRANK_", extra="forbid", frozen=True)

    # ---- what is served ------------------------------------------------------------------------
    models_dir: Path = Field(description="MODELS: serves MODELS/NAME/VERSION/ for every NAME")
    default_model: str | None = Field(
        default=None,
        description="model of a /v1/rank request that names none (default: the only model, "
        "else the first by name)",
    )
    poll_interval_s: float = Field(
        default=5.0, ge=0, description="how often to look for new versions; 0 turns polling off"
    )
    warmup_rows: int = Field(default=16, ge=1, le=10_000, description="rows of a warmup batch")
    model_threads: int = Field(
        default=4,
        ge=1,
        le=64,
        description="threads that call SavedModels (off the event loop), per worker process",
    )
    model_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="calls one model version runs at once, per worker process; requests "
        "beyond wait and are scored together (default: the TensorFlow threads: tf_threads, "
        "else the cores)",
    )
    model_batch_rows: int = Field(
        default=2048,
        ge=0,
        description="requests that wait for a busy model are scored together, in one call of "
        "up to this many rows (a larger request runs alone); 0: one call per request",
    )
    tf_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="TensorFlow's intra-op and inter-op threads in each process (default: "
        "TensorFlow's own, one per core; with workers: cores // workers)",
    )

    # ---- the online store (at most one of redis_url and store_dir) --------------------------
    redis_url: str | None = Field(default=None, description="Redis URL of the online store")
    store_dir: Path | None = Field(
        default=None, description="data directory whose embedded store `materialize` filled"
    )
    store_namespace: str = "mtrank"
    store_timeout_s: float = Field(default=0.05, gt=0, le=10)
    store_cache_rows: int = Field(
        default=10_000,
        ge=0,
        description="users (and items, with store_cache_items) kept decoded in process; 0: off",
    )
    store_cache_items: bool = Field(
        default=False,
        description="also cache items: pays only for high hit ratios (benchmarks/store_latency.py)",
    )
    store_cache_ttl_s: float = Field(default=30.0, gt=0)
    store_retry_after_s: float = Field(
        default=1.0, ge=0, description="after a store failure, degrade at once for this long"
    )

    # ---- limits and security ---------------------------------------------------------------
    max_items: int = Field(default=2000, ge=1, description="most candidates per request")
    max_body_bytes: int = Field(default=4 << 20, ge=1024, description="largest request body")
    api_key: SecretStr | None = Field(
        default=None,
        description="required (X-API-Key or Authorization: Bearer) on admin endpoints; without "
        "one, admin endpoints answer loopback clients only",
    )

    # ---- A/B experiments (serving/experiments.py, serving/exposure/) -----------------------
    experiments: Path | None = Field(
        default=None, description="experiments file (YAML): variants, weights, shadow models"
    )
    exposure_log: Path | None = Field(
        default=None, description="append one JSON line per scored /v1/rank request here"
    )
    exposure_queue: int = Field(
        default=100_000,
        ge=1,
        description="exposures waiting for the writer thread at most; beyond, they are dropped",
    )
    exposure_log_max_mb: float | None = Field(
        default=None, gt=0, description="rotate the exposure log before it grows past this (MiB)"
    )
    exposure_log_rotate_minutes: float | None = Field(
        default=None, gt=0, description="rotate the exposure log once it is this old (minutes)"
    )
    log_features: bool = Field(
        default=False,
        description="exposures also hold the feature values the model was given (returned rows)",
    )

    # ---- ranking policies (serving/policies.py) ---------------------------------------------
    policies: Path | None = Field(
        default=None,
        description="policies file (YAML): named fusion formulas; reloaded when it changes",
    )

    # ---- process --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="processes serving the port (uvicorn's supervisor, serving/workers.py); "
        "1 serves in the `mtrank serve` process itself",
    )
    access_log: bool = True
    gc_freeze: bool = Field(
        default=True,
        description="gc.freeze() after models load: long-lived objects leave the collector's "
        "generations, so full collections stop adding tens of ms to the tail",
    )

    @model_validator(mode="after")
    def _one_store(self) -> Settings:
        if self.redis_url is not None and self.store_dir is not None:
            raise ValueError("give at most one of redis_url (--redis) and store_dir (--store)")
        return self

    @model_validator(mode="after")
    def _exposure_options(self) -> Settings:
        if self.exposure_log is None:
            for name, flag in _NEED_EXPOSURE_LOG.items():
                if getattr(self, name) not in (None, False):
                    raise ValueError(f"{flag} ({name}) needs --exposure-log (exposure_log)")
        return self


_NEED_EXPOSURE_LOG = {
    "log_features": "--log-features",
    "exposure_log_max_mb": "--exposure-log-max-mb",
    "exposure_log_rotate_minutes": "--exposure-log-rotate-minutes",
}
