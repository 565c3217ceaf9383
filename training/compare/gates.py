"""What the gates learned: gate weights on the test rows, per expert, and expert-collapse warnings.

Gates are reported per seed (the plots show the first): experts are interchangeable, so "expert 2"
of one seed is not "expert 2" of another, and averaging gate weights over seeds would blur a sharp
gate into a uniform-looking one. Collapse warnings are checked on every seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ranker.schema import Schema
from training.compare.segments import SEGMENT_NAMES

MAX_PEAK_WEIGHT = 0.9  # a task whose gate puts more than this on one expert is flagged
COLLAPSE_SHARE = 0.25  # an expert below COLLAPSE_SHARE / E for every task is flagged


@dataclass
class ExpertMap:
    """Names every expert once, and maps each gate's local expert index to those names.

    MMoE and OMoE gates weigh the same E shared experts. A CGC/PLE task gate weighs its task's
    `specific` experts then the `shared` ones, so expert names are `ctr:0`, `cvr:0`, `shared:0`, ...
    and a task's gate never reaches another task's specific experts.
    """

    names: list[str]
    tasks: list[str]
    specific: int = 0

    @classmethod
    def of(cls, hparams: Any, tasks: Sequence[str], gate_size: int) -> ExpertMap:
        specific = getattr(hparams, "specific_experts", None)
        shared = getattr(hparams, "shared_experts", None)
        if specific is None or shared is None:
            return cls([f"e{j}" for j in range(gate_size)], list(tasks))
        names = [f"{t}:{i}" for t in tasks for i in range(specific)]
        names += [f"shared:{j}" for j in range(shared)]
        return cls(names, list(tasks), specific)

    def columns(self, gate_key: str, gate_size: int) -> list[str]:
        """The expert names behind a gate's [B, E] weights, in order."""
        if not self.specific and len(self.names) == gate_size:
            return self.names
        task = gate_key.split("/")[0]
        own = [f"{task}:{i}" for i in range(self.specific)]
        return own + [n for n in self.names if n.startswith("shared:")]


def gate_weights(model: Any, test_path: Path, schema: Schema) -> dict[str, np.ndarray]:
    """Every gate's weights [N, E] on the test rows, in file order ({} for ungated models)."""
    from ranker.keras_compat import tf
    from training.data import ReadOptions, make_dataset, reader_errors

    @tf.function(reduce_retracing=True)
    def gates(features: Mapping[str, Any]) -> dict[str, Any]:
        return model.gate_weights(features)

    dataset = make_dataset(test_path, schema, ReadOptions(batch_size=8192, labels=False))
    parts: dict[str, list[np.ndarray]] = {}
    with reader_errors():
        for features in dataset:
            batch = gates(features)
            if not batch:
                return {}
            for key, value in batch.items():
                parts.setdefault(key, []).append(np.asarray(value, dtype=np.float64))
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


def summarize_gates(
    weights: Mapping[str, np.ndarray],
    experts: ExpertMap,
    segments: np.ndarray | None,
    label: str,
) -> dict[str, Any]:
    """Mean weight per expert per gate (overall and by segment), entropy, and collapse warnings."""
    gates: dict[str, Any] = {}
    for key, w in weights.items():
        size = w.shape[1]
        columns = experts.columns(key, size)
        mean = w.mean(axis=0)
        row_entropy = -np.sum(w * np.log(np.clip(w, 1e-12, 1.0)), axis=1)
        entry: dict[str, Any] = {
            "experts": columns,
            "weights": dict(zip(columns, map(float, mean), strict=True)),
            "entropy": float(row_entropy.mean()),
            "entropy_normalized": float(row_entropy.mean() / math.log(size)) if size > 1 else 0.0,
            "by_segment": None,
        }
        if segments is not None:
            entry["by_segment"] = {
                name: dict(zip(columns, map(float, w[segments == k].mean(axis=0)), strict=True))
                for k, name in enumerate(SEGMENT_NAMES)
                if np.any(segments == k)
            }
        gates[key] = entry
    return {"experts": experts.names, "gates": gates, "warnings": collapse_warnings(gates, label)}


def collapse_warnings(gates: Mapping[str, Any], label: str) -> list[str]:
    """An expert below COLLAPSE_SHARE / E of every gate that reaches it (per level), or a gate
    putting more than MAX_PEAK_WEIGHT on one expert."""
    warnings = []
    for key, entry in gates.items():
        expert, peak = max(entry["weights"].items(), key=lambda item: item[1])
        if peak > MAX_PEAK_WEIGHT:
            warnings.append(
                f"{label}: the {gate_label(key)} gate puts {peak:.2f} on expert {expert}"
            )
    levels: dict[str, list[str]] = {}
    for key in gates:
        levels.setdefault(key.partition("/")[2], []).append(key)
    for level, keys in levels.items():
        reach: dict[str, list[bool]] = {}
        for key in keys:
            size = len(gates[key]["weights"])
            for expert, value in gates[key]["weights"].items():
                reach.setdefault(expert, []).append(value < COLLAPSE_SHARE / size)
        where = f" at {level}" if level else ""
        for expert, low in reach.items():
            if all(low):
                warnings.append(
                    f"{label}: expert {expert}{where} is nearly unused "
                    f"(under 1/(4E) of every gate that reaches it)"
                )
    return warnings


def gate_label(key: str) -> str:
    """A gate's name for people: `cvr/level0` -> `cvr (level0)`, `ctr` -> `ctr`."""
    task, _, level = key.partition("/")
    return f"{task} ({level})" if level else task
