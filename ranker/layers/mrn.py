"""A tensor normal prior on a parameter tensor, its covariances fit by the flip-flop algorithm.

From "Learning Multiple Tasks with Multilinear Relationship Networks" (Long, Cao, Wang and Yu,
NeurIPS 2017). The task-specific layers' weights, stacked into W of shape [D_1, ..., D_N] (for
MRN [D_in, D_out, T]: input features, output features, tasks), get the prior
vec(W) ~ N(0, σ² Σ_1 ⊗ ... ⊗ Σ_N) (vec row-major: the last mode varies fastest), whose negative
log density, up to its constant |W|/2 ln 2π (|W| = D_1 ... D_N, the number of weights), is

    1/2 [ vec(W)^T (Σ_1 ⊗ ... ⊗ Σ_N)^-1 vec(W) / σ² + |W| ln σ² + Σ_n (|W| / D_n) ln|Σ_n| ].

The quadratic form is computed mode by mode, never forming the Kronecker product: with P_n =
Σ_n^-1, it is <W, W x_1 P_1 ... x_N P_N>, since (⊗_n Σ_n)^-1 = ⊗_n Σ_n^-1. Given W, each
covariance has the paper's closed-form (flip-flop) update, the others fixed:

    Σ_n ∝ (D_n / |W|) W_(n) (⊗_{m != n} Σ_m)^-1 W_(n)^T,

W_(n) the mode-n unfolding, then the paper's ε I for invertibility. The paper's updates leave the
split of the scale between the modes free (c Σ_1 ⊗ Σ_2 / c is the same prior), and with the ε I
terms it drifts: with fewer columns than rows in an unfolding (D_out T < D_in, one task's [64, 32]
layer), Σ_in doubled and Σ_out halved every update until Cholesky failed. So each Σ_n is the
update rescaled to mean eigenvalue 1 (as the authors' code, thuml/MTlearn, trace-normalizes its
matrices) plus ε I, ε then relative, and the scale is its own maximum-likelihood variance σ² =
quadratic form / |W| after the sweep: without the ε terms, the same Kronecker product as the
paper's sweep.
"""

from __future__ import annotations

import string
from typing import Any

from ranker.keras_compat import keras, tf

_INDICES = string.ascii_lowercase[:20]  # einsum letters for the modes; y, z stay free
_TINY = 1e-12


def mode_product(tensor: tf.Tensor, matrix: tf.Tensor, mode: int) -> tf.Tensor:
    """tensor x_mode matrix: out[..., i, ...] = sum_j matrix[i, j] tensor[..., j, ...]."""
    modes = _INDICES[: tensor.shape.rank]
    out = modes.replace(modes[mode], "z")
    return tf.einsum(f"z{modes[mode]},{modes}->{out}", matrix, tensor)


def _inverse(covariance: tf.Tensor) -> tf.Tensor:
    chol = tf.linalg.cholesky(covariance)
    return tf.linalg.cholesky_solve(chol, tf.eye(tf.shape(covariance)[0], dtype=covariance.dtype))


def _log_det(covariance: tf.Tensor) -> tf.Tensor:
    chol = tf.linalg.cholesky(covariance)
    return 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(chol)))


def quadratic_form(weights: tf.Tensor, covariances: list[tf.Tensor]) -> tf.Tensor:
    """vec(W)^T (Σ_1 ⊗ ... ⊗ Σ_N)^-1 vec(W), mode by mode."""
    whitened = weights
    for mode, covariance in enumerate(covariances):
        whitened = mode_product(whitened, _inverse(covariance), mode)
    return tf.reduce_sum(weights * whitened)


def negative_log_density(
    weights: tf.Tensor, covariances: list[tf.Tensor], variance: tf.Tensor | float = 1.0
) -> tf.Tensor:
    """-ln TN(W; 0, σ² Σ_1 ⊗ ... ⊗ Σ_N) without the constant |W|/2 ln 2π (module docstring)."""
    size = float(weights.shape.num_elements())
    variance = tf.cast(tf.convert_to_tensor(variance, dtype_hint=weights.dtype), weights.dtype)
    log_dets = [
        size / float(dim) * _log_det(c)
        for dim, c in zip(weights.shape.as_list(), covariances, strict=True)
    ]
    quadratic = quadratic_form(weights, covariances) / variance
    return 0.5 * (quadratic + size * tf.math.log(variance) + tf.add_n(log_dets))


def update_covariance(
    weights: tf.Tensor, covariances: list[tf.Tensor], mode: int, epsilon: float
) -> tf.Tensor:
    """The flip-flop update of Σ_mode given the other modes' covariances, at mean eigenvalue 1,
    plus ε I (module docstring)."""
    whitened = weights
    for other, covariance in enumerate(covariances):
        if other != mode:
            whitened = mode_product(whitened, _inverse(covariance), other)
    modes = _INDICES[: weights.shape.rank]
    left = modes.replace(modes[mode], "y")
    scatter = tf.einsum(f"{left},{modes}->y{modes[mode]}", weights, whitened)
    scatter = 0.5 * (scatter + tf.transpose(scatter))  # symmetric to the last bit
    dim = weights.shape[mode]
    # the paper's factor D_n / |W| cancels in the rescaling; all-zero weights give ε I
    scale = float(dim) / tf.maximum(tf.linalg.trace(scatter), _TINY)
    return scale * scatter + epsilon * tf.eye(dim, dtype=weights.dtype)


