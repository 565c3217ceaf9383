"""Training throughput: examples/second of every architecture, and the Parquet reader vs in-memory tensors.

    python benchmarks/train_throughput.py                 # 1M synthetic rows, all architectures
    python benchmarks/train_throughput.py --rows 200000 --architectures mmoe,ple --steps 30

For each architecture: `fit` on the streaming Parquet reader (shuffled, as `mtrank train` feeds it),
timing `--steps` batches after `--warmup` batches (tracing and the first pipeline fill excluded).
For `--reader-model`: the same model fed from the same rows already in memory as tensors cut
into batches (each step one slice of a resident tensor), measured the same way in the same process; the reader/in-memory ratio
must stay >= 0.9 (the reader is not the bottleneck). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import ranker  # noqa: F401  (Keras 2 before TensorFlow loads)
from ranker import registry
from ranker.keras_compat import keras, tf
from ranker.schema import Schema
from training.cli import main as mtrank
from training.config import TrainConfig
from training.data import ReadOptions, make_dataset, read_tensors
from training.distribute import set_precision
from training.trainer import build_model


class StepTimer(keras.callbacks.Callback):
    """Wall time of batches [warmup, warmup + steps)."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup, self.start, self.end, self.batches = warmup, 0.0, 0.0, 0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.end, self.batches = time.perf_counter(), batch + 1


def measure(
    model: Any, dataset: tf.data.Dataset, warmup: int, steps: int, batch_size: int
) -> float:
    timer = StepTimer(warmup)
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0)
    return steps * batch_size / (timer.end - timer.start)


def fresh_model(schema: Schema, name: str, batch_size: int, sample: dict[str, tf.Tensor]) -> Any:
    tf.keras.backend.clear_session()
    model = build_model(schema, name, TrainConfig(batch_size=batch_size))
    model.adapt([sample])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="an `mtrank synth` directory (default: synthesize --rows)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--architectures", default=",".join(registry.names()))
    parser.add_argument("--reader-model", default="mmoe")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json"
    )
    args = parser.parse_args()

    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="mtrank-bench-"))
        mtrank(["synth", "--out", str(data), "--rows", str(args.rows)])
    schema = Schema.load(data / "schema.yaml")
    policy = set_precision(args.mixed_precision)
    train_file = data / "train.parquet"
    reader = make_dataset(
        train_file,
        schema,
        ReadOptions(batch_size=args.batch_size, shuffle=True, seed=0, repeat=True),
    )
    sample = next(iter(reader))[0]
    results: dict[str, Any] = {"architectures": {}}
    print(f"{'architecture':<14} {'params':>10} {'examples/s':>12}")
    for name in args.architectures.split(","):
        model = fresh_model(schema, name, args.batch_size, sample)
        rate = measure(model, reader, args.warmup, args.steps, args.batch_size)
        params = int(sum(v.shape.num_elements() for v in model.trainable_variables))
        results["architectures"][name] = {
            "examples_per_second": rate,
            "trainable_parameters": params,
        }
        print(f"{name:<14} {params:>10,} {rate:>12,.0f}")

    # In memory: the same rows, already cut into batches, so each step is one slice of a resident
    # tensor (no per-example work): the fastest input there is, the ceiling for the reader.
    batches = args.warmup + args.steps
    rows = batches * args.batch_size
    features, labels = read_tensors(train_file, schema)

    def batched(tensors: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {
            k: tf.reshape(v[:rows], [batches, args.batch_size, *v.shape[1:]])
            for k, v in tensors.items()
        }

    in_memory = tf.data.Dataset.from_tensor_slices((batched(features), batched(labels))).repeat()
    del features, labels
    rates = {}
    for label, dataset in (("in_memory", in_memory), ("parquet_reader", reader)):
        model = fresh_model(schema, args.reader_model, args.batch_size, sample)
        rates[label] = measure(model, dataset, args.warmup, args.steps, args.batch_size)
    ratio = rates["parquet_reader"] / rates["in_memory"]
    results["reader_vs_in_memory"] = {"model": args.reader_model, **rates, "ratio": ratio}
    print(
        f"\n{args.reader_model}: in-memory {rates['in_memory']:,.0f}/s, "
        f"Parquet reader {rates['parquet_reader']:,.0f}/s, ratio {ratio:.2f} (target >= 0.9)"
    )

    results["setup"] = {
        "train_rows": pq.ParquetFile(train_file).metadata.num_rows,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "precision": policy,
        "devices": [d.name for d in tf.config.list_physical_devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
