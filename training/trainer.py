"""The batch training job behind `mtrank train`: read, fit with early stopping, evaluate, export.

    DIR/train.parquet --fit--> model <--early stopping-- DIR/val.parquet
    model --evaluate--> test metrics (DIR/test.parquet)
    model --export--> MODELS/NAME/VERSION/{saved_model.pb, variables/, metadata.json}

Checkpoints: `BackupAndRestore` saves the run's state after every epoch under
`MODELS/.runs/NAME/`; a killed job started again with `resume=True` continues from the last
finished epoch. TensorBoard logs go to `MODELS/.runs/NAME/logs/`.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ranker import registry
from ranker.errors import ConfigError, MtrankError
from ranker.keras_compat import keras, tf
from ranker.model import RankingModel, log_names
from ranker.schema import Schema
from training.config import TrainConfig
from training.data import EntityTables, ReadOptions, make_dataset, reader_errors
from training.distribute import Placement, placement_from_environment, set_precision
from training.evaluation import evaluate_file, keras_scorer
from training.export import write_version

SPLITS = ("train", "val", "test")


@dataclass
class TrainResult:
    name: str
    version: int
    path: Path
    test: dict[str, dict[str, float]]
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    test_scores: dict[str, Any] = field(default_factory=dict)
    model: RankingModel | None = None  # the trained Keras model (e.g. for gate diagnostics)


def find_split(data_dir: Path, split: str) -> Path:
    """DIR/split.parquet (or .csv, .tfrecord): the first that exists."""
    for suffix in (".parquet", ".csv", ".tfrecord"):
        path = data_dir / f"{split}{suffix}"
        if path.exists():
            return path
    raise MtrankError(f"{data_dir}: no {split}.parquet, {split}.csv or {split}.tfrecord")


def build_model(schema: Schema, architecture: str, config: TrainConfig) -> RankingModel:
    model = RankingModel(
        schema,
        architecture,
        config.hparams,
        task_weights=config.task_weights,
        loss_weighting=config.loss_weighting,
    )
    optimizer = _optimizer(config)
    model.compile(optimizer=optimizer, jit_compile=config.jit_compile or None)
    return model


def train(
    data_dir: str | Path,
    architecture: str,
    models_dir: str | Path,
    config: TrainConfig,
    name: str | None = None,
    resume: bool = False,
    verbose: bool = True,
) -> TrainResult:
    """Trains `architecture` on DIR/train, stops early on DIR/val, evaluates on DIR/test, exports."""
    started = time.perf_counter()
    data_dir, models_dir = Path(data_dir), Path(models_dir)
    if config.architecture is not None and config.architecture != architecture:
        raise ConfigError(
            f"the config says architecture {config.architecture!r} but --model is {architecture!r}"
        )
    registry.get(architecture)  # an unknown name fails before any data is read
    name = name or architecture
    schema = Schema.load(data_dir / "schema.yaml")
    _check_monitor(config, schema, architecture)
    paths = {split: find_split(data_dir, split) for split in SPLITS}
    keras.utils.set_random_seed(config.seed)
    policy = set_precision(config.mixed_precision)
    placement = placement_from_environment()
    _say(
        verbose, f"training {name} ({architecture}) on {placement.description}, precision {policy}"
    )

    tables = _entity_tables(data_dir, schema, paths["train"])
    train_data = _dataset(paths["train"], schema, config, placement, tables, shuffle=True)
    val_data = _dataset(paths["val"], schema, config, placement, tables, shuffle=False)

    with placement.strategy.scope():
        model = build_model(schema, architecture, config)
    head_options = ReadOptions(batch_size=config.adapt_rows, labels=False)
    with reader_errors():
        head = next(iter(make_dataset(paths["train"], schema, head_options, tables=tables)))
    with placement.strategy.scope():
        model.adapt([head])
        model(head)  # builds every layer, so BackupAndRestore can restore a killed run into it
    del head

    run_dir = models_dir / ".runs" / name
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    callbacks = _callbacks(config, run_dir, verbose)
    with reader_errors():
        history = model.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            callbacks=callbacks,
            verbose=0,
        )

    test, test_scores = evaluate_file(schema, keras_scorer(model), paths["test"], tables=tables)
    metadata = {
        "architecture": architecture,
        "train_config": config.model_dump(mode="json"),
        "hparams": model.hparams.model_dump(mode="json"),
        "test_metrics": test,
        "data": {split: str(path.resolve()) for split, path in paths.items()},
        "placement": placement.description,
        "precision": policy,
        "epochs_run": len(history.history.get("loss", [])),
    }
    version, path = write_version(
        model, models_dir / name, metadata, paths.values(), placement.is_chief
    )
    if placement.is_chief and run_dir.exists():
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return TrainResult(
        name,
        version,
        path,
        test,
        dict(history.history),
        time.perf_counter() - started,
        test_scores,
        model,
    )


def _dataset(
    path: Path,
    schema: Schema,
    config: TrainConfig,
    placement: Placement,
    tables: EntityTables | None,
    shuffle: bool,
) -> tf.data.Dataset:
    """One worker's shard of a split, batched per worker (the global batch split across workers)."""
    options = ReadOptions(
        batch_size=max(config.batch_size // placement.num_workers, 1),
        shuffle=shuffle,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
        num_shards=placement.num_workers,
        shard_index=placement.worker_index,
    )
    dataset = make_dataset(path, schema, options, tables=tables)
    if placement.num_workers > 1:
        # each worker already reads its own shard: no auto-sharding on top of it
        distribute = tf.data.Options()
        distribute.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        dataset = dataset.with_options(distribute)
    return dataset


def _steps(path: Path, global_batch: int) -> int:
    """Full global batches in a Parquet split: the steps every worker runs per epoch."""
    if path.suffix != ".parquet":
        raise ConfigError(f"{path}: multi-worker training reads Parquet splits only")
    return max(pq.ParquetFile(path).metadata.num_rows // global_batch, 1)


def _entity_tables(data_dir: Path, schema: Schema, train_file: Path) -> EntityTables | None:
    """The user/item tables, loaded once for all splits, for the features the impressions lack."""
    if train_file.suffix != ".parquet":
        return None
    columns = set(pq.read_schema(train_file).names)
    keys = {schema.keys.user, schema.keys.item}
    needed = [f for f in schema.features if f.entity != "context" and f.name not in columns | keys]
    return EntityTables.load(data_dir, schema, needed) if needed else None


def _check_monitor(config: TrainConfig, schema: Schema, architecture: str) -> None:
    """An early-stopping monitor the model never logs is an error (Keras would only warn)."""
    monitor = config.early_stopping.monitor
    names = log_names(schema, architecture)
    logged = [f"{prefix}{name}" for prefix in ("val_", "") for name in names]
    if config.early_stopping.enabled and monitor not in logged:
        raise ConfigError(
            f"early_stopping.monitor: {monitor!r} is not logged by this model; "
            f"choose one of {logged}"
        )


def _optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    classes = {
        "adam": keras.optimizers.Adam,
        "adagrad": keras.optimizers.Adagrad,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    settings: dict[str, Any] = {"learning_rate": config.optimizer.learning_rate}
    if config.optimizer.clipnorm is not None:
        settings["clipnorm"] = config.optimizer.clipnorm
    return classes[config.optimizer.name](**settings)


def _callbacks(config: TrainConfig, run_dir: Path, verbose: bool) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), update_freq="epoch"),
        Progress(config.epochs, config.batch_size, enabled=verbose),
    ]
    if config.early_stopping.enabled:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=config.early_stopping.monitor,
                mode=config.early_stopping.direction,
                patience=config.early_stopping.patience,
                min_delta=config.early_stopping.min_delta,
                restore_best_weights=True,
                verbose=0,
            )
        )
    return callbacks


