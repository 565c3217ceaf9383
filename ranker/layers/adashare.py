"""AdaShare's pieces: select-or-skip residual blocks, the policy's Gumbel-softmax samples, its
regularizers and schedules.

From "AdaShare: Learning What To Share For Efficient Deep Multi-Task Learning" (Sun, Panda, Feris
and Saenko, NeurIPS 2020). Each task k has, for every block l of a shared stack, policy logits
alpha_k,l = (select, skip); their softmax gives the probability p_k,l that task k executes block l.
In training, u_k,l in {0, 1} is drawn by Gumbel-softmax at temperature τ; a skipped block leaves
the task's hidden state as it was (the block's shortcut). The paper's regularizers, with l
counted from 1 at the lowest block of L:

    L_sparsity = sum_{k, l} log p_k,l                       (pushes toward skipping: efficiency)
    L_sharing  = sum_{k1, k2} sum_l (L - l) / L |p_k1,l - p_k2,l|   (lower blocks shared)

The authors' code (sunxm2357/AdaShare, `envs/blockdrop_env.py`) writes both differently: the
sparsity term as the cross-entropy of the logits toward "skip", averaged over blocks, and the
sharing term on the raw select logits over each task pair once, weighted (l / L) (largest at
the top). These follow the paper's equations.
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.mlp import MLP

SELECT, SKIP = 0, 1  # the policy logits' last axis
# the Gumbel-softmax temperature never anneals below this (or the initial one, if lower): the
# hard samples do not depend on it, and the surrogate gradient p (1 - p) / τ stays bounded
MIN_TEMPERATURE = 1e-2
_TINY = 1e-20


def select_probabilities(logits: tf.Tensor) -> tf.Tensor:
    """p = softmax(logits)[select], [..., 2] -> [...]: the probability of executing a block."""
    return tf.nn.softmax(logits, axis=-1)[..., SELECT]


def sample_select(logits: tf.Tensor, temperature: tf.Tensor, hard: bool = True) -> tf.Tensor:
    """Gumbel-softmax samples of the select weight u, [..., 2] -> [...].

    y = softmax((logits + g) / τ), g ~ Gumbel(0, 1) i.i.d.; u = y[select]. With `hard`, u is the
    one-hot argmax (0 or 1) in the forward pass and y's gradient in the backward pass (the
    straight-through estimator)."""
    uniform = tf.random.uniform(tf.shape(logits), minval=_TINY, maxval=1.0, dtype=logits.dtype)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    soft = tf.nn.softmax((logits + gumbel) / tf.cast(temperature, logits.dtype), axis=-1)
    if hard:
        one_hot = tf.one_hot(tf.argmax(soft, axis=-1), 2, dtype=soft.dtype)
        soft = tf.stop_gradient(one_hot - soft) + soft
    return soft[..., SELECT]


def greedy_select(logits: tf.Tensor) -> tf.Tensor:
    """The deterministic policy, [..., 2] -> [...]: 1 where select's logit is the larger (ties
    select, as the authors' argmax), else 0."""
    return tf.cast(logits[..., SELECT] >= logits[..., SKIP], logits.dtype)


def sparsity_loss(logits: tf.Tensor, learnable: tf.Tensor) -> tf.Tensor:
    """sum_{k, l} log p_k,l over the blocks whose policy is learnable; logits [T, L, 2],
    learnable [L] bool."""
    log_select = tf.nn.log_softmax(logits, axis=-1)[..., SELECT]
    mask = tf.cast(learnable, log_select.dtype)[tf.newaxis, :]
    return tf.reduce_sum(log_select * mask)


def sharing_loss(logits: tf.Tensor, learnable: tf.Tensor) -> tf.Tensor:
    """sum over ordered task pairs (k1, k2) and learnable blocks l = 1..L of
    (L - l) / L |p_k1,l - p_k2,l|; logits [T, L, 2], learnable [L] bool."""
    p = select_probabilities(logits)  # [T, L]
    blocks = int(logits.shape[1])
    weights = tf.range(blocks - 1, -1, -1, dtype=p.dtype) / float(blocks)  # (L - l) / L
    weights *= tf.cast(learnable, p.dtype)
    gaps = tf.abs(p[:, tf.newaxis, :] - p[tf.newaxis, :, :])  # [T, T, L]
    return tf.reduce_sum(gaps * weights)


def annealed_temperature(
    step: tf.Tensor, initial: float, decay: float, anneal_steps: int, start: int = 0
) -> tf.Tensor:
    """τ = initial * decay ** floor((step - start) / anneal_steps), from `start` on (before it,
    `initial`), never below min(initial, MIN_TEMPERATURE)."""
    steps = tf.maximum(tf.cast(step, tf.float32) - float(start), 0.0)
    decays = tf.math.floor(steps / float(anneal_steps))
    temperature = initial * tf.pow(tf.constant(decay, tf.float32), decays)
    return tf.maximum(temperature, min(initial, MIN_TEMPERATURE))


def learnable_blocks(
    step: tf.Tensor, num_blocks: int, curriculum_steps: int, warmup_steps: int = 0
) -> tf.Tensor:
    """[L] bool: block l (from 0 at the lowest) has a learned policy once
    step >= warmup_steps + (L - 1 - l) * curriculum_steps; the last block first, the lowest
    last (the paper's curriculum learns the policy of the last j blocks at stage j)."""
    starts = warmup_steps + tf.range(num_blocks - 1, -1, -1, dtype=tf.int64) * curriculum_steps
    return tf.cast(step, tf.int64) >= starts


@keras.utils.register_keras_serializable(package="mtrank")
class SkippableBlock(keras.layers.Layer):
    """A residual MLP block that a task executes or skips: [h, u] -> s(h) + u f(h).

    f is one dense layer of `width` with `activation` (and dropout), s the shortcut: the
    identity, or a bias-free linear projection to `width` when h's width differs (the authors'
    ResNet blocks project their shortcut, `ds`, the same way, and keep it when skipping). u = 1
    gives the block, s(h) + f(h); u = 0 skips it, s(h). h is [..., D]; u broadcasts against
    it: with h [B, D] and u [T, 1, 1] the output is every task's [T, B, width].
    """

    def __init__(
        self, width: int, activation: str = "relu", dropout: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if int(width) < 1:
            raise ValueError(f"SkippableBlock width must be >= 1, got {width}")
        self.width = int(width)
        self.activation = activation
        self.dropout = float(dropout)
        self.branch = MLP([self.width], activation=activation, dropout=dropout, name="branch")
        self.projection: keras.layers.Dense | None = None

    def build(self, input_shape: Any) -> None:
        hidden_shape = tf.TensorShape(input_shape[0])
        if hidden_shape[-1] != self.width:
            self.projection = keras.layers.Dense(self.width, use_bias=False, name="projection")
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor], training: bool | None = None) -> tf.Tensor:
        hidden, select = inputs
        shortcut = hidden if self.projection is None else self.projection(hidden)
        branch = self.branch(hidden, training=training)
        return shortcut + tf.cast(select, branch.dtype) * branch

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "width": self.width,
            "activation": self.activation,
            "dropout": self.dropout,
        }
