"""HoME: a meta level of shared and task-group experts, then a task level, each gate masked to the
experts its tasks may see.

From "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at Kuaishou" (Wang et al.,
KDD 2025, arXiv 2408.05430). Its four parts, each of which the config can switch off:

- expert normalization: every expert layer is Swish(BatchNorm(W x + b)), so that the experts'
  outputs are on one scale and none dominates the gates or dies (ReLU experts were >90% zeros);
- the hierarchy mask: tasks are grouped by kind (the paper's passive watch-time tasks against
  interactions). Meta level, on the input x: shared experts and one expert block per group;
  group g's gate mixes the shared experts and group g's into z_g, a shared gate mixes all of them
  into z_shared. Task level: shared experts read z_shared, group g's experts read z_g, task t's
  own experts read z_{g(t)}; task t's gate, reading [z_shared, z_{g(t)}], mixes the shared
  experts, its group's and its own, and gives every other expert a weight of exactly 0;
- the feature-gate: each expert reads its own x * 2 * sigmoid((x A) B), a low-rank projection
  (`ranker.layers.home.FeatureGate`), instead of the input every expert shares;
- the self-gate: each gate's own experts (group g's at the meta level, task t's at the task
  level) are also added under a gate of their own, sigmoid(x w) for one expert, softmax(x W) for
  several, so that sparse tasks cannot starve their specific experts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ranker.architectures.base import ArchitectureConfig, Backbone
from ranker.errors import ConfigError
from ranker.keras_compat import keras, tf
from ranker.layers.home import HierarchyLevel
from ranker.layers.mlp import MLP
from ranker.registry import register


class HoMEConfig(ArchitectureConfig):
    # lists of task indices (schema order), or of task names where the schema's names reach
    # `HoME.from_hparams(task_names=...)` (RankingModel passes none yet); None: one group of all
    task_groups: list[list[int | str]] | None = None
    shared_experts: int = Field(default=2, ge=0)  # per level
    group_experts: int = Field(default=1, ge=0)  # per group, per level
    specific_experts: int = Field(default=1, ge=0)  # per task, at the task level
    expert_units: list[int] = Field(default_factory=lambda: [64], min_length=1)
    expert_activation: Literal["swish", "relu", "gelu", "elu", "selu", "tanh"] = "swish"
    expert_normalization: bool = True
    feature_gate: bool = True
    feature_gate_rank: int = Field(default=8, ge=1)
    self_gate: bool = True

    @field_validator("task_groups")
    @classmethod
    def _check_groups(cls, groups: list[list[int | str]] | None) -> list[list[int | str]] | None:
        for group in groups or []:
            if not group:
                raise ValueError(f"every group needs at least one task, got {groups}")
        return groups

    @model_validator(mode="after")
    def _check_experts(self) -> HoMEConfig:
        if self.shared_experts + self.group_experts < 1:
            raise ValueError(
                "shared_experts + group_experts must be >= 1 (the meta level needs an expert), "
                f"got shared_experts={self.shared_experts}, group_experts={self.group_experts}"
            )
        return self


def resolve_task_groups(
    groups: Sequence[Sequence[int | str]] | None,
    num_tasks: int,
    task_names: Sequence[str] | None = None,
) -> list[list[int]]:
    """`task_groups` as lists of task indices, each task in exactly one group; raises ValueError
    naming the task at fault. Names need `task_names` (the schema's tasks, in order)."""
    if groups is None:
        return [list(range(num_tasks))]
    resolved = []
    for group in groups:
        indices = []
        for task in group:
            if isinstance(task, str):
                if task_names is None:
                    raise ValueError(
                        f"names task {task!r}, but no task names were given: use task indices "
                        f"0..{num_tasks - 1}"
                    )
                if task not in task_names:
                    raise ValueError(f"{task!r} is not a task; tasks: {', '.join(task_names)}")
                indices.append(list(task_names).index(task))
            else:
                indices.append(int(task))
        resolved.append(indices)
    check_task_groups(resolved, num_tasks)
    return resolved


def check_task_groups(groups: list[list[int]], num_tasks: int) -> None:
    """Raises ValueError unless every task 0..num_tasks-1 is in exactly one non-empty group."""
    seen: list[int] = []
    for group in groups:
        if not group:
            raise ValueError(f"every group needs at least one task, got {groups}")
        for task in group:
            if not 0 <= task < num_tasks:
                raise ValueError(f"task {task} is not one of the {num_tasks} tasks, got {groups}")
            if task in seen:
                raise ValueError(f"task {task} is in more than one group, got {groups}")
            seen.append(task)
    missing = [task for task in range(num_tasks) if task not in seen]
    if missing:
        raise ValueError(f"task {missing[0]} is in no group, got {groups}")


@register("home")
class HoME(Backbone):
    """Two levels of hierarchy-masked experts (see the module docstring).

    `task_groups` lists task indices; the default (None) is ONE group of all tasks, where the
    hierarchy mask reduces to shared experts at both levels plus each task's own ones. Gate
    weights: `task{k}/level0` over the meta experts (shared, then group 0's, group 1's, ...: the
    weights of task k's group's gate), `task{k}` over the task-level ones (shared, groups', then
    task 0's, task 1's, ...).
    """

    Config = HoMEConfig

    def __init__(
        self,
        num_tasks: int,
        expert: MLP | dict[str, Any],
        task_groups: list[list[int]] | None = None,
        shared_experts: int = 2,
        group_experts: int = 1,
        specific_experts: int = 1,
        feature_gate_rank: int | None = 8,
        self_gate: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        groups = [list(range(num_tasks))] if task_groups is None else task_groups
        groups = [[int(task) for task in group] for group in groups]
        try:
            check_task_groups(groups, num_tasks)
        except ValueError as err:
            raise ValueError(f"HoME task_groups: {err}") from None
        if shared_experts < 0 or group_experts < 0 or specific_experts < 0:
            raise ValueError(
                "HoME expert counts must be >= 0, got "
                f"{shared_experts=}, {group_experts=}, {specific_experts=}"
            )
        if shared_experts + group_experts < 1:
            raise ValueError(
                f"HoME needs shared_experts + group_experts >= 1, got {shared_experts=}, "
                f"{group_experts=}"
            )
        if isinstance(expert, dict):
            expert = keras.layers.deserialize(expert)
        self.task_groups = groups
        self.shared_experts = int(shared_experts)
        self.group_experts = int(group_experts)
        self.specific_experts = int(specific_experts)
        self.feature_gate_rank = feature_gate_rank
        self.self_gate = bool(self_gate)
        self.group_of = [
            next(g for g, ts in enumerate(groups) if k in ts) for k in range(num_tasks)
        ]
        meta = self._meta_blocks()
        self.meta = HierarchyLevel(
            expert,
            block_experts=[n for _, n in meta],
            gate_blocks=[self._visible(meta, g) for g in range(len(groups))]
            + [list(range(len(meta)))],
            own_blocks=[self._own(meta, ("group", g)) for g in range(len(groups))] + [None],
            feature_gate_rank=feature_gate_rank,
            name="meta_level",
        )
        tasks = self._task_blocks()
        self.tasks = HierarchyLevel(
            expert,
            block_experts=[n for _, n in tasks],
            gate_blocks=[self._visible(tasks, self.group_of[k], k) for k in range(num_tasks)],
            own_blocks=[self._own(tasks, ("task", k)) for k in range(num_tasks)],
            feature_gate_rank=feature_gate_rank,
            name="task_level",
        )

    def _meta_blocks(self) -> list[tuple[tuple[str, int], int]]:
        """The meta level's expert blocks in order: ((kind, index), experts)."""
        blocks = [(("shared", 0), self.shared_experts)] if self.shared_experts else []
        if self.group_experts:
            blocks += [(("group", g), self.group_experts) for g in range(len(self.task_groups))]
        return blocks

    def _task_blocks(self) -> list[tuple[tuple[str, int], int]]:
        blocks = self._meta_blocks()
        if self.specific_experts:
            blocks += [(("task", k), self.specific_experts) for k in range(self.num_tasks)]
        return blocks

    @staticmethod
    def _visible(
        blocks: list[tuple[tuple[str, int], int]], group: int, task: int | None = None
    ) -> list[int]:
        """The hierarchy mask: the shared block, the group's own and (task level) the task's."""
        allowed = {("shared", 0), ("group", group), ("task", task)}
        return [b for b, (kind, _) in enumerate(blocks) if kind in allowed]

    def _own(self, blocks: list[tuple[tuple[str, int], int]], kind: tuple[str, int]) -> int | None:
        """The block a gate's self-gate sums: its group's or task's own experts, if any."""
        owned = [b for b, (block_kind, _) in enumerate(blocks) if block_kind == kind]
        return owned[0] if owned and self.self_gate else None

    @classmethod
    def from_hparams(cls, hp: Any, num_tasks: int, task_names: Sequence[str] | None = None) -> HoME:
        try:
            groups = resolve_task_groups(hp.task_groups, num_tasks, task_names)
        except ValueError as err:
            raise ConfigError(f"architecture 'home': task_groups: {err}") from None
        expert = MLP(
            hp.expert_units,
            activation=hp.expert_activation,
            dropout=hp.dropout,
            batch_norm=hp.expert_normalization,
            name="expert",
        )
        return cls(
            num_tasks,
            expert,
            groups,
            hp.shared_experts,
            hp.group_experts,
            hp.specific_experts,
            hp.feature_gate_rank if hp.feature_gate else None,
            hp.self_gate,
        )

    def call_with_gates(
        self, x: tf.Tensor, training: bool | None = None
    ) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
        groups = len(self.task_groups)
        meta_out, meta_weights = self.meta(
            [x] * len(self.meta.blocks), [x] * (groups + 1), training=training
        )
        by_group, shared = meta_out[:groups], meta_out[groups]
        # task-level experts read z_shared (shared ones), z_g (group g's) or z_{g(t)} (task t's)
        block_inputs = [
            shared
            if kind == "shared"
            else by_group[index if kind == "group" else self.group_of[index]]
            for (kind, index), _ in self._task_blocks()
        ]
        gate_inputs = [
            tf.concat([shared, by_group[self.group_of[k]]], axis=-1) for k in range(self.num_tasks)
        ]
        outputs, weights = self.tasks(block_inputs, gate_inputs, training=training)
        gates = {}
        for k in range(self.num_tasks):
            gates[f"task{k}/level0"] = meta_weights[self.group_of[k]]
            gates[f"task{k}"] = weights[k]
        return outputs, gates

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "expert": self.meta.blocks[0].experts.expert_config,
            "task_groups": self.task_groups,
            "shared_experts": self.shared_experts,
            "group_experts": self.group_experts,
            "specific_experts": self.specific_experts,
            "feature_gate_rank": self.feature_gate_rank,
            "self_gate": self.self_gate,
        }