def flip_flop(
    weights: tf.Tensor, covariances: list[tf.Tensor], epsilon: float
) -> tuple[list[tf.Tensor], tf.Tensor]:
    """One sweep of the flip-flop updates, Σ_1 to Σ_N, each given the others' latest values, and
    then the variance σ² that maximizes the likelihood given them."""
    current = list(covariances)
    for mode in range(len(current)):
        current[mode] = update_covariance(weights, current, mode, epsilon)
    size = float(weights.shape.num_elements())
    variance = tf.maximum(quadratic_form(weights, current) / size, _TINY)
    return current, variance


@keras.utils.register_keras_serializable(package="mtrank")
class TensorNormalPrior(keras.layers.Layer):
    """Adds `strength` times the prior's negative log density of its input W (any fixed shape) to
    the layer's losses (`add_loss`; the model sums layer losses into its regularization loss) and
    returns the density term unscaled.

    The covariances Σ_n (`covariances[n]`, [D_n, D_n]) and the variance σ² are non-trainable
    variables, the identity and 1 until the first update, which makes the prior the L2 penalty
    1/2 ||W||^2. They are never differentiated: in training, every `update_interval`-th call (the
    first included) runs one flip-flop sweep on the current W before the density is computed;
    W's gradient then comes from the quadratic form with the covariances fixed. Fit, the
    density's log-determinant terms are those of small variances: the value (and the model's
    logged regularization loss) goes below 0, with no effect on W's gradient. On several replicas each replica updates
    its own copy of the covariances from the same (mirrored) W; reads outside a replica give the
    first replica's.
    """

    def __init__(
        self,
        strength: float = 1.0,
        update_interval: int = 1,
        epsilon: float = 1e-2,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")  # covariances and their inverses in float32
        super().__init__(**kwargs)
        if not strength >= 0:
            raise ValueError(f"TensorNormalPrior strength must be >= 0, got {strength}")
        if update_interval < 1:
            raise ValueError(
                f"TensorNormalPrior update_interval must be >= 1, got {update_interval}"
            )
        if not epsilon > 0:
            raise ValueError(f"TensorNormalPrior epsilon must be > 0, got {epsilon}")
        self.strength = float(strength)
        self.update_interval = int(update_interval)
        self.epsilon = float(epsilon)

    def build(self, input_shape: Any) -> None:
        shape = tf.TensorShape(input_shape)
        if shape.rank is None or not shape.is_fully_defined() or shape.rank > len(_INDICES):
            raise ValueError(f"TensorNormalPrior needs a fixed shape, got {shape}")
        replicated = {
            "trainable": False,
            # each replica keeps and updates its own copy (no synchronization inside `tf.cond`);
            # the copies agree, every replica updating from the same mirrored W
            "synchronization": tf.VariableSynchronization.ON_READ,
            "aggregation": tf.VariableAggregation.ONLY_FIRST_REPLICA,
        }
        self.covariances = [
            self.add_weight(
                name=f"covariance_{mode}",
                shape=(dim, dim),
                initializer="identity",
                dtype="float32",
                **replicated,
            )
            for mode, dim in enumerate(shape.as_list())
        ]
        self.variance = self.add_weight(
            name="variance", shape=(), initializer="ones", dtype="float32", **replicated
        )
        self.calls = self.add_weight(
            name="training_calls", shape=(), initializer="zeros", dtype="int64", **replicated
        )
        super().build(input_shape)

    def call(self, weights: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        weights = tf.cast(weights, tf.float32)
        if training:
            self._maybe_update(tf.stop_gradient(weights))
        covariances = [tf.convert_to_tensor(c) for c in self.covariances]
        value = negative_log_density(weights, covariances, tf.convert_to_tensor(self.variance))
        self.add_loss(self.strength * value)
        return value

    def _maybe_update(self, weights: tf.Tensor) -> None:
        def update() -> tf.Tensor:
            current = [tf.convert_to_tensor(c) for c in self.covariances]
            new, variance = flip_flop(weights, current, self.epsilon)
            assigns = [c.assign(n) for c, n in zip(self.covariances, new, strict=True)]
            assigns.append(self.variance.assign(variance))
            with tf.control_dependencies(assigns):
                return tf.constant(True)

        due = tf.equal(self.calls % self.update_interval, 0)
        tf.cond(due, update, lambda: tf.constant(False))
        self.calls.assign_add(1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "strength": self.strength,
            "update_interval": self.update_interval,
            "epsilon": self.epsilon,
        }
