"""The batch training job behind `mtrank train`: read, fit with early stopping, evaluate, export.

    DIR/train.parquet --fit--> model <--early stopping-- DIR/val.parquet
    model scores on DIR/val.parquet --fit--> per-task calibrators (training.calibration)
    model + calibrators --evaluate--> test metrics (DIR/test.parquet) of the exported scores
    model + calibrators --export--> MODELS/NAME/VERSION/{saved_model.pb, variables/, metadata.json}

Checkpoints: `BackupAndRestore` saves the run's state after every epoch under
`MODELS/.runs/NAME/`; a killed job started again with `resume=True` continues from the last
finished epoch. TensorBoard logs go to `MODELS/.runs/NAME/logs/`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ranker import balancing, registry
from ranker.contract import ExportCalibration, TrainingSummary
from ranker.errors import ConfigError, MtrankError
from ranker.keras_compat import keras, tf
from ranker.model import RankingModel, log_names
from ranker.schema import Schema
from training import calibration, parameter_servers
from training.config import TrainConfig
from training.data import (
    EntityTables,
    ReadOptions,
    count_rows,
    make_dataset,
    reader_errors,
)
from training.distribute import Placement, placement_from_environment, set_precision
from training.evaluation import (
    evaluate_file,
    evaluate_scores,
    json_safe,
    keras_scorer,
    score_dataset,
)
from training.export import write_version
from training.memory import estimated_bytes, memory_dataset
from training.negative_sampling import root_task
from training.task_balance import BalancingMonitor, balancing_summary
from training.warm_start import WarmStart, warm_start

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
    # seconds of each epoch's training steps (validation excluded), and examples seen per epoch
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_examples: list[int] = field(default_factory=list)
    warm_start: WarmStart | None = None  # what `init_from` copied


def find_split(data_dir: Path, split: str) -> Path:
    """DIR/split.parquet (or .csv, .tfrecord): the first that exists."""
    for suffix in (".parquet", ".csv", ".tfrecord"):
        path = data_dir / f"{split}{suffix}"
        if path.exists():
            return path
    raise MtrankError(f"{data_dir}: no {split}.parquet, {split}.csv or {split}.tfrecord")


def build_model(
    schema: Schema, architecture: str, config: TrainConfig, steps_per_execution: int = 1
) -> RankingModel:
    """The compiled model. `steps_per_execution` > 1 needs datasets of known length (`train`'s)."""
    model = RankingModel(
        schema,
        architecture,
        config.hparams,
        task_weights=config.task_weights,
        loss_weighting=config.loss_weighting,
        train_metrics=config.train_metrics,
        masked_loss=config.masked_loss,
    )
    optimizer = _optimizer(config)
    model.compile(
        optimizer=optimizer,
        jit_compile=config.jit_compile or None,
        steps_per_execution=steps_per_execution,
    )
    return model


def train(
    data_dir: str | Path,
    architecture: str,
    models_dir: str | Path,
    config: TrainConfig,
    name: str | None = None,
    resume: bool = False,
    verbose: bool = True,
    init_from: Path | None = None,
) -> TrainResult:
    """Trains `architecture` on DIR/train, stops early on DIR/val, fits the export's calibrators on
    DIR/val, evaluates the calibrated scores on DIR/test, exports.

    The weights `fit` ends with are saved under MODELS/.runs/NAME/trained/ before calibration; if
    calibration, evaluation or export then fails, a `TrainingKept` error says so in one line and
    `resume=True` finishes the job from those weights without training again. `init_from` (an
    export, MODELS/NAME or MODELS/NAME/VERSION) starts the model from its weights
    (`training.warm_start`).
    """
    if parameter_servers.is_server_task():  # a ps or worker task: the chief trains
        parameter_servers.serve()
    started = time.perf_counter()
    data_dir, models_dir = Path(data_dir), Path(models_dir)
    if config.architecture is not None and config.architecture != architecture:
        raise ConfigError(
            f"the config says architecture {config.architecture!r} but --model is {architecture!r}"
        )
    registry.get(architecture)  # an unknown name fails before any data is read
    balancing.parse(config.loss_weighting)  # so does an unknown strategy or a bad parameter
    name = name or architecture
    schema = Schema.load(data_dir / "schema.yaml")
    _check_monitor(config, schema, architecture)
    if config.negative_sampling_rate < 1.0 and root_task(schema) is None:
        raise ConfigError(
            f"negative_sampling_rate: {config.negative_sampling_rate} needs a served binary task "
            "without a condition (whose negatives were sampled); the schema has none"
        )
    paths = {split: find_split(data_dir, split) for split in SPLITS}
    run_dir = models_dir / ".runs" / name
    kept = KeptRun(run_dir / "trained")
    finished = kept.load(architecture, schema) if resume else None
    if finished is not None:
        config = TrainConfig.model_validate(finished.config)
        _say(verbose, f"resuming {name}: trained weights found in {kept.path}, not training again")
    else:
        with reader_errors():
            config = config.resolved(count_rows(paths["train"]))
    keras.utils.set_random_seed(config.seed)
    policy = set_precision(config.mixed_precision)
    placement = placement_from_environment()
    if finished is None:  # a resumed run only evaluates and exports
        _say(
            verbose,
            f"training {name} ({architecture}) on {placement.description}, precision {policy}, "
            f"batch {config.global_batch}, at most {config.epochs} epochs",
        )

    tables = _entity_tables(data_dir, schema, paths["train"])
    with reader_errors():  # a test split that cannot be read fails now, not after training
        make_dataset(paths["test"], schema, ReadOptions(), tables=tables)
    # a worker's shard has no length Keras could loop over: one step per call there (a
    # parameter-server worker's reader repeats: its steps are counted by the chief)
    steps = config.steps_per_execution
    if placement.num_workers > 1 and not placement.parameter_servers:
        steps = 1
    with placement.strategy.scope():
        model = build_model(schema, architecture, config, steps)
    if placement.parameter_servers and finished is None:
        note = parameter_servers.whole_table_costs(config, model.hparams.embedding_l2)
        _say(verbose and note is not None, note or "")
    head_options = ReadOptions(batch_size=config.adapt_rows, labels=False)
    with reader_errors():
        head = next(iter(make_dataset(paths["train"], schema, head_options, tables=tables)))
    with placement.strategy.scope():
        model.adapt([head])
        # builds every layer, so BackupAndRestore can restore a killed run into it (traced under
        # parameter servers, where an eager call copies every table into the chief's memory)
        (tf.function(model) if placement.parameter_servers else model)(head)
    warm = None
    if init_from is not None and finished is None:
        with placement.strategy.scope():
            warm = warm_start(model, init_from, head)
        _say(verbose, warm.describe())
    example = {name: value[:1] for name, value in head.items()}  # builds the chief's copy
    del head

    if finished is None:
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)
        finished = _fit(model, paths, schema, config, placement, tables, run_dir, verbose)
        # every worker takes part in saving (a collective under MultiWorkerMirroredStrategy);
        # the others write to a scratch directory, as export does
        if placement.is_chief:
            kept.save(model, finished)
        else:
            _save_elsewhere(model, finished)
    else:
        model.load_weights(kept.weights).expect_partial()
    trained = model
    if placement.parameter_servers:
        # the chief's copy with whole tables (a SavedModel traced through a table's shards does
        # not load right): calibrated, evaluated and exported without reading the servers
        model = _chief_copy(schema, architecture, config, example, kept)

    try:
        fitted = _calibrate(model, schema, config, paths["val"], tables, verbose)
        scorer = calibration.calibrated_scorer(keras_scorer(model), fitted, schema)
        test, test_scores = evaluate_file(schema, scorer, paths["test"], tables=tables)
        fitted = calibration.checked(fitted, "test", test)
        if any(t.type == "binary" for t in schema.tasks) and not any(
            "gauc" in v for v in test.values()
        ):
            _say(
                verbose,
                f"GAUC not reported: {paths['test'].name} has no user column "
                f"{schema.keys.user!r} (schema.yaml keys.user names it)",
            )
        summary = TrainingSummary(
            architecture=architecture,
            train_config=config.model_dump(mode="json"),
            hparams=model.hparams.model_dump(mode="json"),
            test_metrics=json_safe(test),
            data={split: str(path.resolve()) for split, path in paths.items()},
            placement=placement.description,
            precision=policy,
            epochs_run=finished.epochs_run,
            best_epoch=finished.best_epoch,
            balancing=balancing_summary(config.loss_weighting, finished.history),
            calibration=fitted,
            **({} if warm is None else {"init_from": warm.to_json()}),
        )
        version, path = write_version(
            model, models_dir / name, summary, paths.values(), placement.is_chief
        )
    except Exception as err:
        if not placement.is_chief:
            raise
        raise TrainingKept(_one_line(err), kept.path) from err
    if placement.is_chief and run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    return TrainResult(
        name,
        version,
        path,
        test,
        finished.history,
        time.perf_counter() - started,
        test_scores,
        trained,
        finished.epoch_seconds,
        finished.epoch_examples,
        warm,
    )


