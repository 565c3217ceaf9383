"""The trainer's side of task balancing (`ranker.balancing`): once per epoch, the strategy's
epoch update and the task-conflict diagnostics.

`BalancingMonitor` runs first among `fit`'s callbacks at the end of every epoch:

- hands the epoch's mean (unweighted) task losses to the strategy (`Balancer.end_epoch`: DWA);
- adds to the epoch's logs the cosine similarity of each pair of task gradients on the shared
  parameters (`RankingModel.gradient_cosines`, `cosine_{a}_{b}`), measured on one fixed batch of
  training data, so that the progress line, TensorBoard, the history and metadata.json
  (`balancing_summary`) carry them beside each task's mean coefficient (`{output}_weight`).
"""

from __future__ import annotations

from typing import Any

import ranker  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from ranker.keras_compat import keras


class BalancingMonitor(keras.callbacks.Callback):
    """`end_epoch` and the gradient cosines, at every epoch's end (module docstring)."""

    def __init__(self, probe: Any | None) -> None:
        super().__init__()
        self.probe = probe  # a (features, labels) training batch, or None: no cosines

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        balancer = self.model.balancer
        balancer.end_epoch(
            {
                name: float(logs[f"{name}_loss"])
                for name in balancer.outputs
                if f"{name}_loss" in logs
            }
        )
        if self.probe is not None:
            for name, value in self.model.gradient_cosines(self.probe).items():
                logs[name] = float(value)


def balancing_history(history: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per epoch, each objective's mean coefficient and each pair's gradient cosine."""
    return {
        key: list(values)
        for key, values in history.items()
        if key.endswith("_weight") or key.startswith("cosine_")
    }


def balancing_summary(spec: Any, history: dict[str, list[float]]) -> dict[str, Any]:
    """What metadata.json says of the balancing: the strategy, and `balancing_history`."""
    return {"strategy": spec, "per_epoch": balancing_history(history)}
