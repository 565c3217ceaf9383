"""Parameter-server training (training/parameter_servers.py, training/distribute.py): a local
cluster of processes on loopback (a chief, two workers, two parameter servers) trains a model whose
hashed embedding table is split across both parameter servers, and its one SavedModel scores the
same in a fresh TensorFlow with no cluster as the chief's Keras model did.

The workers and parameter servers are `mtrank train` with the chief's arguments (their TF_CONFIG
task makes them serve); the chief is `training.trainer.train` in a script that also writes what
only its process can see (the table's shards, the Keras model's scores of a test batch).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ranker.errors import ConfigError
from training.config import TrainConfig
from training.distribute import MIN_SHARD_BYTES, parameter_server_task, placement_from_environment
from training.parameter_servers import whole_table_costs

ROOT = Path(__file__).resolve().parents[2]
BUCKETS = 16384  # user_id's rows: the 16-d hashed table is (16384 + 1024) x 16 x 4 bytes = 1.1 MB

# the chief: trains, then writes the table's shards and the Keras model's scores of a test batch
CHIEF = """
import json, sys
from pathlib import Path
from training.config import TrainConfig
from training.data import ReadOptions, make_dataset
from training.trainer import train

data, models, report = (Path(a) for a in sys.argv[1:4])
config = TrainConfig.model_validate({
    "epochs": 2, "batch_size": 1024, "steps_per_execution": 1,
    "hparams": {"num_experts": 2, "expert_units": [16], "tower_units": [8]},
})
result = train(data, "mmoe", models, config, verbose=False)
table = result.model.feature_inputs[0].embeddings["hashed_embeddings_16d"].embeddings
features, _ = next(iter(make_dataset(data / "test.parquet", result.model.schema,
                                     ReadOptions(batch_size=256))))
scores = result.model(features, training=False)
def plain(value):
    value = value.numpy()
    return [v.decode() if isinstance(v, bytes) else v for v in value.ravel().tolist()], value.shape
report.write_text(json.dumps({
    "table": type(table).__name__,
    "shards": [{"device": v.device, "shape": v.shape.as_list()} for v in table.variables],
    "history": result.history,
    "export": str(result.path),
    "features": {name: plain(value) for name, value in features.items()},
    "scores": {name: value.numpy().tolist() for name, value in scores.items()},
}))
"""

# a fresh TensorFlow, no TF_CONFIG, no mtrank: the export's signature on the chief's batch
LOADER = """
import json, sys
import tensorflow as tf
export, batch = sys.argv[1], json.loads(open(sys.argv[2]).read())
loaded = tf.saved_model.load(export)
signature = loaded.signatures["serving_default"]
specs = signature.structured_input_signature[1]
inputs = {
    name: tf.reshape(tf.constant(values, specs[name].dtype), shape)
    for name, (values, shape) in batch["features"].items() if name in specs
}
outputs = signature(**inputs)
variables = {v.name: v.shape.as_list() for v in signature.variables}
print(json.dumps({"scores": {k: v.numpy().tolist() for k, v in outputs.items()},
                  "variables": variables}))
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tf_config(cluster: dict[str, list[str]], task: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task, "index": index}})


@pytest.fixture
def big_table_data(synth_dir: Path, tmp_path: Path) -> Path:
    """The synthetic logs with user_id hashed into BUCKETS rows, so its table is split."""
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    schema = (data / "schema.yaml").read_text()
    assert "num_buckets: 2048" in schema
    (data / "schema.yaml").write_text(
        schema.replace("num_buckets: 2048", f"num_buckets: {BUCKETS}", 1)
    )
    assert (BUCKETS + 1024) * 16 * 4 >= 2 * MIN_SHARD_BYTES  # big enough for two shards
    return data


def test_a_chief_two_workers_and_two_parameter_servers_train_and_export_one_model(
    big_table_data: Path, tmp_path: Path
) -> None:
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(5)]
    cluster = {"chief": hosts[:1], "worker": hosts[1:3], "ps": hosts[3:]}
    models, report = tmp_path / "models", tmp_path / "chief.json"
    arguments = ["--data", str(big_table_data), "--model", "mmoe", "--out", str(models)]
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "training.cli", "train", *arguments],
            env={**base, "TF_CONFIG": _tf_config(cluster, task, index)},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for task, index in (("worker", 0), ("worker", 1), ("ps", 0), ("ps", 1))
    ]
    try:
        chief = subprocess.run(
            [sys.executable, "-c", CHIEF, str(big_table_data), str(models), str(report)],
            env={**base, "TF_CONFIG": _tf_config(cluster, "chief", 0)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert chief.returncode == 0, chief.stderr[-3000:]
        alive = [p.poll() is None for p in servers]
        assert all(alive), "a worker or parameter server exited while the chief trained"
    finally:
        for server in servers:
            server.kill()
        served = [server.communicate(timeout=30)[1] for server in servers]
    # each task ran mtrank train's server, not training
    for (task, index), err in zip(
        (("worker", 0), ("worker", 1), ("ps", 0), ("ps", 1)), served, strict=True
    ):
        assert f"{task} {index} serving at grpc://" in err, err[-2000:]

    facts = json.loads(report.read_text())
    assert facts["table"] == "ShardedVariable"
    devices = [shard["device"] for shard in facts["shards"]]
    # one shard on each parameter server (the servers take variables in turn, so either order)
    assert sorted(devices) == [
        "/job:ps/replica:0/task:0/device:CPU:0",
        "/job:ps/replica:0/task:1/device:CPU:0",
    ]
    rows = sum(shard["shape"][0] for shard in facts["shards"])
    assert rows == BUCKETS + 1024 and len({tuple(s["shape"]) for s in facts["shards"]}) == 1
    assert len(facts["history"]["loss"]) == 2 and len(facts["history"]["val_loss"]) == 2
    assert all(np.isfinite(facts["history"]["val_loss"]))

    export = Path(facts["export"])
    metadata = json.loads((export / "metadata.json").read_text())
    assert metadata["placement"] == "ParameterServerStrategy (2 workers, 2 parameter servers)"
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"features": facts["features"]}))
    clean = {k: v for k, v in base.items() if k != "TF_CONFIG"}
    loaded = subprocess.run(
        [sys.executable, "-c", LOADER, str(export), str(batch)],
        env={**clean, "TF_USE_LEGACY_KERAS": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    served_model = json.loads(loaded.stdout.strip().splitlines()[-1])
    # the table is one whole variable in the export, not two shards
    tables = [shape for name, shape in served_model["variables"].items() if "hashed" in name]
    assert [BUCKETS + 1024, 16] in tables, served_model["variables"]
    for name, keras_scores in facts["scores"].items():
        # the model's own score: `raw_<name>` where the export calibrates it
        exported = served_model["scores"].get(f"raw_{name}", served_model["scores"][name])
        np.testing.assert_allclose(exported, np.ravel(keras_scores), atol=1e-5, err_msg=name)
    # so the test can fail: the scores vary across the batch
    assert np.std(facts["scores"]["ctr"]) > 0


def test_tf_config_with_ps_tasks_names_this_task(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3", "h:4"]}
    monkeypatch.setenv("TF_CONFIG", _tf_config(cluster, "ps", 1))
    assert parameter_server_task() == "ps"
    monkeypatch.setenv("TF_CONFIG", _tf_config({"worker": ["h:1", "h:2"]}, "worker", 0))
    assert parameter_server_task() is None  # no ps tasks: MultiWorkerMirroredStrategy
    monkeypatch.delenv("TF_CONFIG")
    assert parameter_server_task() is None


def test_a_parameter_server_cluster_without_a_chief_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = {"worker": ["h:2"], "ps": ["h:3"]}
    monkeypatch.setenv("TF_CONFIG", _tf_config(cluster, "worker", 0))
    with pytest.raises(ConfigError, match=r"TF_CONFIG: with ps tasks, the cluster needs a chief"):
        placement_from_environment()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG: not JSON"):
        parameter_server_task()


def test_the_server_entry_refuses_a_task_that_is_not_a_ps_or_worker() -> None:
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    run = subprocess.run(
        [sys.executable, "-m", "training.parameter_servers"],
        env={**os.environ, "TF_CONFIG": _tf_config(cluster, "chief", 0)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "training.parameter_servers: error: TF_CONFIG: the ps and worker tasks of a cluster "
        "with ps tasks serve; this task is 'chief'"
    )


def test_the_settings_that_touch_every_row_at_every_step_are_named() -> None:
    adam = TrainConfig()  # the defaults: Adam; the architecture's embedding_l2 comes beside it
    note = whole_table_costs(adam, 1e-3)
    assert note is not None
    assert "Adam updates every row of its moments" in note
    assert "embedding_l2 0.001 reads every row" in note
    adagrad = TrainConfig.model_validate({"optimizer": {"name": "adagrad"}})
    assert whole_table_costs(adagrad, 0.0) is None
    only_l2 = whole_table_costs(adagrad, 1e-4)
    assert only_l2 is not None and "Adam" not in only_l2