def _fit(
    model: RankingModel,
    paths: dict[str, Path],
    schema: Schema,
    config: TrainConfig,
    placement: Placement,
    tables: EntityTables | None,
    run_dir: Path,
    verbose: bool,
) -> FitOutcome:
    """`model.fit` with early stopping (restoring the best epoch) and per-epoch backups.

    Under parameter servers (`training.parameter_servers`) the workers read repeating copies of
    the training split for `steps_per_epoch` steps an epoch, and the chief validates."""
    if placement.parameter_servers:
        chief = Placement(tf.distribute.get_strategy(), "chief")  # the chief reads val itself
        val_data = _dataset(paths["val"], schema, config, chief, tables, shuffle=False)
        coordinated = parameter_servers.coordinated_inputs(paths, schema, config, tables, val_data)
        train_data: Any = coordinated.train
        keras_validation, steps_per_epoch = None, coordinated.steps_per_epoch
        chief_validation: list[keras.callbacks.Callback] = [coordinated.validation]
        probe = None  # the cosines' tape would run on the chief, reading every shard
    else:
        train_data = _dataset(paths["train"], schema, config, placement, tables, shuffle=True)
        keras_validation = _dataset(paths["val"], schema, config, placement, tables, shuffle=False)
        steps_per_epoch, chief_validation = None, []
        # one fixed training batch for the per-epoch gradient cosines (single worker: a worker's
        # shard cannot be read outside the strategy's own iteration)
        probe = next(iter(train_data)) if placement.num_workers == 1 else None
    callbacks = [
        *chief_validation,  # first: early stopping reads the val_ logs it adds
        BalancingMonitor(probe),
        *_callbacks(config, run_dir, verbose),
    ]
    progress = next(c for c in callbacks if isinstance(c, Progress))
    progress.validation = next(iter(chief_validation), None)
    stopping = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    with reader_errors():
        history = model.fit(
            train_data,
            validation_data=keras_validation,
            steps_per_epoch=steps_per_epoch,
            epochs=config.epochs,
            callbacks=callbacks,
            verbose=0,
        )
    epochs_run = len(history.history.get("loss", []))
    best = epochs_run
    if stopping is not None and stopping.best_epoch is not None and stopping.best_weights:
        best = int(stopping.best_epoch) + 1
    examples = [steps * config.global_batch for steps in progress.epoch_steps]
    return FitOutcome(
        config=config.model_dump(mode="json"),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        epochs_run=epochs_run,
        best_epoch=best,
        epoch_seconds=list(progress.epoch_seconds),
        epoch_examples=examples,
    )


