"""STEM-Net: each task's own embedding and experts learn from that task alone (All Forward
Task-specific Backward), every gate mixes every expert, and the model takes encoded features."""

from __future__ import annotations

import numpy as np
import pytest

from ranker import registry
from ranker.architectures.stem import STEMNet
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.inputs import FeatureInputs
from ranker.layers.mlp import MLP
from ranker.layers.stem import STEMExperts
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import assert_config_round_trips, click_log_schema, make_data

ONES = keras.initializers.Constant(1.0)


def _batch(data: tuple, n: int = 256) -> tuple[dict, dict]:
    features, labels = data
    return {k: v[:n] for k, v in features.items()}, {k: v[:n] for k, v in labels.items()}


def _task_loss(model: RankingModel, features: dict, labels: dict, task: str) -> tf.Tensor:
    label = {"ctr": "click", "cvr": "conversion"}[task]
    scores = model(features, training=False)[task]
    return tf.reduce_mean(keras.losses.binary_crossentropy(labels[label][:, None], scores[:, None]))


def _nonzero(gradient: object) -> bool:
    return gradient is not None and bool(np.any(tf.convert_to_tensor(gradient).numpy() != 0.0))


# ---- the layer -----------------------------------------------------------------------------------


def test_uniform_gates_average_every_tasks_experts_and_the_shared_ones() -> None:
    layer = STEMExperts(2, MLP([2], kernel_initializer=ONES), specific_experts=1, shared_experts=2)
    task0, task1, shared = tf.constant([[1.0, 0.0]]), tf.constant([[0.0, 2.0]]), tf.ones([1, 2])
    layer([task0, task1, shared])
    for gate in layer.gates:
        gate.logits.kernel.assign(tf.zeros_like(gate.logits.kernel))
    outputs, gates = layer([task0, task1, shared])
    # experts are relu(sum of inputs) on each unit: task 0's 1, task 1's 2, the two shared 2 and 2
    for out in outputs:
        np.testing.assert_allclose(out.numpy(), [[1.75, 1.75]])
    assert [g.shape for g in gates] == [(1, 4), (1, 4)]
    np.testing.assert_allclose(gates[0].numpy(), 0.25)


def test_a_tasks_output_reads_every_input_but_sends_gradient_only_to_its_own_and_the_shared() -> (
    None
):
    layer = STEMExperts(2, MLP([3]), specific_experts=2, shared_experts=1)
    inputs = [tf.random.normal([4, 5], seed=s) for s in (1, 2, 3)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        outputs, _ = layer(inputs)
        losses = [tf.reduce_sum(out) for out in outputs]
    own, other, shared = tape.gradient(losses[0], inputs)
    assert _nonzero(own) and _nonzero(shared) and not _nonzero(other)
    assert _nonzero(tape.gradient(losses[1], inputs[1]))  # task 1's input does get task 1's
    # all forward: moving task 1's input moves task 0's output
    moved, _ = layer([inputs[0], inputs[1] + 10.0, inputs[2]])
    assert not np.allclose(moved[0].numpy(), outputs[0].numpy())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_tasks": 0}, "num_tasks must be >= 1, got 0"),
        ({"specific_experts": 0}, "specific_experts=0, shared_experts=1"),
        ({"shared_experts": 0}, "specific_experts=1, shared_experts=0"),
    ],
)
def test_layer_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"num_tasks": 2, "expert": MLP([3]), **kwargs}
    with pytest.raises(ValueError, match=message):
        STEMExperts(**arguments)


def test_wrong_number_of_inputs_says_how_many() -> None:
    with pytest.raises(ValueError, match="expects 3 inputs"):
        STEMExperts(2, MLP([3]))([tf.ones([1, 2])] * 2)
    with pytest.raises(ValueError, match="STEMNet expects 3 inputs"):
        STEMNet(2, MLP([3])).call_with_gates([tf.ones([1, 2])] * 2)


