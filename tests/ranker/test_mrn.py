"""MRN: the tensor normal prior against explicit Kronecker products, the flip-flop updates, their
schedule, the prior in the model's regularization loss, training, configs and bad arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ranker.architectures.mrn import MRN
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.mrn import (
    TensorNormalPrior,
    flip_flop,
    mode_product,
    negative_log_density,
    quadratic_form,
    update_covariance,
)
from ranker.model import RankingModel
from ranker.schema import Schema
from tests.ranker.conftest import assert_config_round_trips, first_tasks, make_data

RNG = np.random.default_rng(0)
# a tiny [D_in, D_out, T] = [2, 3, 2] tensor and non-identity covariances
W = RNG.normal(size=(2, 3, 2))


def _spd(n: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T + 0.5 * np.eye(n)


COVARIANCES = [_spd(2, 1), _spd(3, 2), _spd(2, 3)]


def _tf(arrays: list[np.ndarray]) -> list[tf.Tensor]:
    return [tf.constant(a, tf.float64) for a in arrays]


def _kron(covariances: list[np.ndarray]) -> np.ndarray:
    return np.kron(np.kron(covariances[0], covariances[1]), covariances[2])


def test_mode_product_multiplies_along_one_mode() -> None:
    m = RNG.normal(size=(4, 3))
    got = mode_product(tf.constant(W), tf.constant(m), 1).numpy()
    assert got.shape == (2, 4, 2)
    np.testing.assert_allclose(got, np.einsum("ij,ajc->aic", m, W))


def test_mode_wise_quadratic_form_equals_the_explicit_kronecker_product() -> None:
    vec = W.reshape(-1)  # row-major: the task index varies fastest, so Σ_in ⊗ Σ_out ⊗ Σ_T
    explicit = vec @ np.linalg.inv(_kron(COVARIANCES)) @ vec
    got = quadratic_form(tf.constant(W), _tf(COVARIANCES)).numpy()
    np.testing.assert_allclose(got, explicit, rtol=1e-10)
    # counter-check: the modes' covariances in another order give another value
    swapped = np.kron(np.kron(COVARIANCES[0], COVARIANCES[1]), COVARIANCES[2][::-1, ::-1])
    assert not np.isclose(vec @ np.linalg.inv(swapped) @ vec, explicit)


def test_density_is_the_gaussians_with_the_kronecker_covariance() -> None:
    variance = 0.3
    full = variance * _kron(COVARIANCES)
    vec = W.reshape(-1)
    # -ln N(vec; 0, full) without the constant: 1/2 (vec' full^-1 vec + ln|full|); in the code
    # ln|full| = 12 ln σ² + 6 (ln|Σ_in| / 2 + ln|Σ_out| / 3 + ln|Σ_T| / 2), never formed
    expected = 0.5 * (vec @ np.linalg.inv(full) @ vec + np.linalg.slogdet(full)[1])
    got = negative_log_density(tf.constant(W), _tf(COVARIANCES), variance).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_each_flip_flop_update_is_the_papers_formula_at_mean_eigenvalue_one() -> None:
    eps = 1e-3
    sizes = W.shape
    for mode in range(3):
        others = [c for m, c in enumerate(COVARIANCES) if m != mode]
        unfolded = np.moveaxis(W, mode, 0).reshape(sizes[mode], -1)  # other modes row-major
        paper = unfolded @ np.linalg.inv(np.kron(*others)) @ unfolded.T * sizes[mode] / W.size
        expected = paper * sizes[mode] / np.trace(paper) + eps * np.eye(sizes[mode])
        got = update_covariance(tf.constant(W), _tf(COVARIANCES), mode, eps).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10)
    # a sweep updates the modes in turn, each from the others' newest values, then the variance
    swept, variance = flip_flop(tf.constant(W), _tf(COVARIANCES), eps)
    first = update_covariance(tf.constant(W), _tf(COVARIANCES), 0, eps).numpy()
    second = update_covariance(tf.constant(W), _tf([first, *COVARIANCES[1:]]), 1, eps).numpy()
    np.testing.assert_allclose(swept[0].numpy(), first)
    np.testing.assert_allclose(swept[1].numpy(), second)
    # σ² is the likelihood's maximum given the covariances: the density is larger either side
    density = [
        negative_log_density(tf.constant(W), swept, variance * f).numpy() for f in (0.9, 1, 1.1)
    ]
    assert density[1] < density[0] and density[1] < density[2]


def test_sweeps_settle_where_the_papers_unnormalized_updates_drift() -> None:
    """One task's [6, 2] layer: 2 columns to estimate the 6 x 6 input covariance from."""
    eps = 1e-3
    weights = np.random.default_rng(4).normal(size=(6, 2, 1))
    covariances = _tf([np.eye(d) for d in (6, 2, 1)])
    for _ in range(30):
        covariances, variance = flip_flop(tf.constant(weights), covariances, eps)
    following, next_variance = flip_flop(tf.constant(weights), covariances, eps)
    for c, after, d in zip(covariances, following, (6, 2, 1), strict=True):
        np.testing.assert_allclose(np.trace(c.numpy()), d * (1 + eps), rtol=1e-8)
        np.testing.assert_allclose(after.numpy(), c.numpy(), atol=1e-3)  # settled
    np.testing.assert_allclose(next_variance.numpy(), variance.numpy(), rtol=1e-3)
    # counter-check: the paper's updates as printed (no rescaling) move scale from Σ_out to Σ_in
    # by D_in / (D_out T) = 3 each sweep
    paper = [np.eye(d) for d in (6, 2, 1)]
    traces = []
    for _ in range(4):
        for mode in range(3):
            others = [c for m, c in enumerate(paper) if m != mode]
            unfolded = np.moveaxis(weights, mode, 0).reshape(weights.shape[mode], -1)
            scatter = unfolded @ np.linalg.inv(np.kron(*others)) @ unfolded.T
            paper[mode] = scatter * weights.shape[mode] / weights.size + eps * np.eye(len(scatter))
        traces.append(np.trace(paper[0]))
    assert traces[-1] > 20 * traces[0]


