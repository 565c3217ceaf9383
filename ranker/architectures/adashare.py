"""AdaShare: one stack of residual blocks, each task learning which of them to execute.

From "AdaShare: Learning What To Share For Efficient Deep Multi-Task Learning" (Sun, Panda, Feris
and Saenko, NeurIPS 2020), on MLP blocks instead of ResNet ones. Block l maps a task's hidden
state h to s_l(h) + u_k,l f_l(h) (`ranker.layers.adashare.SkippableBlock`: f_l a dense layer,
s_l the identity or, where the width changes, as in the first block when the input's width is
not `units[0]`, a linear projection); u_k,l = 1 executes the block for task k, 0 skips it. Task
k's representation is its hidden state after the last block.

The policy logits alpha_k,l = (select, skip) are trainable weights of the backbone, trained jointly
with the blocks (the paper's Figure 2; the authors' code alternates the two on two halves of the
training set). In training u_k,l is a straight-through Gumbel-softmax sample at temperature τ,
one per task and block for the whole batch; at inference u_k,l = 1 where alpha_select >= alpha_skip,
so a SavedModel export fixes the learned policy. The paper's sparsity and sharing losses
(`ranker.layers.adashare`) go to the model's regularization loss through `add_loss`.

Schedules, on the backbone's count of training calls (a non-trainable variable, one copy per
replica under a MirroredStrategy, as `ranker.layers.mrn` counts its updates): a warm-up of
`warmup_steps` with every block executed (the paper's warm-up trains the plain shared network),
then the curriculum: block l's policy is learned (sampled, and regularized) from step
warmup_steps + (L - 1 - l) * curriculum_steps on, the last block first; until then the block is
executed, in training and at inference. τ starts at `initial_temperature` and is multiplied by
`temperature_decay` every `anneal_steps` steps after the warm-up.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.keras_compat import tf
from ranker.layers.adashare import (
    SkippableBlock,
    annealed_temperature,
    greedy_select,
    learnable_blocks,
    sample_select,
    select_probabilities,
    sharing_loss,
    sparsity_loss,
)
from ranker.registry import register


class AdaShareConfig(ArchitectureConfig):
    # one width per block; a shortcut projects where the width changes
    units: list[int] = Field(default_factory=lambda: [64, 64, 64, 64], min_length=1)
    # the authors' configs use 0.001 (NYU v2 3-task, Taskonomy) to 0.05 (NYU v2 2-task), on
    # their form of the term, a mean over blocks; the paper's sum of log p, here, pushes a
    # block's logits L times harder at p = 0.5: the smallest
    sparsity_weight: float = Field(default=0.001, ge=0.0)
    # the authors' NYU v2 configs: 0.05 (CityScapes 0.1, Taskonomy 0.005)
    sharing_weight: float = Field(default=0.05, ge=0.0)
    # τ from 5 (the paper's), times 0.965 each decay (the authors' configs)
    initial_temperature: float = Field(default=5.0, gt=0.0)
    temperature_decay: float = Field(default=0.965, gt=0.0, le=1.0)
    # Sized for runs of a few thousand steps: the authors warm up for a fifth of their
    # iterations, then decay τ once a policy epoch (hundreds of times a run, to about 0.02 on
    # Taskonomy) and open a block every 1 to 3 policy epochs (all open within about the first
    # tenth of policy learning). Here, after 500 warm-up steps, a block opens every 75 steps and
    # τ decays every 25: 0.14 after 2,500 steps.
    anneal_steps: int = Field(default=25, ge=1)
    curriculum_steps: int = Field(default=75, ge=0)
    warmup_steps: int = Field(default=500, ge=0)
    # straight-through hard samples (the forward pass executes or skips, as at inference); False
    # mixes f(h) by the soft sample, as the authors' configs (`hard_sampling: False`)
    straight_through: bool = True


@register("adashare")
class AdaShare(Backbone):
    """Task k's representation is h_k,L, h_k,l = blocks[l]([h_k,l-1, u_k,l]), h_k,0 = x; the
    tasks' states are computed together, stacked [T, B, width]."""

    Config = AdaShareConfig

    def __init__(
        self,
        num_tasks: int,
        units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        sparsity_weight: float = 0.001,
        sharing_weight: float = 0.05,
        initial_temperature: float = 5.0,
        temperature_decay: float = 0.965,
        anneal_steps: int = 25,
        curriculum_steps: int = 75,
        warmup_steps: int = 500,
        straight_through: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        if not units or any(int(n) < 1 for n in units):
            raise ValueError(f"AdaShare units must be a non-empty list of widths >= 1, got {units}")
        checks = [
            ("sparsity_weight", sparsity_weight, sparsity_weight >= 0, ">= 0"),
            ("sharing_weight", sharing_weight, sharing_weight >= 0, ">= 0"),
            ("initial_temperature", initial_temperature, initial_temperature > 0, "> 0"),
            ("temperature_decay", temperature_decay, 0 < temperature_decay <= 1, "in (0, 1]"),
            ("anneal_steps", anneal_steps, anneal_steps >= 1, ">= 1"),
            ("curriculum_steps", curriculum_steps, curriculum_steps >= 0, ">= 0"),
            ("warmup_steps", warmup_steps, warmup_steps >= 0, ">= 0"),
        ]
        for name, value, ok, bound in checks:
            if not ok:
                raise ValueError(f"AdaShare {name} must be {bound}, got {value}")
        self.units = [int(n) for n in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.sparsity_weight = float(sparsity_weight)
        self.sharing_weight = float(sharing_weight)
        self.initial_temperature = float(initial_temperature)
        self.temperature_decay = float(temperature_decay)
        self.anneal_steps = int(anneal_steps)
        self.curriculum_steps = int(curriculum_steps)
        self.warmup_steps = int(warmup_steps)
        self.straight_through = bool(straight_through)
        self.blocks = [
            SkippableBlock(width, activation, dropout, name=f"block_{i}")
            for i, width in enumerate(self.units)
        ]

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int) -> AdaShare:
        return cls(
            num_tasks,
            hp.units,
            activation=hp.activation,
            dropout=hp.dropout,
            sparsity_weight=hp.sparsity_weight,
            sharing_weight=hp.sharing_weight,
            initial_temperature=hp.initial_temperature,
            temperature_decay=hp.temperature_decay,
            anneal_steps=hp.anneal_steps,
            curriculum_steps=hp.curriculum_steps,
            warmup_steps=hp.warmup_steps,
            straight_through=hp.straight_through,
        )

    def build(self, input_shape: Any) -> None:
        # equal logits: p = 0.5 (the authors' `init_method: equal`)
        self.logits = self.add_weight(
            name="policy_logits",
            shape=(self.num_tasks, len(self.units), 2),
            initializer="zeros",
            dtype="float32",
            trainable=True,
        )
        self.calls = self.add_weight(
            name="training_calls",
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            # each replica counts its own calls (no synchronization needed inside a step); the
            # copies agree, and reads outside a replica give the first one's
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        super().build(input_shape)

    # ---- the policy -----------------------------------------------------------------------------

    def policy(self) -> tf.Tensor:
        """[T, L] each task's probability of executing each block, softmax(alpha)[select]."""
        return select_probabilities(tf.convert_to_tensor(self.logits))

    def learnable(self, step: tf.Tensor | None = None) -> tf.Tensor:
        """[L] bool: the blocks whose policy is learned at `step` (the count of training calls)."""
        step = tf.convert_to_tensor(self.calls) if step is None else step
        return learnable_blocks(step, len(self.units), self.curriculum_steps, self.warmup_steps)

    def temperature(self, step: tf.Tensor | None = None) -> tf.Tensor:
        """τ at `step` (the count of training calls by default)."""
        step = tf.convert_to_tensor(self.calls) if step is None else step
        return annealed_temperature(
            step,
            self.initial_temperature,
            self.temperature_decay,
            self.anneal_steps,
            start=self.warmup_steps,
        )

    def decisions(self) -> tf.Tensor:
        """[T, L] the inference policy: 1 executes the block, 0 skips it."""
        return self._select(tf.convert_to_tensor(self.calls), training=False)

    def _select(self, step: tf.Tensor, training: bool) -> tf.Tensor:
        logits = tf.convert_to_tensor(self.logits)
        if training:
            select = sample_select(logits, self.temperature(step), hard=self.straight_through)
        else:
            select = greedy_select(logits)
        # blocks the curriculum has not opened yet are executed
        return tf.where(self.learnable(step)[tf.newaxis, :], select, tf.ones_like(select))

    # ---- the forward pass -----------------------------------------------------------------------

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        step = tf.convert_to_tensor(self.calls)
        select = self._select(step, training=bool(training))  # [T, L]
        logits = tf.convert_to_tensor(self.logits)
        learnable = self.learnable(step)
        self.add_loss(
            self.sparsity_weight * sparsity_loss(logits, learnable)
            + self.sharing_weight * sharing_loss(logits, learnable)
        )
        if training:
            self.calls.assign_add(1)
        hidden = x  # [B, D]; [T, B, width] after the first block
        for i, block in enumerate(self.blocks):
            task_select = select[:, i][:, tf.newaxis, tf.newaxis]
            hidden = block([hidden, task_select], training=training)
        return tf.unstack(hidden, num=self.num_tasks, axis=0), {}

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
            "sparsity_weight": self.sparsity_weight,
            "sharing_weight": self.sharing_weight,
            "initial_temperature": self.initial_temperature,
            "temperature_decay": self.temperature_decay,
            "anneal_steps": self.anneal_steps,
            "curriculum_steps": self.curriculum_steps,
            "warmup_steps": self.warmup_steps,
            "straight_through": self.straight_through,
        }
