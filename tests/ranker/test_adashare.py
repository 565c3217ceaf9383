"""AdaShare: fixed policies by hand (all select is the shared residual stack, all skip the identity,
mixed ones), the paper's sparsity and sharing losses on known logits, the deterministic inference
policy, Gumbel-softmax samples and their straight-through gradient, the curriculum and the
temperature schedule on the count of training calls, training, configs and bad arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ranker.architectures.adashare import AdaShare
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.adashare import (
    SkippableBlock,
    annealed_temperature,
    learnable_blocks,
    sample_select,
    sharing_loss,
    sparsity_loss,
)
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import assert_config_round_trips, first_tasks, make_data

X = tf.constant([[1.0, -2.0], [0.5, 1.0]])
# block 0: relu(h W0 + b0), block 1: relu(h W1) (W1 swaps the two features)
W0, B0 = np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([0.0, 0.5])
W1 = np.array([[0.0, 1.0], [1.0, 0.0]])
SELECT, SKIP = [5.0, 0.0], [0.0, 5.0]
OPEN: dict[str, Any] = {
    "curriculum_steps": 0,
    "warmup_steps": 0,
}  # every block's policy learned from step 0


def _network(policies: list[list[list[float]]], **kwargs: Any) -> AdaShare:
    """Two blocks of width 2 with W0, B0, W1, and each task's policy logits [L, 2]."""
    network = AdaShare(len(policies), [2, 2], **{**OPEN, **kwargs})
    network(X)
    dense_0 = network.blocks[0].branch.dense_layers[0]
    dense_1 = network.blocks[1].branch.dense_layers[0]
    dense_0.kernel.assign(W0), dense_0.bias.assign(B0)
    dense_1.kernel.assign(W1), dense_1.bias.assign([0.0, 0.0])
    network.logits.assign(policies)
    return network


def _outputs(network: AdaShare, training: bool = False) -> list[np.ndarray]:
    return [r.numpy() for r in network(X, training=training)]


def test_all_select_is_the_shared_residual_stack_by_hand() -> None:
    network = _network([[SELECT, SELECT], [SELECT, SELECT]])
    # row 1: x + relu([1, 0] + [0, 0.5]) = [2, -1.5]; + relu([-1.5, 2]) = [2, 0.5]
    # row 2: x + relu([0.5, 2] + [0, 0.5]) = [1, 3.5]; + relu([3.5, 1]) = [4.5, 4.5]
    for task in _outputs(network):
        np.testing.assert_allclose(task, [[2.0, 0.5], [4.5, 4.5]], rtol=1e-6)


def test_all_select_equals_the_blocks_stacked_with_any_weights() -> None:
    keras.utils.set_random_seed(3)
    network = AdaShare(3, [5, 5, 4], **OPEN)
    x = tf.random.normal([6, 7], seed=1)
    network(x)
    network.logits.assign(tf.tile([[SELECT]], [3, 3, 1]))
    hidden = x  # the shared network: h <- s(h) + f(h), s projecting 7 -> 5 and 5 -> 4
    for block in network.blocks:
        assert (block.projection is None) == (hidden.shape[-1] == block.width)
        shortcut = hidden if block.projection is None else block.projection(hidden)
        hidden = shortcut + block.branch(hidden)
    for task in network(x):
        np.testing.assert_allclose(task.numpy(), hidden.numpy(), rtol=1e-5, atol=1e-6)