@pytest.mark.parametrize(
    "layer",
    [
        STEMExperts(3, MLP([4, 2]), specific_experts=2, shared_experts=3),
        STEMNet(2, MLP([4], activation="gelu", dropout=0.1), specific_experts=2, shared_experts=1),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trips(layer: keras.layers.Layer) -> None:
    assert_config_round_trips(layer)


# ---- the model -----------------------------------------------------------------------------------


def test_the_model_embeds_once_per_task_and_once_shared(schema: Schema, data: tuple) -> None:
    features, _ = _batch(data, 8)
    model = RankingModel(schema, "stem")
    model(features)
    assert registry.get("stem").input_copies(2) == 3
    assert [inputs.name for inputs in model.feature_inputs] == ["inputs_0", "inputs_1", "inputs_2"]
    tables = [v.ref() for inputs in model.feature_inputs for v in inputs.trainable_variables]
    assert len(set(tables)) == len(tables) == 3 * len(model.feature_inputs[0].embeddings)


@pytest.mark.parametrize(("task", "own", "other"), [("ctr", 0, 1), ("cvr", 1, 0)])
def test_a_tasks_loss_never_reaches_another_tasks_embedding_or_experts(
    task: str, own: int, other: int, schema: Schema, data: tuple
) -> None:
    features, labels = _batch(data)
    model = RankingModel(schema, "stem")  # the defaults: crosses and embedding L2 included
    model(features)
    stem = model.backbone.experts
    groups = {
        "own embedding": model.feature_inputs[own].trainable_variables,
        "shared embedding": model.feature_inputs[2].trainable_variables,
        "other embedding": model.feature_inputs[other].trainable_variables,
        "own experts": stem.task_experts[own].trainable_variables,
        "shared experts": stem.shared.trainable_variables,
        "other experts": stem.task_experts[other].trainable_variables,
    }
    with tf.GradientTape() as tape:
        loss = _task_loss(model, features, labels, task)
    gradients = tape.gradient(loss, groups)
    reached = {name: any(_nonzero(g) for g in grads) for name, grads in gradients.items()}
    # counter-check (the test can fail): the task's own and the shared parts do get gradient
    assert reached == {
        "own embedding": True,
        "shared embedding": True,
        "other embedding": False,
        "own experts": True,
        "shared experts": True,
        "other experts": False,
    }


def test_the_other_tasks_embedding_still_moves_a_tasks_score(schema: Schema, data: tuple) -> None:
    """All forward: task ctr's score reads task cvr's experts over cvr's own embedding."""
    features, _ = _batch(data, 64)
    model = RankingModel(schema, "stem")
    before = model(features)
    cvr_inputs = model.feature_inputs[1]
    cvr_inputs.set_weights([w * 3.0 for w in cvr_inputs.get_weights()])
    after = model(features)
    assert not np.allclose(after["ctr"].numpy(), before["ctr"].numpy())


def test_every_gate_mixes_every_expert(schema: Schema, data: tuple) -> None:
    features, _ = _batch(data, 32)
    model = RankingModel(schema, "stem", {"specific_experts": 2, "shared_experts": 3})
    gates = model.gate_weights(features)
    assert set(gates) == {"ctr", "cvr"}
    for weights in gates.values():
        assert weights.shape == (32, 2 * 2 + 3)
        np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, atol=1e-5)
        assert (weights.numpy() > 0).all()


def test_one_task_has_its_own_and_the_shared_embedding() -> None:
    schema = click_log_schema(tasks=[{"name": "ctr", "label": "click"}], products=[])
    features, labels = make_data(128, seed=2)
    model = RankingModel(schema, "stem")
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(tf.data.Dataset.from_tensor_slices((features, labels)).batch(64), verbose=0)
    assert len(model.feature_inputs) == 2
    assert model.gate_weights(features)["ctr"].shape == (128, 1 + 2)
    assert model(features)["ctr"].shape == (128,)


def test_trains(schema: Schema) -> None:
    features, labels = make_data(1024, seed=5)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    keras.utils.set_random_seed(3)
    model = RankingModel(schema, "stem")
    model.adapt([features])
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    model.fit(dataset, epochs=3, verbose=0)
    after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert after < 0.9 * before, (before, after)


def test_encoded_features_give_the_raw_features_scores(schema: Schema, data: tuple) -> None:
    """`training.memory` encodes once (one FeatureInputs) for every copy the model embeds."""
    features, _ = _batch(data, 64)
    model = RankingModel(schema, "stem")
    model.adapt([features])
    raw = model(features)
    encoded = model(FeatureInputs(schema.features).encode(features))
    for name in schema.output_names:
        np.testing.assert_allclose(encoded[name].numpy(), raw[name].numpy(), rtol=1e-6, atol=1e-6)


def test_bad_hyperparameters_name_the_key(schema: Schema) -> None:
    with pytest.raises(ConfigError, match="specific_experts: Input should be greater than"):
        RankingModel(schema, "stem", {"specific_experts": 0})
    with pytest.raises(ConfigError, match="architecture 'stem': num_experts: unknown key"):
        RankingModel(schema, "stem", {"num_experts": 4})