def _chief_copy(
    schema: Schema,
    architecture: str,
    config: TrainConfig,
    example: dict[str, tf.Tensor],
    kept: KeptRun,
) -> RankingModel:
    """The trained model again, its variables whole and held by this process: the same layers
    built on `example`, the weights `kept` saved (a checkpoint stores a sharded table as slices
    of the whole, and restores them into one variable)."""
    copy = build_model(schema, architecture, config)
    copy(example)
    # every variable of the copy restored; the optimizer's slots in the checkpoint are left
    copy.load_weights(kept.weights).assert_existing_objects_matched().expect_partial()
    return copy


def _calibrate(
    model: RankingModel,
    schema: Schema,
    config: TrainConfig,
    val_path: Path,
    tables: EntityTables | None,
    verbose: bool,
) -> ExportCalibration:
    """The export's calibrators fitted on the model's validation scores, with their validation
    figures; a task left uncalibrated is said on stderr even with `verbose` off."""
    with reader_errors():
        dataset = make_dataset(val_path, schema, ReadOptions(batch_size=8192), tables=tables)
    raw, labels = score_dataset(keras_scorer(model), dataset)
    fitted = calibration.fit(schema, config, raw, labels)
    exported = calibration.export_outputs(fitted, schema, raw)
    scores = {name: value.numpy() for name, value in exported.items()}
    fitted = calibration.checked(fitted, "val", evaluate_scores(schema, scores, labels))
    for name, line in calibration.describe(fitted).items():
        _say(verbose or fitted.tasks[name].reason is not None, line)
    return fitted