def test_all_skip_is_the_identity_or_the_projection() -> None:
    network = _network([[SKIP, SKIP], [SKIP, SKIP]])
    for task in _outputs(network):
        np.testing.assert_allclose(task, X.numpy())
    # a first block wider than the input: skipping it leaves the input's projection
    projected = AdaShare(1, [2], **OPEN)
    x = tf.constant([[1.0, 2.0, 3.0]])
    projected(x)
    projection = projected.blocks[0].projection
    assert projection is not None
    projection.kernel.assign([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    projected.logits.assign([[SKIP]])
    np.testing.assert_allclose(projected(x)[0].numpy(), [[4.0, 5.0]])
    projected.logits.assign([[SELECT]])  # counter-check: executed, the block adds relu(x W + b)
    assert not np.allclose(projected(x)[0].numpy(), [[4.0, 5.0]])


def test_mixed_policies_by_hand() -> None:
    network = _network([[SELECT, SKIP], [SKIP, SELECT], [SKIP, SKIP]])
    first, second, third = _outputs(network)
    np.testing.assert_allclose(first, [[2.0, -1.5], [1.0, 3.5]], rtol=1e-6)
    # block 1 alone: x + relu(x W1) = [1, -2] + [0, 1]; [0.5, 1] + [1, 0.5]
    np.testing.assert_allclose(second, [[1.0, -1.0], [1.5, 1.5]], rtol=1e-6)
    np.testing.assert_allclose(third, X.numpy())


# two tasks, three blocks: p = softmax(logits)[select]
LOGITS = np.log([[[1, 1], [3, 1], [1, 3]], [[3, 1], [1, 1], [1, 4]]], dtype=np.float32)
P = np.array([[0.5, 0.75, 0.25], [0.75, 0.5, 0.2]])


def test_the_sparsity_and_sharing_losses_by_hand() -> None:
    every = tf.constant([True, True, True])
    sparsity = sparsity_loss(tf.constant(LOGITS), every).numpy()
    np.testing.assert_allclose(sparsity, np.log(P).sum(), rtol=1e-6)
    # both orders of the pair; block weights (L - l) / L = 2/3, 1/3, 0
    sharing = sharing_loss(tf.constant(LOGITS), every).numpy()
    np.testing.assert_allclose(sharing, 2 * (2 / 3 * 0.25 + 1 / 3 * 0.25 + 0 * 0.05), rtol=1e-6)
    # blocks the curriculum has not opened are left out of both
    upper = tf.constant([False, True, True])
    np.testing.assert_allclose(
        sparsity_loss(tf.constant(LOGITS), upper).numpy(), np.log(P[:, 1:]).sum(), rtol=1e-6
    )
    np.testing.assert_allclose(sharing_loss(tf.constant(LOGITS), upper).numpy(), 2 / 12, rtol=1e-6)
    # three tasks: every ordered pair, e.g. block 1's (1/3) gaps 0.25, 0.25, 0
    three = tf.constant(np.concatenate([LOGITS, LOGITS[:1]]))
    expected = 2 * (2 / 3 * (0.25 + 0.25 + 0) + 1 / 3 * (0.25 + 0 + 0.25))
    np.testing.assert_allclose(sharing_loss(three, every).numpy(), expected, rtol=1e-6)


def test_the_losses_go_to_the_layer_and_the_models_regularization(schema: Schema) -> None:
    network = AdaShare(2, [4, 4, 4], sparsity_weight=0.1, sharing_weight=0.3, **OPEN)
    network(tf.ones([2, 4]))
    network.logits.assign(LOGITS)
    network(tf.ones([2, 4]))
    expected = 0.1 * np.log(P).sum() + 0.3 * 2 * 0.25
    np.testing.assert_allclose(network.losses[-1].numpy(), expected, rtol=1e-5)
    features, _ = make_data(16, seed=1)
    hparams = {"embedding_l2": 0.0, "units": [4, 4, 4], "sparsity_weight": 0.1, **OPEN}
    model = RankingModel(schema, "adashare", {**hparams, "sharing_weight": 0.3})
    model(features)
    model.backbone.logits.assign(LOGITS)
    model(features)
    np.testing.assert_allclose(float(tf.add_n(model.losses)), expected, rtol=1e-5)


def test_inference_is_deterministic_and_follows_the_larger_logit() -> None:
    keras.utils.set_random_seed(5)
    network = AdaShare(3, [4, 4, 4, 4], **OPEN)
    x = tf.random.normal([8, 4], seed=2)
    network(x)
    logits = np.random.default_rng(1).normal(size=(3, 4, 2)).astype(np.float32)
    logits[0, 0] = [0.3, 0.3]  # a tie executes the block (the authors' argmax picks select)
    network.logits.assign(logits)
    expected = (logits[..., 0] >= logits[..., 1]).astype(np.float32)
    assert 0 < expected.sum() < expected.size  # a mixed policy
    np.testing.assert_array_equal(network.decisions().numpy(), expected)
    first, again = network(x), network(x, training=False)
    for task, (a, b) in enumerate(zip(first, again, strict=True)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        hidden = x
        for level, block in enumerate(network.blocks):
            hidden = block([hidden, tf.constant(expected[task, level])])
        np.testing.assert_allclose(a.numpy(), hidden.numpy(), rtol=1e-5, atol=1e-6)
    assert int(network.calls.numpy()) == 0  # inference does not count
    # counter-check: training samples the policy, equal logits give different paths
    network.logits.assign(tf.zeros_like(network.logits))
    samples = {tuple(network(x, training=True)[0].numpy().ravel()[:3]) for _ in range(8)}
    assert len(samples) > 1


def test_hard_samples_follow_the_policy_and_pass_the_soft_gradient() -> None:
    keras.utils.set_random_seed(0)
    logits = tf.Variable(tf.tile(tf.math.log([[0.8, 0.2]]), [20000, 1]))
    with tf.GradientTape() as tape:
        select = sample_select(logits, tf.constant(1.0))
        objective = tf.reduce_sum(select)
    values = select.numpy()
    assert set(np.unique(values)) == {0.0, 1.0}
    assert abs(values.mean() - 0.8) < 0.015  # the Gumbel-max trick samples p exactly
    gradient = tape.gradient(objective, logits).numpy()
    # the soft sample's gradient: d y_select / d logit_select = y (1 - y) / τ >= 0, opposite on skip
    assert (gradient[:, 0] >= 0).all() and gradient[:, 0].max() > 0
    np.testing.assert_allclose(gradient[:, 1], -gradient[:, 0], atol=1e-6)
    # without straight-through the samples are soft, the closer to 0 or 1 the lower τ
    hot = sample_select(logits, tf.constant(5.0), hard=False).numpy()
    cold = sample_select(logits, tf.constant(0.1), hard=False).numpy()
    assert ((hot > 0) & (hot < 1)).all()
    assert np.abs(cold - 0.5).mean() > np.abs(hot - 0.5).mean() + 0.2


def test_the_task_loss_trains_the_policy_through_the_samples() -> None:
    network = AdaShare(2, [4, 4], sparsity_weight=0.0, sharing_weight=0.0, **OPEN)
    x = tf.random.normal([8, 4], seed=4)
    network(x)
    for training, flows in [(True, True), (False, False)]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(network(x, training=training)[1]))
        gradient = tape.gradient(loss, network.logits)
        size = 0.0 if gradient is None else float(tf.reduce_sum(tf.abs(gradient)))
        assert (size > 0) is flows, (training, size)
        if flows:  # task 1's loss reaches only task 1's logits
            np.testing.assert_array_equal(gradient.numpy()[0], 0.0)


def test_the_curriculum_executes_the_blocks_before_their_step() -> None:
    """Skip logits everywhere: a block is skipped exactly from its step on, the last first."""
    network = AdaShare(2, [2, 2], warmup_steps=2, curriculum_steps=3)
    network(X)
    network.logits.assign(tf.tile([[[0.0, 30.0]]], [2, 2, 1]))  # a sampled select is ~e^-30
    dense_0, dense_1 = (block.branch.dense_layers[0] for block in network.blocks)
    dense_0.kernel.assign(W0), dense_0.bias.assign(B0), dense_1.kernel.assign(W1)
    both, last_skipped = [[2.0, 0.5], [4.5, 4.5]], [[2.0, -1.5], [1.0, 3.5]]
    # steps 0, 1 warm up; block 1 opens at 2, block 0 at 2 + 3 = 5
    expected = [both, both, last_skipped, last_skipped, last_skipped, X.numpy(), X.numpy()]
    for step, want in enumerate(expected):
        assert int(network.calls.numpy()) == step
        np.testing.assert_array_equal(network.learnable().numpy(), [step >= 5, step >= 2])
        for task in _outputs(network, training=True):
            np.testing.assert_allclose(task, want, rtol=1e-6)
    # inference follows the same curriculum: before block 0 opens it is executed
    np.testing.assert_array_equal(network.decisions().numpy(), np.zeros((2, 2)))
    network.calls.assign(3)
    np.testing.assert_array_equal(network.decisions().numpy(), [[1, 0], [1, 0]])
    np.testing.assert_array_equal(
        learnable_blocks(tf.constant(4), 4, 2).numpy(), [False, True, True, True]
    )


def test_the_temperature_anneals_as_configured() -> None:
    network = AdaShare(
        2, [4], initial_temperature=4.0, temperature_decay=0.5, anneal_steps=3, warmup_steps=2
    )
    x = tf.ones([2, 4])
    network(x)
    got = [float(network.temperature(tf.constant(s, tf.int64))) for s in range(12)]
    # constant through the warm-up, then halved every 3 steps
    expected = [4.0, 4.0, 4.0, 4.0, 4.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.5]
    np.testing.assert_allclose(got, expected)
    # it follows the count of training calls, and stops at the floor
    for _ in range(5):
        network(x, training=True)
    np.testing.assert_allclose(float(network.temperature()), 2.0)
    far = annealed_temperature(tf.constant(10**6), 5.0, 0.965, 25)
    np.testing.assert_allclose(float(far), 0.01)
    assert np.isfinite(float(far))


@pytest.mark.parametrize("tasks", [1, 2, 3])
def test_trains_on_one_two_and_three_tasks_and_learns_a_policy(tasks: int) -> None:
    schema, features, labels = first_tasks(tasks, 1024)
    keras.utils.set_random_seed(0)
    hparams = {"cross_layers": 0, "units": [16, 16, 16], "warmup_steps": 4}
    model = RankingModel(schema, "adashare", {**hparams, "curriculum_steps": 4, "anneal_steps": 4})
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    history = model.fit(dataset, epochs=4, verbose=0).history
    losses = history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.isfinite(history["regularization_loss"]).all()
    backbone = model.backbone
    assert int(backbone.calls.numpy()) == 4 * 8  # one training call a step
    assert backbone.learnable().numpy().all()
    assert float(backbone.temperature()) < 5.0
    policy = backbone.policy().numpy()
    assert policy.shape == (tasks, 3) and not np.allclose(policy, 0.5)
    assert set(model(features)) == set(schema.output_names)


def test_get_config_round_trips() -> None:
    x = tf.random.normal([4, 6], seed=5)
    block = SkippableBlock(3, "gelu", 0.1, name="b")
    network = AdaShare(
        3,
        [5, 4],
        "gelu",
        0.1,
        sparsity_weight=0.2,
        sharing_weight=0.4,
        initial_temperature=2.0,
        temperature_decay=0.9,
        anneal_steps=7,
        curriculum_steps=3,
        warmup_steps=1,
        straight_through=False,
    )
    layers: list[Any] = [block, network]
    for layer in layers:
        clone = assert_config_round_trips(layer)
    for _ in range(6):
        network(x, training=True)  # moves the count of training calls: it must be copied too
    network.logits.assign(np.random.default_rng(0).normal(size=(3, 2, 2)))
    first = network(x)
    clone(x)
    clone.set_weights(network.get_weights())
    assert int(clone.calls.numpy()) == 6
    np.testing.assert_array_equal(clone.decisions().numpy(), network.decisions().numpy())
    for a, b in zip(first, clone(x), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AdaShare(2, units=[]), r"units must be a non-empty list .*got \[\]"),
        (lambda: AdaShare(2, units=[8, -1]), r"got \[8, -1\]"),
        (lambda: AdaShare(2, [8], sparsity_weight=-1.0), "sparsity_weight must be >= 0, got -1"),
        (lambda: AdaShare(2, [8], sharing_weight=-0.5), "sharing_weight must be >= 0, got -0.5"),
        (lambda: AdaShare(2, [8], initial_temperature=0.0), "must be > 0, got 0.0"),
        (lambda: AdaShare(2, [8], temperature_decay=1.5), r"must be in \(0, 1\], got 1.5"),
        (lambda: AdaShare(2, [8], anneal_steps=0), "anneal_steps must be >= 1, got 0"),
        (lambda: AdaShare(2, [8], curriculum_steps=-1), "curriculum_steps must be >= 0, got -1"),
        (lambda: AdaShare(2, [8], warmup_steps=-3), "warmup_steps must be >= 0, got -3"),
        (lambda: AdaShare(0, [8]), "num_tasks must be >= 1, got 0"),
        (lambda: SkippableBlock(0), "width must be >= 1, got 0"),
        (lambda: SkippableBlock(4, activation="nope"), "activation must be one of"),
    ],
)
def test_bad_arguments_raise(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_bad_hyperparameters_name_the_key(schema: Schema) -> None:
    with pytest.raises(ConfigError, match="anneal_steps: Input should be greater"):
        RankingModel(schema, "adashare", {"anneal_steps": 0})
    with pytest.raises(ConfigError, match="temperature_decay: Input should be less"):
        RankingModel(schema, "adashare", {"temperature_decay": 2.0})
    with pytest.raises(ConfigError, match="sparsity_weigth: unknown key"):
        RankingModel(schema, "adashare", {"sparsity_weigth": 1.0})
