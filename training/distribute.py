"""Where training runs: the tf.distribute strategy picked from the environment, and precision.

- `TF_CONFIG` set with more than one worker (a TFJob on Kubernetes, or two local processes):
  MultiWorkerMirroredStrategy; each worker reads its own shard of the files.
- several GPUs: MirroredStrategy; one GPU: OneDeviceStrategy on it; otherwise the default strategy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ranker.keras_compat import keras, tf


@dataclass(frozen=True)
class Placement:
    strategy: tf.distribute.Strategy
    description: str
    num_workers: int = 1
    worker_index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0


def _cluster() -> tuple[int, int]:
    """(number of workers, this worker's index) from TF_CONFIG; (1, 0) when it is unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1, 0
    config = json.loads(raw)
    workers = len(config.get("cluster", {}).get("worker", [])) + len(
        config.get("cluster", {}).get("chief", [])
    )
    task = config.get("task", {})
    index = int(task.get("index", 0)) + (
        1 if task.get("type") == "worker" and "chief" in config.get("cluster", {}) else 0
    )
    return max(workers, 1), index


def placement_from_environment() -> Placement:
    workers, index = _cluster()
    gpus = tf.config.list_physical_devices("GPU")
    if workers > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Placement(
            strategy, f"MultiWorkerMirroredStrategy ({workers} workers)", workers, index
        )
    if len(gpus) > 1:
        return Placement(tf.distribute.MirroredStrategy(), f"MirroredStrategy ({len(gpus)} GPUs)")
    if len(gpus) == 1:
        return Placement(tf.distribute.OneDeviceStrategy("/gpu:0"), "one GPU")
    return Placement(tf.distribute.get_strategy(), "CPU")


def set_precision(mixed: bool) -> str:
    """Sets the global Keras dtype policy: mixed_float16 on GPU, mixed_bfloat16 on CPU, or float32."""
    if not mixed:
        policy = "float32"
    elif tf.config.list_physical_devices("GPU"):
        policy = "mixed_float16"
    else:
        policy = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy
