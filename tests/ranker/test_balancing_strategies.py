"""Every registered balancing strategy, whatever its family: it trains each architecture family
(shared-bottom, MMoE, PLE, ESMM) and exports the same signature, it lowers the loss of a two-task
problem whose tasks pull the shared layer apart, and it trains under a two-device
MirroredStrategy (one strategy of each gradient kind, in a fresh process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranker import balancing
from ranker.keras_compat import keras, tf
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import click_log_schema, make_data
from tests.ranker.mirrored import train_mirrored
from training.export import export_saved_model
from training.task_balance import BalancingMonitor

STRATEGIES = balancing.names()
SMALL = {
    "shared_bottom": {"bottom_units": [8], "tower_units": [4]},
    "mmoe": {"num_experts": 2, "expert_units": [8], "tower_units": [4]},
    "ple": {"shared_experts": 1, "specific_experts": 1, "expert_units": [8], "tower_units": [4]},
    "esmm": {"tower_units": [4]},
}


def _dataset(features: dict, labels: dict, batch: int = 128) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch)


@pytest.fixture(scope="module")
def data() -> tuple[dict, dict]:
    return make_data(512, seed=1)


@pytest.mark.parametrize("architecture", list(SMALL))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_every_architecture_family(
    strategy: str, architecture: str, data: tuple, tmp_path: Path
) -> None:
    features, labels = data
    keras.utils.set_random_seed(0)
    schema = click_log_schema()
    model = RankingModel(schema, architecture, SMALL[architecture], loss_weighting=strategy)
    model.adapt([features])
    model.compile(optimizer=keras.optimizers.legacy.Adam(0.01))
    history = model.fit(
        _dataset(features, labels), epochs=3, verbose=0, callbacks=[BalancingMonitor(None)]
    ).history
    for key in ("loss", "val_loss") if "val_loss" in history else ("loss",):
        assert np.isfinite(history[key]).all(), (key, history[key])
    for output in model.balancer.outputs:
        assert np.isfinite(history[f"{output}_weight"]).all(), history
    if architecture != "mmoe":
        return
    assert history["ctr_loss"][-1] < history["ctr_loss"][0], history  # it learns
    coefficients = [history[f"{output}_weight"] for output in model.balancer.outputs]
    if strategy not in ("fixed", "pcgrad"):  # pcgrad keeps w = 1 unless the tasks conflict
        assert not np.allclose(coefficients, 1.0), coefficients  # it chose its own
    # the export is the same whatever the strategy: the schema's outputs, no strategy state
    path = export_saved_model(model, tmp_path / "export")
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert sorted(signature.structured_outputs) == sorted(schema.output_names)
    names = [name for name, _ in tf.train.list_variables(str(path / "variables" / "variables"))]
    assert names and not [n for n in names if "balancing" in n or "log_var" in n]


def _conflicting_tasks(n: int, seed: int) -> tuple[Schema, dict, dict]:
    """Two binary tasks with opposite labels on the same input: `a` is 1 where x > 0, `b` where
    x < 0 (both noisy), so what raises one task's score through the shared layer lowers the
    other's unless the towers learn to disagree."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    noise = rng.normal(scale=0.3, size=(2, n))
    schema = Schema.from_dict(
        {
            "features": [
                {"name": "x", "type": "numeric", "entity": "context"},
                {"name": "z", "type": "numeric", "entity": "context"},
            ],
            "tasks": [{"name": "a", "label": "a"}, {"name": "b", "label": "b"}],
        }
    )
    features = {"x": x, "z": rng.normal(size=n).astype(np.float32)}
    labels = {
        "a": (x + noise[0] > 0).astype(np.float32),
        "b": (x + noise[1] < 0).astype(np.float32),
    }
    return schema, features, labels


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_two_task_conflict_ends_with_a_lower_loss(strategy: str) -> None:
    schema, features, labels = _conflicting_tasks(1024, seed=2)
    keras.utils.set_random_seed(0)
    model = RankingModel(
        schema, "shared_bottom", {"bottom_units": [8], "tower_units": [4]}, loss_weighting=strategy
    )
    model.adapt([features])
    model.compile(optimizer=keras.optimizers.legacy.Adam(0.01))
    data = _dataset(features, labels)
    unweighted = [f"{task}_loss" for task in ("a", "b")]
    before = model.evaluate(data, verbose=0, return_dict=True)
    model.fit(data, epochs=5, verbose=0, callbacks=[BalancingMonitor(None)])
    after = model.evaluate(data, verbose=0, return_dict=True)
    assert sum(after[k] for k in unweighted) < sum(before[k] for k in unweighted) - 0.05, (
        before,
        after,
    )


def test_one_strategy_of_each_kind_trains_under_a_two_device_mirrored_strategy(
    tmp_path: Path,
) -> None:
    first = {}
    for name in STRATEGIES:
        first.setdefault(balancing.get(name).gradients, name)
    small = {"num_experts": 2, "expert_units": [8]}
    result = train_mirrored({name: ("mmoe", small, name) for name in first.values()}, tmp_path)
    assert result["replicas"] == 2
    for name in first.values():
        assert np.isfinite(result[name]).all() and result[name][-1] < result[name][0], result
