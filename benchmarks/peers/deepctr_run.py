"""DeepCTR's side of `benchmarks/peer_throughput.py`: train one model, test it, print one JSON line.

    TF_USE_LEGACY_KERAS=1 benchmarks/.venvs/deepctr/bin/python benchmarks/peers/deepctr_run.py \
        --data DIR --architecture mmoe --hparams '{"num_experts": 4, "expert_units": [64]}' \
        --epochs 3 --batch-size 1024 --learning-rate 0.001
    ... deepctr_run.py --data DIR --architecture mmoe --usual     # DeepCTR's own defaults

Runs in the peer venv (deepctr 0.9.4 on tensorflow + tf_keras, numpy, pyarrow, pyyaml) and imports
nothing of mtrank: it reads DIR/schema.yaml and the Parquet splits itself, as a DeepCTR user would.

- Data: DIR/{train,val,test}.parquet, with DIR/users.parquet and items.parquet joined in by user_id
  and item_id when they exist (an `mtrank synth` log). Categoricals (and sequences) are label-encoded
  with a vocabulary fitted on the training split: ids 1..n, 0 for a value the training split never
  had (and for sequence padding, which DeepCTR masks). Numerics: NaN -> the schema's default, the
  schema's transform (log1p, sqrt; negatives clipped to 0), then z-scored with the training split's
  mean and variance, as mtrank's input layer does. Everything is fed from numpy arrays in memory.
- Tasks: the schema's tasks without a condition, and each product as the product of its tasks'
  labels (synth: ctr = click, ctcvr = click * conversion; wide: income, married).
- Model: `--hparams` in mtrank's names (tower_units, expert_units, num_experts, bottom_units,
  levels, shared_experts, specific_experts) translated to DeepCTR's arguments, embedding_dim and
  table rows as mtrank's (the schema's vocabulary + 1, or its num_buckets), no L2, no dropout, the
  loss alone computed on training batches (mtrank's default: no training-batch metrics); or, with
  `--usual`, DeepCTR's constructor defaults (SparseFeat's embedding_dim 4, l2_reg_embedding 1e-5,
  tables as large as the training vocabulary), AUC metrics, up to `--epochs` epochs with
  EarlyStopping on val_loss (patience 2, best weights restored).
- Timing: each epoch's training steps, from epoch begin to the last training batch's end
  (validation excluded), as mtrank's trainer times them. examples_per_s is the median over epochs
  after the first (which includes tracing) of training rows / epoch seconds.

The last line of stdout is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # DeepCTR is written for Keras 2 (tf_keras)

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
import yaml
from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat
from deepctr.models.multitask import MMOE, PLE, SharedBottom

SPLITS = ("train", "val", "test")
ENTITY_TABLES = {"user_id": "users.parquet", "item_id": "items.parquet"}

# mtrank's hyperparameter name -> DeepCTR's argument, per architecture
ARGUMENTS: dict[str, tuple[Any, dict[str, str]]] = {
    "shared_bottom": (
        SharedBottom,
        {"bottom_units": "bottom_dnn_hidden_units", "tower_units": "tower_dnn_hidden_units"},
    ),
    "mmoe": (
        MMOE,
        {
            "num_experts": "num_experts",
            "expert_units": "expert_dnn_hidden_units",
            "tower_units": "tower_dnn_hidden_units",
        },
    ),
    "ple": (
        PLE,
        {
            "levels": "num_levels",
            "shared_experts": "shared_expert_num",
            "specific_experts": "specific_expert_num",
            "expert_units": "expert_dnn_hidden_units",
            "tower_units": "tower_dnn_hidden_units",
        },
    ),
}


# ---- data ------------------------------------------------------------------------------------


@dataclass
class Split:
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.labels.values())))


def read_table(data: Path, split: str) -> pa.Table:
    """DIR/split.parquet with the user and item tables' columns joined in by their ids."""
    table = pq.read_table(data / f"{split}.parquet")
    for key, filename in ENTITY_TABLES.items():
        path = data / filename
        if not path.exists() or key not in table.column_names:
            continue
        entities = pq.read_table(path)
        rows = pc.index_in(plain(table[key]), value_set=plain(entities[key]).combine_chunks())
        for name in entities.column_names:
            if name not in table.column_names:
                table = table.append_column(name, entities[name].take(rows))
    return table


def plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column with dictionary encoding undone and integers as strings (mtrank's raw values)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_integer(column.type):
        column = column.cast(pa.string())
    return column


def vocabulary(column: pa.ChunkedArray) -> pa.Array:
    """The distinct values of a training column (of a list column: of its elements)."""
    values = column.combine_chunks()
    if pa.types.is_list(values.type):
        values = pc.list_flatten(values)
    return pc.unique(plain(pa.chunked_array([values])).combine_chunks())


def encode(values: pa.ChunkedArray | pa.Array, vocabulary: pa.Array) -> np.ndarray:
    """Label ids: 1 + the value's index in `vocabulary`, 0 where it is not there."""
    index = pc.index_in(values, value_set=vocabulary)
    return (pc.fill_null(index, -1).to_numpy(zero_copy_only=False) + 1).astype(np.int32)


def padded(column: pa.ChunkedArray, vocabulary: pa.Array, max_length: int) -> np.ndarray:
    """A list column as [rows, max_length] ids, the first max_length values, 0-padded."""
    column = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
    starts = np.concatenate([[0], np.cumsum(lengths)])  # of each row's values in the flat list
    ids = encode(plain(pa.chunked_array([pc.list_flatten(column)])), vocabulary)
    out = np.zeros((len(column), max_length), dtype=np.int32)
    for position in range(max_length):
        rows = np.flatnonzero(lengths > position)
        out[rows, position] = ids[starts[rows] + position]
    return out


def numeric(column: pa.ChunkedArray, feature: dict[str, Any]) -> np.ndarray:
    """Raw values -> NaN replaced by the default -> the schema's transform."""
    values = column.to_numpy().astype(np.float64)
    values = np.where(np.isnan(values), float(feature.get("default") or 0.0), values)
    transform = feature.get("transform", "none")
    if transform == "log1p":
        return np.log1p(np.maximum(values, 0.0))
    if transform == "sqrt":
        return np.sqrt(np.maximum(values, 0.0))
    return values


def task_labels(schema: dict[str, Any]) -> dict[str, list[str]]:
    """DeepCTR's tasks: name -> the label columns whose product it predicts."""
    tasks = {t["name"]: t for t in schema["tasks"]}
    out = {name: [t["label"]] for name, t in tasks.items() if not t.get("condition")}
    for product in schema.get("products") or []:
        out[product["name"]] = [tasks[name]["label"] for name in product["of"]]
    return out


def load(data: Path, schema: dict[str, Any]) -> dict[str, Split]:
    """The three splits encoded as described in the module docstring."""
    tables = {split: read_table(data, split) for split in SPLITS}
    train = tables["train"]
    features = schema["features"]
    vocabularies = {
        f["name"]: vocabulary(train[f["name"]])
        for f in features
        if f["type"] == "categorical" or (f["type"] == "sequence" and not f.get("shared_embedding"))
    }
    splits = {split: Split({}, {}) for split in SPLITS}
    for feature in features:
        name = feature["name"]
        for split, table in tables.items():
            if feature["type"] == "categorical":
                value = encode(plain(table[name]), vocabularies[name])
            elif feature["type"] == "sequence":
                owner = feature.get("shared_embedding") or name
                value = padded(table[name], vocabularies[owner], feature["max_length"])
            else:
                value = numeric(table[name], feature).astype(np.float32)
            splits[split].features[name] = value
        if feature["type"] == "numeric" and feature.get("normalize", True):
            standardize(name, splits)
    for task, labels in task_labels(schema).items():
        for split, table in tables.items():
            product = np.ones(table.num_rows, dtype=np.float32)
            for label in labels:
                product *= table[label].to_numpy().astype(np.float32)
            splits[split].labels[task] = product
    return splits


def standardize(name: str, splits: dict[str, Split]) -> None:
    """z-scores a numeric feature in every split with the training split's mean and variance."""
    train = splits["train"].features[name].astype(np.float64)
    mean, variance = train.mean(), train.var()
    scale = 1.0 / np.sqrt((variance if variance > 1e-12 else 1.0) + 1e-6)
    for split in splits.values():
        split.features[name] = ((split.features[name] - mean) * scale).astype(np.float32)


# ---- model -----------------------------------------------------------------------------------


def feature_columns(
    schema: dict[str, Any], splits: dict[str, Split], usual: bool
) -> list[SparseFeat | DenseFeat | VarLenSparseFeat]:
    """DeepCTR's feature columns: vocabulary size = the training vocabulary + the 0 id."""
    train = splits["train"].features
    by_name = {f["name"]: f for f in schema["features"]}
    columns: list[SparseFeat | DenseFeat | VarLenSparseFeat] = []
    for feature in schema["features"]:
        name, kind = feature["name"], feature["type"]
        if kind == "numeric":
            columns.append(DenseFeat(name, 1))
            continue
        owner = by_name[feature.get("shared_embedding") or name]
        sharing = [
            f["name"]
            for f in schema["features"]
            if f["type"] != "numeric" and (f.get("shared_embedding") or f["name"]) == owner["name"]
        ]
        size = max(int(train[n].max()) for n in sharing) + 1
        if not usual:  # mtrank's table: the schema's vocabulary + an OOV row, or its hash buckets
            size = max(size, schema_table_size(owner))
        dim = {} if usual else {"embedding_dim": int(owner.get("embedding_dim", 8))}
        sparse = SparseFeat(name, size, embedding_name=owner["name"], **dim)
        if kind == "sequence":
            columns.append(VarLenSparseFeat(sparse, maxlen=feature["max_length"], combiner="mean"))
        else:
            columns.append(sparse)
    return columns


def schema_table_size(feature: dict[str, Any]) -> int:
    """Rows of mtrank's embedding table for `feature`, so the matched models are the same size."""
    if feature.get("vocabulary") is not None:
        return len(feature["vocabulary"]) + 1
    return int(feature.get("num_buckets") or 1)


def build(
    architecture: str,
    columns: list[Any],
    tasks: list[str],
    hparams: dict[str, Any],
    usual: bool,
) -> tf.keras.Model:
    """The DeepCTR model of `architecture` with mtrank's `hparams` (or DeepCTR's defaults)."""
    if architecture not in ARGUMENTS:
        raise SystemExit(f"no DeepCTR model for {architecture!r}; known: {sorted(ARGUMENTS)}")
    model, names = ARGUMENTS[architecture]
    unknown = sorted(set(hparams) - set(names))
    if unknown:
        raise SystemExit(f"{architecture}: no DeepCTR argument for hparams {unknown}")
    arguments: dict[str, Any] = {names[key]: value for key, value in hparams.items()}
    arguments = {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
    if not usual:
        arguments.update(l2_reg_embedding=0.0, l2_reg_dnn=0.0, dnn_dropout=0.0)
    return model(
        columns,
        task_types=tuple("binary" for _ in tasks),
        task_names=tuple(tasks),
        **arguments,
    )


class EpochTimer(tf.keras.callbacks.Callback):
    """Seconds from each epoch's begin to its last training batch's end (validation excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.steps: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = self.last_end = time.perf_counter()
        self.last_batch = -1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.last_batch, self.last_end = batch, time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(self.last_end - self.started)
        self.steps.append(self.last_batch + 1)


# ---- metrics ---------------------------------------------------------------------------------


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (Mann-Whitney U), tied scores sharing their average rank."""
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    _, first, counts = np.unique(ordered, return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    positive = labels > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, scores: np.ndarray) -> float:
    p = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def test_metrics(
    model: tf.keras.Model, test: Split, tasks: list[str], batch_size: int
) -> dict[str, dict[str, float]]:
    scores = model.predict(test.features, batch_size=batch_size, verbose=0)
    scores = scores if isinstance(scores, list) else [scores]
    out = {}
    for task, score in zip(tasks, scores, strict=True):
        labels, score = test.labels[task], np.asarray(score).reshape(-1)
        out[task] = {"auc": auc(labels, score), "logloss": logloss(labels, score)}
    return out


# ---- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    tf.keras.utils.set_random_seed(args.seed)
    schema = yaml.safe_load((args.data / "schema.yaml").read_text())
    started = time.perf_counter()
    splits = load(args.data, schema)
    prepare_seconds = time.perf_counter() - started
    tasks = list(task_labels(schema))
    hparams = json.loads(args.hparams)
    columns = feature_columns(schema, splits, args.usual)
    model = build(args.architecture, columns, tasks, hparams, args.usual)
    # matched: the loss alone each step, as mtrank (no metrics on training batches by default)
    metrics = {task: [tf.keras.metrics.AUC(name="auc")] for task in tasks} if args.usual else None
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=args.learning_rate),
        loss={task: "binary_crossentropy" for task in tasks},
        metrics=metrics,
    )
    timer = EpochTimer()
    callbacks: list[tf.keras.callbacks.Callback] = [timer]
    if args.usual:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=2, restore_best_weights=True
            )
        )
    train, val = splits["train"], splits["val"]
    history = model.fit(
        train.features,
        train.labels,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(val.features, val.labels),
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    rates = [train.rows / s for s in timer.seconds[1:]]
    return {
        "side": "deepctr",
        "architecture": args.architecture,
        "settings": "usual" if args.usual else "matched",
        "hparams": hparams,
        "train_rows": train.rows,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "epochs_run": len(timer.seconds),
        "epoch_seconds": timer.seconds,
        "epoch_steps": timer.steps,
        "examples_per_s": statistics.median(rates) if rates else None,
        "prepare_seconds": prepare_seconds,
        "trainable_parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
        "test": test_metrics(model, splits["test"], tasks, args.batch_size),
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": metadata.version("tf_keras"),
            "deepctr": metadata.version("deepctr"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="schema.yaml + Parquet splits")
    parser.add_argument("--architecture", required=True, choices=sorted(ARGUMENTS))
    parser.add_argument("--hparams", default="{}", help="JSON, in mtrank's hyperparameter names")
    parser.add_argument("--usual", action="store_true", help="DeepCTR's defaults, early stopping")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