class TrainingKept(MtrankError):
    """Calibration, evaluation or export failed after `fit`; the trained weights are on disk for
    `--resume`."""

    def __init__(self, problem: str, kept: Path) -> None:
        super().__init__(
            f"{problem}; the trained weights are kept in {kept}: run the same command with "
            "--resume to evaluate and export them without training again"
        )
        self.kept = kept


@dataclass
class FitOutcome:
    """What `fit` produced besides the weights: the resolved config, history and timings."""

    config: dict[str, Any]
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    epoch_seconds: list[float]
    epoch_examples: list[int]


@dataclass
class KeptRun:
    """The weights a finished `fit` left under MODELS/.runs/NAME/trained/, with what made them."""

    path: Path

    @property
    def weights(self) -> str:
        return str(self.path / "weights")

    def save(self, model: RankingModel, outcome: FitOutcome) -> None:
        """Writes the weights, then `fit.json` last: a half-written directory is never taken."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)
        model.save_weights(self.weights)
        record = {
            "architecture": model.architecture,
            "schema": model.schema.to_dict(),
            **asdict(outcome),
        }
        (self.path / "fit.json").write_text(json.dumps(record, indent=1))

    def load(self, architecture: str, schema: Schema) -> FitOutcome | None:
        """The outcome of a finished `fit` of this architecture and schema, if one is kept."""
        record_file = self.path / "fit.json"
        if not record_file.exists():
            return None
        record = json.loads(record_file.read_text())
        if record.pop("architecture") != architecture:
            raise ConfigError(
                f"{self.path}: the kept weights are of another architecture; train without --resume"
            )
        if Schema.from_dict(record.pop("schema")) != schema:
            raise ConfigError(
                f"{self.path}: the kept weights were trained with another schema.yaml; "
                "train without --resume"
            )
        return FitOutcome(**record)


def _save_elsewhere(model: RankingModel, outcome: FitOutcome) -> None:
    """A non-chief worker's part in saving the trained weights, written to a scratch directory."""
    scratch = Path(tempfile.mkdtemp(prefix="mtrank-worker-"))
    try:
        KeptRun(scratch / "trained").save(model, outcome)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _one_line(err: BaseException) -> str:
    """An error as one line: an MtrankError's own message, else its type and first line."""
    if isinstance(err, MtrankError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"export failed: {where}{err.strerror}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _dataset(
    path: Path,
    schema: Schema,
    config: TrainConfig,
    placement: Placement,
    tables: EntityTables | None,
    shuffle: bool,
) -> tf.data.Dataset:
    """One worker's shard of a split, batched per worker (the global batch split across workers).

    A single worker's split that fits `config.memory_budget` is read once into memory
    (`training.memory`); anything else streams from the file every epoch."""
    options = ReadOptions(
        batch_size=max(config.global_batch // placement.num_workers, 1),
        shuffle=shuffle,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
        num_shards=placement.num_workers,
        shard_index=placement.worker_index,
    )
    if placement.num_workers > 1:
        # each worker already reads its own shard: no auto-sharding on top of it
        distribute = tf.data.Options()
        distribute.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
        return make_dataset(path, schema, options, tables=tables).with_options(distribute)
    with reader_errors():
        rows = count_rows(path)
    if estimated_bytes(schema, rows) <= config.memory_budget:
        return memory_dataset(
            path, schema, options.batch_size, shuffle=shuffle, seed=config.seed, tables=tables
        )
    # a known length lets Keras run several steps per call (steps_per_execution)
    batches = math.ceil(rows / options.batch_size)
    dataset = make_dataset(path, schema, options, tables=tables)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


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
    logged = log_names(schema, architecture, config.train_metrics)
    for name in schema.auxiliary_outputs:
        if config.early_stopping.enabled and monitor.removeprefix("val_").startswith(f"{name}_"):
            raise ConfigError(
                f"early_stopping.monitor: {monitor!r} is auxiliary task {name!r}'s; an auxiliary "
                f"task never stops training (monitor a served task's metric, or val_loss)"
            )
    if config.early_stopping.enabled and monitor not in logged:
        hint = ""
        if f"val_{monitor}" in logged:
            hint = " (training-data metrics are logged with train_metrics: true)"
        raise ConfigError(
            f"early_stopping.monitor: {monitor!r} is not logged by this model{hint}; "
            f"choose one of {logged}"
        )


def _optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Keras 2's fused optimizers (`keras.optimizers.legacy`): one ResourceApplyAdam kernel per
    variable, where the newer Python-level update runs about 27 small ops per variable every step.
    Same update rule; the shared-bottom step of benchmarks/peer_throughput.py went 14.2 -> 11.7 ms."""
    legacy = keras.optimizers.legacy
    classes = {
        "adam": legacy.Adam,
        "adagrad": legacy.Adagrad,
        "sgd": legacy.SGD,
        "rmsprop": legacy.RMSprop,
    }
    settings: dict[str, Any] = {"learning_rate": config.optimizer.learning_rate}
    if config.optimizer.clipnorm is not None:
        settings["clipnorm"] = config.optimizer.clipnorm
    return classes[config.optimizer.name](**settings)


def _callbacks(config: TrainConfig, run_dir: Path, verbose: bool) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), update_freq="epoch"),
        Progress(config.epochs, config.global_batch, enabled=verbose),
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
        # logs stay tensors: Keras would otherwise copy every metric to numpy after each step
        self._supports_tf_logs = True
        self.epochs, self.batch_size, self.enabled, self.every = epochs, batch_size, enabled, every
        self.started = time.perf_counter()
        # the training steps' wall time of each epoch (validation excluded) and its step count
        self.epoch_seconds: list[float] = []
        self.epoch_steps: list[int] = []
        # under parameter servers a batch hook fires when its step is scheduled, not run: the
        # epoch's steps have all run when the chief's validation begins
        self.validation: parameter_servers.ChiefValidation | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch, self.started = epoch, time.perf_counter()
        self.last_batch, self.last_step_end = -1, self.started

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.last_batch, self.last_step_end = batch, time.perf_counter()
        if self.enabled and batch % self.every == 0 and sys.stderr.isatty():
            rate = (batch + 1) * self.batch_size / max(time.perf_counter() - self.started, 1e-9)
            value = (logs or {}).get("loss")  # a RemoteValue under parameter servers
            loss = float(value) if isinstance(value, tf.Tensor | float) else float("nan")
            print(
                f"\repoch {self.epoch + 1}/{self.epochs}  step {batch + 1}  loss {loss:.4f}  "
                f"{rate / 1000:.1f}k examples/s",
                end="",
                file=sys.stderr,
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        steps_end = self.last_step_end if self.validation is None else self.validation.began
        self.epoch_seconds.append(steps_end - self.started)
        self.epoch_steps.append(self.last_batch + 1)
        if not self.enabled:
            return
        seconds = time.perf_counter() - self.started
        shown = "  ".join(
            f"{k} {v:.4f}"
            for k, v in sorted((logs or {}).items())
            if "auc" in k or k in ("loss", "val_loss") or k.endswith("_weight") or "cosine_" in k
        )
        end = "\n" if sys.stderr.isatty() else ""
        print(f"{end}epoch {epoch + 1}/{self.epochs}  {seconds:.1f}s  {shown}", file=sys.stderr)


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)
