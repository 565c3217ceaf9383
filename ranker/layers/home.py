"""HoME's parts: feature-gated experts, the self-gate, and one level of hierarchy-masked gates.

From "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at Kuaishou" (Wang et al.,
KDD 2025, arXiv 2408.05430). The experts themselves are `MLP`s with batch norm and Swish (the
paper's expert normalization: Swish(BN(Wx + b)), so that every expert's output is on one scale);
these layers add what the paper puts around them.
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.experts import ExpertSet, Gate, mix
from ranker.layers.mlp import MLP


@keras.utils.register_keras_serializable(package="mtrank")
class FeatureGate(keras.layers.Layer):
    """The paper's feature-gate: x * 2 * sigmoid((x A) B), A [D, rank] and B [rank, D], a LoRA-style
    low-rank projection that gives an expert its own re-weighting of the input features.

    B starts at zero (as LoRA's up-projection does), so the gate starts at 2 * sigmoid(0) = 1: the
    identity, each expert's view of the input diverging from the shared one as B learns.
    """

    def __init__(
        self,
        rank: int,
        down_initializer: Any = "glorot_uniform",
        up_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if rank < 1:
            raise ValueError(f"FeatureGate rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.down_initializer = keras.initializers.get(down_initializer)
        self.up_initializer = keras.initializers.get(up_initializer)
        self.down = keras.layers.Dense(
            self.rank, use_bias=False, kernel_initializer=self.down_initializer, name="down"
        )
        self.up: keras.layers.Dense | None = None  # its width is the input's: made in `build`

    def build(self, input_shape: Any) -> None:
        width = int(input_shape[-1])
        self.up = keras.layers.Dense(
            width, use_bias=False, kernel_initializer=self.up_initializer, name="up"
        )
        self.down.build(tf.TensorShape([None, width]))
        self.up.build(tf.TensorShape([None, self.rank]))
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        assert self.up is not None  # built
        return x * (2.0 * tf.sigmoid(self.up(self.down(x))))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rank": self.rank,
            "down_initializer": keras.initializers.serialize(self.down_initializer),
            "up_initializer": keras.initializers.serialize(self.up_initializer),
        }


@keras.utils.register_keras_serializable(package="mtrank")
class FeatureGatedExperts(keras.layers.Layer):
    """`num_experts` copies of `expert` stacked to [B, E, D_out], expert i reading its own
    privatized input FeatureGate_i(x); without `feature_gate_rank`, a plain `ExpertSet` on x."""

    def __init__(
        self,
        expert: MLP | dict[str, Any],
        num_experts: int,
        feature_gate_rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if feature_gate_rank is not None and feature_gate_rank < 1:
            raise ValueError(
                f"FeatureGatedExperts feature_gate_rank must be >= 1 or None, got {feature_gate_rank}"
            )
        self.experts = ExpertSet(expert, num_experts, name="experts")
        self.feature_gate_rank = None if feature_gate_rank is None else int(feature_gate_rank)
        self.feature_gates = [
            FeatureGate(self.feature_gate_rank, name=f"feature_gate_{i}")
            for i in range(self.experts.num_experts)
            if self.feature_gate_rank is not None
        ]

    @property
    def num_experts(self) -> int:
        return self.experts.num_experts

    @property
    def output_dim(self) -> int:
        return self.experts.output_dim

    def build(self, input_shape: Any) -> None:
        if self.feature_gates:
            # `call` runs the set's experts one by one, never the set itself: build it here, or
            # every export warns that it is not built
            self.experts.build(input_shape)
        super().build(input_shape)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """[B, D] -> [B, E, D_out]."""
        if not self.feature_gates:
            return self.experts(x, training=training)
        return tf.stack(
            [
                expert(gate(x), training=training)
                for expert, gate in zip(self.experts.experts, self.feature_gates, strict=True)
            ],
            axis=1,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": self.experts.expert_config,
            "num_experts": self.num_experts,
            "feature_gate_rank": self.feature_gate_rank,
        }


@keras.utils.register_keras_serializable(package="mtrank")
class SelfGate(keras.layers.Layer):
    """The paper's self-gate: weights over a gate's own experts, sigmoid(x w) [B, 1] for a single
    expert, softmax(x W) [B, E] for several. The own experts' sum under these weights is added to
    the gate's mixture: a path by which they always reach the output, whatever the main gate.

    Computed in float32, as `Gate` is.
    """

    def __init__(self, num_experts: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"SelfGate num_experts must be >= 1, got {num_experts}")
        self.num_experts = int(num_experts)
        self.logits = keras.layers.Dense(self.num_experts, dtype="float32", name="logits")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        logits = self.logits(tf.cast(x, tf.float32))
        return tf.sigmoid(logits) if self.num_experts == 1 else tf.nn.softmax(logits, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_experts": self.num_experts}


@keras.utils.register_keras_serializable(package="mtrank")
class HierarchyLevel(keras.layers.Layer):
    """One level of HoME: blocks of experts, and gates that each mix only the blocks they may see.

    Block b has `block_experts[b]` copies of `expert` (each feature-gated when `feature_gate_rank`
    is set). Gate c sees the blocks `gate_blocks[c]` (the hierarchy mask): its softmax runs over
    their experts alone, and its weights over the level's other experts are exactly 0. With
    `own_blocks[c]` set (a block gate c sees), gate c's output also adds that block's experts
    under a `SelfGate` reading the gate's input.

    Call: `level(block_inputs, gate_inputs)`, one [B, D] per block (what its experts read) and one
    per gate (what the gate reads). Returns (one representation [B, D_out] per gate, each gate's
    weights [B, E] over all E experts of the level, in block order).
    """

    def __init__(
        self,
        expert: MLP | dict[str, Any],
        block_experts: list[int],
        gate_blocks: list[list[int]],
        own_blocks: list[int | None] | None = None,
        feature_gate_rank: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        block_experts = [int(n) for n in block_experts]
        gate_blocks = [sorted(int(b) for b in blocks) for blocks in gate_blocks]
        own_blocks = [None] * len(gate_blocks) if own_blocks is None else list(own_blocks)
        _check_level(block_experts, gate_blocks, own_blocks)
        if isinstance(expert, dict):
            expert = keras.layers.deserialize(expert)
        self.block_experts = block_experts
        self.gate_blocks = gate_blocks
        self.own_blocks = [None if b is None else int(b) for b in own_blocks]
        self.feature_gate_rank = feature_gate_rank
        self.blocks = [
            FeatureGatedExperts(expert, n, feature_gate_rank, name=f"block_{b}")
            for b, n in enumerate(block_experts)
        ]
        self.gates = [
            Gate(sum(block_experts[b] for b in blocks), name=f"gate_{c}")
            for c, blocks in enumerate(gate_blocks)
        ]
        self.self_gates = {
            f"gate_{c}": SelfGate(block_experts[own], name=f"self_gate_{c}")
            for c, own in enumerate(self.own_blocks)
            if own is not None
        }

    @property
    def num_experts(self) -> int:
        return sum(self.block_experts)

    def call(
        self,
        block_inputs: list[tf.Tensor],
        gate_inputs: list[tf.Tensor],
        training: bool | None = None,
    ) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        if len(block_inputs) != len(self.blocks) or len(gate_inputs) != len(self.gates):
            raise ValueError(
                f"HierarchyLevel expects {len(self.blocks)} block inputs and {len(self.gates)} "
                f"gate inputs, got {len(block_inputs)} and {len(gate_inputs)}"
            )
        experts = [
            block(x, training=training) for block, x in zip(self.blocks, block_inputs, strict=True)
        ]
        stacked = tf.concat(experts, axis=1)
        outputs, weights = [], []
        for c, gate in enumerate(self.gates):
            full = self._unmask(gate(gate_inputs[c]), self.gate_blocks[c])
            output = mix(stacked, full)
            own = self.own_blocks[c]
            if own is not None:
                output += mix(experts[own], self.self_gates[f"gate_{c}"](gate_inputs[c]))
            outputs.append(output)
            weights.append(full)
        return outputs, weights

    def _unmask(self, visible: tf.Tensor, blocks: list[int]) -> tf.Tensor:
        """Weights over the visible blocks' experts [B, E_visible] -> over all experts [B, E],
        zeros in the columns of the blocks the gate may not see."""
        rows = tf.shape(visible)[0]
        pieces, start = [], 0
        for b, n in enumerate(self.block_experts):
            if b in blocks:
                pieces.append(visible[:, start : start + n])
                start += n
            else:
                pieces.append(tf.zeros(tf.stack([rows, n]), visible.dtype))
        return tf.concat(pieces, axis=1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": self.blocks[0].experts.expert_config,
            "block_experts": self.block_experts,
            "gate_blocks": self.gate_blocks,
            "own_blocks": self.own_blocks,
            "feature_gate_rank": self.feature_gate_rank,
        }


def _check_level(
    block_experts: list[int], gate_blocks: list[list[int]], own_blocks: list[int | None]
) -> None:
    if not block_experts or any(n < 1 for n in block_experts):
        raise ValueError(
            f"HierarchyLevel block_experts must be a non-empty list of counts >= 1, got {block_experts}"
        )
    if not gate_blocks:
        raise ValueError("HierarchyLevel needs at least one gate, got gate_blocks=[]")
    blocks = range(len(block_experts))
    for c, seen in enumerate(gate_blocks):
        if not seen or len(set(seen)) != len(seen) or any(b not in blocks for b in seen):
            raise ValueError(
                f"HierarchyLevel gate_blocks[{c}] must list distinct blocks of "
                f"0..{len(block_experts) - 1}, at least one, got {seen}"
            )
    if len(own_blocks) != len(gate_blocks):
        raise ValueError(
            f"HierarchyLevel own_blocks must have one entry per gate ({len(gate_blocks)}), "
            f"got {own_blocks}"
        )
    for c, own in enumerate(own_blocks):
        if own is not None and own not in gate_blocks[c]:
            raise ValueError(
                f"HierarchyLevel own_blocks[{c}] must be a block gate {c} sees "
                f"({gate_blocks[c]}) or None, got {own}"
            )