def test_two_identical_tasks_come_out_fully_correlated() -> None:
    eps = 1e-3
    same = np.stack([W[:, :, 0], W[:, :, 0]], axis=-1)
    task = flip_flop(tf.constant(same), _tf(COVARIANCES), eps)[0][2].numpy()
    np.testing.assert_allclose(task[0, 1], task[1, 0])
    np.testing.assert_allclose(task[0, 1], task[0, 0] - eps, rtol=1e-10)
    np.testing.assert_allclose(task[1, 1], task[0, 0], rtol=1e-10)
    # counter-checks: opposite tasks are anti-correlated, unrelated ones are not fully correlated
    opposite = flip_flop(tf.constant(same * [1.0, -1.0]), _tf(COVARIANCES), eps)[0][2].numpy()
    np.testing.assert_allclose(opposite[0, 1], -(opposite[0, 0] - eps), rtol=1e-10)
    unrelated = flip_flop(tf.constant(W), _tf(COVARIANCES), eps)[0][2].numpy()
    assert abs(unrelated[0, 1]) < 0.9 * np.sqrt(unrelated[0, 0] * unrelated[1, 1])


def test_identity_covariances_make_the_prior_an_l2_penalty() -> None:
    prior = TensorNormalPrior(strength=0.25)
    weights = tf.Variable(tf.constant(W, tf.float32))
    with tf.GradientTape() as tape:
        value = prior(weights)
    np.testing.assert_allclose(value.numpy(), 0.5 * np.sum(W**2), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(value, weights).numpy(), W, rtol=1e-6)
    np.testing.assert_allclose(prior.losses[0].numpy(), 0.25 * 0.5 * np.sum(W**2), rtol=1e-6)
    assert [c.shape for c in prior.covariances] == [(2, 2), (3, 3), (2, 2)]
    assert not prior.trainable_weights
    assert int(prior.calls.numpy()) == 0  # inference neither updates nor counts


