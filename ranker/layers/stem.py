"""STEM's experts: task-specific experts on each task's own embedding, shared experts on the shared
embedding, and per task a gate over all of them that learns only through the task's own parts.

From "STEM: Unleashing the Power of Embeddings for Multi-task Recommendation" (Su et al., AAAI
2024), its All Forward Task-specific Backward (AFTB) gating network: task k's gate mixes every
expert (every task's specific experts and the shared ones: all forward), but the other tasks'
specific experts enter task k's mixture through a stop-gradient, so task k's loss trains only its
own experts and embedding and the shared ones (task-specific backward).
"""

from __future__ import annotations

from typing import Any

from ranker.keras_compat import keras, tf
from ranker.layers.experts import Gate, mix, task_and_shared_experts
from ranker.layers.mlp import MLP


@keras.utils.register_keras_serializable(package="mtrank")
class STEMExperts(keras.layers.Layer):
    """`num_tasks` specific expert sets and one shared expert set, with one AFTB gate per task.

    Input: a list of `num_tasks + 1` tensors [B, D]: task k's own embedding at k, the shared
    embedding last. Output: (a list of `num_tasks` representations [B, D_out], the list of their
    gate weights [B, num_tasks * specific_experts + shared_experts]), the experts in the order
    task 0's specific ones, ..., task T-1's, then the shared ones.

    Task k: g_k = softmax(W_k (e_k + e_s)); h_k = sum_e g_k[e] * out_e, where out_e is expert e's
    output, under a stop-gradient when e is another task's specific expert. The gate reads the sum
    of the task's own and the shared embedding, as the authors' code does
    (github.com/LiangcaiSu/STEM, models/STEM.py).
    """

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        specific_experts: int = 1,
        shared_experts: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"STEMExperts num_tasks must be >= 1, got {num_tasks}")
        if specific_experts < 1 or shared_experts < 1:
            raise ValueError(
                "STEMExperts needs specific_experts >= 1 and shared_experts >= 1, "
                f"got specific_experts={specific_experts}, shared_experts={shared_experts}"
            )
        if isinstance(expert, dict):
            expert = keras.layers.deserialize(expert)
        self.num_tasks = int(num_tasks)
        self.specific_experts = int(specific_experts)
        self.shared_experts = int(shared_experts)
        self.task_experts, shared = task_and_shared_experts(
            expert, self.num_tasks, self.specific_experts, self.shared_experts
        )
        assert shared is not None  # shared_experts >= 1, checked above
        self.shared = shared
        self.gates = [Gate(self.total_experts, name=f"task_{k}_gate") for k in range(num_tasks)]

    @property
    def total_experts(self) -> int:
        """How many experts every task's gate mixes."""
        return self.num_tasks * self.specific_experts + self.shared_experts

    def call(
        self, inputs: list[tf.Tensor], training: bool | None = None
    ) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """Returns (task representations, their gate weights), both in task order."""
        if len(inputs) != self.num_tasks + 1:
            raise ValueError(
                f"STEMExperts expects {self.num_tasks + 1} inputs (one per task, then the shared "
                f"one), got {len(inputs)}"
            )
        shared_embedding = inputs[-1]
        specific = [
            experts(inputs[k], training=training) for k, experts in enumerate(self.task_experts)
        ]
        shared = self.shared(shared_embedding, training=training)
        outputs, gates = [], []
        for k in range(self.num_tasks):
            # all forward: every expert's output; task-specific backward: others' held constant
            candidates = [
                out if j == k else tf.stop_gradient(out) for j, out in enumerate(specific)
            ]
            weights = self.gates[k](inputs[k] + shared_embedding)
            outputs.append(mix(tf.concat([*candidates, shared], axis=1), weights))
            gates.append(weights)
        return outputs, gates

    @property
    def expert_config(self) -> dict[str, Any]:
        """The serialized template `expert` the expert sets were cloned from."""
        return self.shared.expert_config

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "expert": self.expert_config,
            "specific_experts": self.specific_experts,
            "shared_experts": self.shared_experts,
        }
