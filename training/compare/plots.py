"""The plots of `mtrank compare` (matplotlib on the Agg canvas: no pyplot, no display): ROC and
reliability curves of every variant per output, and heatmaps of each gated variant's gate weights.

Each `plot_*` writes a PNG and returns its file name, which the report and its HTML link to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.compare.curves import CALIBRATION_BINS
from training.compare.gates import gate_label


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas: no pyplot, no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _save_line_plot(figure: Any, ax: Any, path: Path, legend: str) -> str:
    """Legend, grid, tight layout; writes the PNG and returns its file name (for the HTML)."""
    ax.legend(loc=legend, fontsize=8)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path.name


def plot_roc(
    path: Path,
    output: str,
    curves: Mapping[str, Mapping[str, list[float]]],
    aucs: Mapping[str, float],
) -> str:
    figure = _figure(5.2, 5.0)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbb", linestyle="--", linewidth=1)
    for name, curve in curves.items():
        ax.plot(curve["fpr"], curve["tpr"], linewidth=1.6, label=f"{name} (AUC {aucs[name]:.4f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(f"ROC, {output} (seed-averaged scores)")
    return _save_line_plot(figure, ax, path, legend="lower right")


def plot_calibration(
    path: Path, output: str, bins: Mapping[str, Mapping[str, list[float]]], base_rate: float
) -> str:
    figure = _figure(5.2, 5.0)
    ax = figure.add_subplot()
    top = max([base_rate, *(max(b["predicted"] + b["observed"], default=0) for b in bins.values())])
    top = min(1.0, top * 1.08 or 1.0)
    ax.plot([0, top], [0, top], color="#bbb", linestyle="--", linewidth=1, label="calibrated")
    for name, b in bins.items():
        ax.plot(
            b["predicted"], b["observed"], marker="o", markersize=3.5, linewidth=1.4, label=name
        )
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted", ylabel="observed rate")
    ax.set_title(f"Reliability, {output} ({CALIBRATION_BINS} equal-count bins)")
    return _save_line_plot(figure, ax, path, legend="upper left")


def gate_matrix(
    gate_run: Mapping[str, Any], segment: str | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """(gate rows, expert columns, mean weights) with NaN where a gate cannot reach an expert."""
    gates = gate_run["gates"]
    keys = list(gates)
    columns = list(gate_run["experts"])
    matrix = np.full((len(keys), len(columns)), np.nan)
    for i, key in enumerate(keys):
        weights = gates[key]["weights"] if segment is None else gates[key]["by_segment"][segment]
        for expert, value in weights.items():
            matrix[i, columns.index(expert)] = value
    return [gate_label(k) for k in keys], columns, matrix


def plot_gates(path: Path, name: str, gate_run: Mapping[str, Any]) -> str:
    """Heatmaps of mean gate weight (gates x experts): all test rows, then each activity tercile."""
    gates = gate_run["gates"]
    first = next(iter(gates.values()))
    panels: list[str | None] = [None]
    if first["by_segment"]:
        panels += list(first["by_segment"])
    row_names, columns, _ = gate_matrix(gate_run)
    width = max(3.2, 0.62 * len(columns) + 1.6)
    height = max(2.2, 0.42 * len(row_names) + 1.4)
    figure = _figure(width * len(panels) + 0.8, height)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, segment in zip(axes, panels, strict=True):
        _, _, matrix = gate_matrix(gate_run, segment)
        image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_facecolor("#e6e6e6")
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(row_names)), row_names if ax is axes[0] else [], fontsize=8)
        title = "all test rows" if segment is None else f"{segment} activity"
        ax.set_title(title, fontsize=9)
        for (i, j), value in np.ndenumerate(matrix):
            if math.isfinite(value):
                colour = "white" if value < 0.55 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.suptitle(f"{name}: mean gate weight per expert (seed {gate_run['seed']})", fontsize=10)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="mean weight")
    figure.savefig(path, bbox_inches="tight")
    return path.name


def plot_balancing(path: Path, histories: Mapping[str, Mapping[str, list[float]]]) -> str | None:
    """Per variant (its first run), each pair of tasks' gradient cosine on the shared parameters
    (left) and each objective's balancing coefficient (right), per epoch; None without data."""
    if not any(histories.values()):
        return None
    figure = _figure(10.4, 4.2)
    cosine, weight = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for variant, history in histories.items():
        for key, values in history.items():
            epochs = range(1, len(values) + 1)
            if key.startswith("cosine_"):
                label = f"{variant}: {key.removeprefix('cosine_').replace('_', ' / ', 1)}"
                cosine.plot(epochs, values, marker="o", markersize=3, linewidth=1.4, label=label)
            else:
                label = f"{variant}: {key.removesuffix('_weight')}"
                weight.plot(epochs, values, marker="o", markersize=3, linewidth=1.4, label=label)
    cosine.axhline(0.0, color="#bbb", linestyle="--", linewidth=1)
    cosine.set(xlabel="epoch", ylabel="cosine of the task gradients (shared parameters)")
    cosine.set_title("Task conflict (below 0: the tasks pull apart)")
    weight.set(xlabel="epoch", ylabel="mean coefficient")
    weight.set_title("Balancing coefficients")
    cosine.legend(loc="best", fontsize=7)
    cosine.grid(alpha=0.3)
    return _save_line_plot(figure, weight, path, legend="best")