class Progress(keras.callbacks.Callback):
    """A one-line progress display on stderr: epoch, step, loss, examples/s; metrics per epoch."""

    def __init__(self, epochs: int, batch_size: int, enabled: bool = True, every: int = 20) -> None:
        super().__init__()
        self.epochs, self.batch_size, self.enabled, self.every = epochs, batch_size, enabled, every
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch, self.started = epoch, time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.enabled and batch % self.every == 0 and sys.stderr.isatty():
            rate = (batch + 1) * self.batch_size / max(time.perf_counter() - self.started, 1e-9)
            loss = (logs or {}).get("loss", float("nan"))
            print(
                f"\repoch {self.epoch + 1}/{self.epochs}  step {batch + 1}  loss {loss:.4f}  "
                f"{rate / 1000:.1f}k examples/s",
                end="",
                file=sys.stderr,
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        seconds = time.perf_counter() - self.started
        shown = "  ".join(
            f"{k} {v:.4f}"
            for k, v in sorted((logs or {}).items())
            if "auc" in k or k == "loss" or k == "val_loss"
        )
        end = "\n" if sys.stderr.isatty() else ""
        print(f"{end}epoch {epoch + 1}/{self.epochs}  {seconds:.1f}s  {shown}", file=sys.stderr)


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)
