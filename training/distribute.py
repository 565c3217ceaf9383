"""Where training runs: the tf.distribute strategy picked from the environment, and precision.

- `TF_CONFIG` whose cluster has `ps` tasks (a TFJob with PS replicas, or processes you start):
  ParameterServerStrategy (asynchronous, the coordinator design of Dean et al., "Large Scale
  Distributed Deep Networks", NeurIPS 2012). The `chief` task coordinates: it builds the model,
  whose variables live on the parameter servers, every one of at least `MIN_SHARD_BYTES` split
  by rows across them (so a large embedding table is a ShardedVariable, a block of rows on each
  server), and schedules training steps on the workers. `ps` and `worker` tasks only run a
  TensorFlow server (`training.parameter_servers`).
- `TF_CONFIG` set with more than one worker and no `ps` task: MultiWorkerMirroredStrategy; each
  worker reads its own shard of the files.
- several GPUs: MirroredStrategy; one GPU: OneDeviceStrategy on it; otherwise the default strategy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf

# a variable smaller than this stays whole on one parameter server (TensorFlow's default for
# MinSizePartitioner); a larger one is split by rows into up to one shard per server, each at
# least this big
MIN_SHARD_BYTES = 256 << 10


@dataclass(frozen=True)
class Placement:
    strategy: tf.distribute.Strategy
    description: str
    num_workers: int = 1
    worker_index: int = 0
    parameter_servers: int = 0  # > 0: ParameterServerStrategy, this process its coordinator

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0


def _tf_config() -> dict[str, Any]:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG: not JSON ({err})") from err
    if not isinstance(config, dict):
        raise ConfigError(f"TF_CONFIG: expected a JSON object, got {type(config).__name__}")
    return config


def _cluster() -> tuple[int, int]:
    """(number of workers, this worker's index) from TF_CONFIG; (1, 0) when it is unset."""
    config = _tf_config()
    if not config:
        return 1, 0
    workers = len(config.get("cluster", {}).get("worker", [])) + len(
        config.get("cluster", {}).get("chief", [])
    )
    task = config.get("task", {})
    index = int(task.get("index", 0)) + (
        1 if task.get("type") == "worker" and "chief" in config.get("cluster", {}) else 0
    )
    return max(workers, 1), index


def parameter_server_task() -> str | None:
    """This process's task type ("chief", "worker" or "ps") when TF_CONFIG's cluster has `ps`
    tasks, else None (no parameter servers: the other strategies)."""
    config = _tf_config()
    if not config.get("cluster", {}).get("ps"):
        return None
    return str(config.get("task", {}).get("type", ""))


def placement_from_environment() -> Placement:
    if parameter_server_task() is not None:
        return _parameter_server_placement()
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


def _parameter_server_placement() -> Placement:
    """ParameterServerStrategy from TF_CONFIG, in the chief (the coordinator); variables of at
    least MIN_SHARD_BYTES split by rows across the parameter servers."""
    config = _tf_config()
    task = config.get("task", {}).get("type")
    cluster = config.get("cluster", {})
    if task != "chief" or not cluster.get("chief") or not cluster.get("worker"):
        raise ConfigError(
            "TF_CONFIG: with ps tasks, the cluster needs a chief (the coordinator, where "
            f"`mtrank train` trains) and at least one worker; this task is {task!r} of "
            f"{sorted(cluster)}"
        )
    servers, workers = len(cluster["ps"]), len(cluster["worker"])
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")  # a lost worker fails its step, not fit
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=MIN_SHARD_BYTES, max_shards=servers
    )
    strategy = tf.distribute.ParameterServerStrategy(
        tf.distribute.cluster_resolver.TFConfigClusterResolver(),
        variable_partitioner=partitioner,
    )
    description = f"ParameterServerStrategy ({workers} workers, {servers} parameter servers)"
    return Placement(strategy, description, workers, 0, servers)


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
