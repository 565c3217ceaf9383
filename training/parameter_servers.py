"""Parameter-server training (`training.distribute` picks it when TF_CONFIG has `ps` tasks): the
servers the `ps` and `worker` tasks run, and what the chief feeds `fit`.

Under ParameterServerStrategy only the chief runs the training program. It creates the variables
on the parameter servers (large ones split by rows across them) and Keras's ClusterCoordinator
schedules each training step on whichever worker is free (asynchronous training, Dean et al.,
"Large Scale Distributed Deep Networks", NeurIPS 2012). The other tasks run no mtrank code: they
start `tf.distribute.Server` with the cluster of TF_CONFIG and join it, TensorFlow's own recipe
for them; a TFJob removes them when the chief completes. Either command starts one:

    mtrank train --data DIR --model NAME --out MODELS   # the chief's command, in a ps/worker task
    python -m training.parameter_servers               # no data or model arguments

What the chief feeds `fit` (`coordinated_inputs`):

- training data as a `DatasetCreator` whose dataset repeats, with `steps_per_epoch` = the split's
  rows / the batch (rounded up): an epoch is that many steps over all workers together. Every
  worker builds the same dataset function (ParameterServerStrategy gives each the same
  InputContext, `input_pipeline_id` 0), so workers do not split the file into shards: each draws
  its own order of the whole split (Parquet and CSV: the reader's pieces and windows permuted
  with the seed and a pass counter that differs per worker and per pass; TFRecord: an unseeded
  shuffle). Parquet and CSV are read by a Python generator, which TensorFlow runs in the chief's
  process for every worker (the workers get the decoded chunks); TFRecord splits are read by the
  workers themselves.
- validation on the chief (`ChiefValidation`, first among the callbacks): after each epoch's steps
  have finished, the model's `test_step` over the whole validation split, once, in file order, so
  `val_loss` is the same mean over all validation rows as without parameter servers and early
  stopping reads it as before. (Keras's own validation under ParameterServerStrategy takes
  `validation_steps` batches from whichever workers are free, which repeats some rows and skips
  others.)
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import ranker  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.schema import Schema
from training.config import TrainConfig
from training.data import EntityTables, ReadOptions, count_rows, make_dataset, reader_errors
from training.distribute import parameter_server_task

SERVER_TASKS = ("ps", "worker")


def is_server_task() -> bool:
    """Whether TF_CONFIG makes this process a parameter server or a worker of parameter-server
    training (what `serve` then runs)."""
    return parameter_server_task() in SERVER_TASKS


def serve(announce: bool = True) -> NoReturn:
    """Starts this task's TensorFlow server (grpc) and blocks until the process is killed."""
    task = parameter_server_task()
    if task not in SERVER_TASKS:
        raise ConfigError(
            "TF_CONFIG: the ps and worker tasks of a cluster with ps tasks serve; this task is "
            + (repr(task) if task else "in a cluster without ps tasks")
        )
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    if announce:
        print(
            f"{resolver.task_type} {resolver.task_id} serving at {server.target}; "
            "the chief drives training",
            file=sys.stderr,
            flush=True,
        )
    server.join()
    raise SystemExit(0)  # join returns only if the server is shut down


def whole_table_costs(config: TrainConfig, embedding_l2: float) -> str | None:
    """A note on the settings that make every step touch every row of the embedding tables on the
    parameter servers (None if none is set): Adam's moments, updated whole at every step, and an
    L2 penalty on the tables, which reads them whole and gives a gradient as large."""
    costs = []
    if config.optimizer.name == "adam":
        costs.append("Adam updates every row of its moments at every step")
    if embedding_l2 > 0:
        costs.append(f"embedding_l2 {embedding_l2:g} reads every row of the hashed tables")
    if not costs:
        return None
    return (
        f"parameter servers: {' and '.join(costs)}; for tables that need parameter servers, "
        "`optimizer: {name: adagrad}` and `hparams: {embedding_l2: 0}` keep a step to the rows "
        "its batch uses (docs/deployment.md, Parameter-server training)"
    )


@dataclass
class CoordinatedInputs:
    """What the chief passes to `fit` under ParameterServerStrategy (module docstring)."""

    train: keras.utils.experimental.DatasetCreator
    steps_per_epoch: int
    validation: ChiefValidation


def coordinated_inputs(
    paths: dict[str, Path],
    schema: Schema,
    config: TrainConfig,
    tables: EntityTables | None,
    validation_data: tf.data.Dataset,
) -> CoordinatedInputs:
    """The training split as a repeating `DatasetCreator` of `config.global_batch`-row batches
    with its steps per epoch, and the chief's validation over `validation_data`."""
    with reader_errors():
        rows = count_rows(paths["train"])
    tfrecord = paths["train"].suffix == ".tfrecord"
    options = ReadOptions(
        batch_size=config.global_batch,
        shuffle=True,
        shuffle_buffer=config.shuffle_buffer,
        # a graph-level seed would give every worker the same order; the Python reader's pass
        # counter already differs per worker
        seed=None if tfrecord else config.seed,
        repeat=True,
    )
    train_path = paths["train"]

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(train_path, schema, options, tables=tables)

    return CoordinatedInputs(
        train=keras.utils.experimental.DatasetCreator(dataset_fn),
        steps_per_epoch=max(math.ceil(rows / config.global_batch), 1),
        validation=ChiefValidation(validation_data),
    )


class ChiefValidation(keras.callbacks.Callback):
    """At each epoch's end, on the chief: the epoch's training logs read from the model's metrics
    (the means over all workers' steps), then the model's `test_step` over every batch of
    `dataset`, its results added to the logs as `val_<name>` as Keras's validation does.

    Keras would log the values the last scheduled step returned, which need not be the last to
    run, and warns so every epoch; the metrics' variables live on the parameter servers and every
    step has run when `on_epoch_end` is called, so their results are the epoch's. `began` is when
    the last validation started: the end of that epoch's training steps."""

    def __init__(self, dataset: tf.data.Dataset) -> None:
        super().__init__()
        self.dataset = dataset
        self.began = time.perf_counter()
        self._step: Any = None
        self._quiet = _KerasLastStepWarning()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        tf.get_logger().addFilter(self._quiet)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        tf.get_logger().removeFilter(self._quiet)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.began = time.perf_counter()
        logs = logs if logs is not None else {}
        for metric in self.model.metrics:
            if metric.name in logs:
                logs[metric.name] = float(metric.result())
        if self._step is None:
            self._step = tf.function(self.model.test_step, reduce_retracing=True)
        self.model.reset_metrics()
        results: dict[str, Any] = {}
        with reader_errors():
            for batch in self.dataset:
                results = self._step(batch)
        logs.update({f"val_{name}": float(value) for name, value in results.items()})
        self.model.reset_metrics()


class _KerasLastStepWarning(logging.Filter):
    """Drops Keras's per-epoch warning that it logs the last scheduled step's values
    (`ChiefValidation` replaces them with the metrics' own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Could not get Model metric results" not in record.getMessage()


if __name__ == "__main__":
    try:
        serve()
    except ConfigError as err:
        print(f"training.parameter_servers: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