def test_covariances_update_every_interval_training_calls_and_not_in_inference() -> None:
    prior = TensorNormalPrior(update_interval=3, epsilon=1e-2)
    weights = tf.constant(W, tf.float32)

    def covariances() -> list[np.ndarray]:
        return [c.numpy() for c in [*prior.covariances, prior.variance]]

    prior(weights, training=False)
    np.testing.assert_allclose(covariances()[2], np.eye(2))
    seen = []
    for step in range(4):
        prior(weights * (step + 1.0), training=True)  # a different W each step
        seen.append(covariances())
    expected, variance = flip_flop(tf.constant(W, tf.float32), [tf.eye(d) for d in W.shape], 1e-2)
    for got, want in zip(seen[0], [*expected, variance], strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4)
    for later in seen[1:3]:  # calls 2 and 3: unchanged
        for a, b in zip(later, seen[0], strict=True):
            np.testing.assert_array_equal(a, b)
    # call 4 updates, from 4 W and the covariances of call 1
    expected, variance = flip_flop(4.0 * tf.constant(W, tf.float32), seen[0][:3], 1e-2)
    for got, want in zip(seen[3], [*expected, variance], strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4)
    assert not np.allclose(seen[3][0], seen[0][0])
    assert int(prior.calls.numpy()) == 4


def test_the_prior_is_in_the_models_regularization_loss(schema: Schema) -> None:
    features, _ = make_data(32, seed=1)
    model = RankingModel(schema, "mrn", {"prior_strength": 0.5, "embedding_l2": 0.0})
    model(features)
    kernels = model.backbone.related_weights().numpy()
    assert kernels.shape == (64, 32, 2)
    np.testing.assert_allclose(float(tf.add_n(model.losses)), 0.25 * np.sum(kernels**2), rtol=1e-5)


@pytest.mark.parametrize("tasks", [1, 2, 3])
def test_trains_on_one_two_and_three_tasks_and_fits_the_covariances(tasks: int) -> None:
    schema, features, labels = first_tasks(tasks, 1024)
    keras.utils.set_random_seed(0)
    model = RankingModel(
        schema, "mrn", {"cross_layers": 0, "units": [16, 8], "prior_strength": 1e-3}
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    history = model.fit(dataset, epochs=4, verbose=0).history
    losses = history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.isfinite(history["regularization_loss"]).all()
    prior = model.backbone.prior
    assert int(prior.calls.numpy()) == 4 * 8  # one training call a step
    task = prior.covariances[2].numpy()
    assert task.shape == (tasks, tasks) and not np.allclose(task, np.eye(tasks))
    np.testing.assert_allclose(task, task.T, atol=1e-7)
    assert (np.linalg.eigvalsh(task) > 0).all()


def test_get_config_round_trips() -> None:
    x = tf.random.normal([4, 6], seed=5)
    prior = TensorNormalPrior(strength=0.1, update_interval=5, epsilon=1e-4)
    mrn = MRN(3, [5, 4], "gelu", 0.1, prior_strength=0.2, update_interval=7, epsilon=1e-2)
    layers: list[Any] = [prior, mrn]
    for layer in layers:
        clone = assert_config_round_trips(layer)
    mrn(x, training=True)  # updates the covariances: they must be copied too
    first = mrn(x)
    clone(x)
    clone.set_weights(mrn.get_weights())
    np.testing.assert_allclose(clone.prior.covariances[2].numpy(), mrn.prior.covariances[2].numpy())
    for a, b in zip(first, clone(x), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    np.testing.assert_allclose(clone.losses[-1].numpy(), mrn.losses[-1].numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TensorNormalPrior(strength=-1.0), "strength must be >= 0, got -1.0"),
        (lambda: TensorNormalPrior(update_interval=0), "update_interval must be >= 1, got 0"),
        (lambda: TensorNormalPrior(epsilon=0.0), "epsilon must be > 0, got 0.0"),
        (lambda: MRN(2, units=[]), r"units must be a non-empty list .*got \[\]"),
        (lambda: MRN(2, units=[8, -1]), r"got \[8, -1\]"),
        (lambda: MRN(2, [8], epsilon=-1.0), "epsilon must be > 0, got -1.0"),
    ],
)
def test_bad_arguments_raise(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_unknown_shapes_and_bad_hyperparameters_raise(schema: Schema) -> None:
    with pytest.raises(ValueError, match="needs a fixed shape"):
        TensorNormalPrior().build(tf.TensorShape([None, 3, 2]))
    with pytest.raises(ConfigError, match="update_interval: Input should be greater"):
        RankingModel(schema, "mrn", {"update_interval": 0})
    with pytest.raises(ConfigError, match="epsilon: Input should be greater than 0"):
        RankingModel(schema, "mrn", {"epsilon": 0.0})
    with pytest.raises(ConfigError, match="prior_strenght: unknown key"):
        RankingModel(schema, "mrn", {"prior_strenght": 1.0})
