"""PNG plots for MLflow artifacts and Dagster metadata.

Uses ``matplotlib.figure.Figure`` directly (no pyplot): no global figure state, no GUI backend,
safe in Dagster's worker processes.
"""

from __future__ import annotations

import base64
import io

import numpy as np


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def training_curves_png(curves: dict[str, list[float]], phases: list[str] | None = None) -> bytes:
    """Loss and accuracy per epoch, train vs validation, with the fine-tuning start marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    epochs = np.arange(1, len(next(iter(curves.values()), [])) + 1)
    for axis, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for name, style in ((metric, "-"), (f"val_{metric}", "--")):
            if name in curves:
                axis.plot(epochs, curves[name], style, marker="o", markersize=3, label=name)
        if phases and "finetune" in phases:
            start = phases.index("finetune") + 0.5
            axis.axvline(start, color="grey", linewidth=0.8)
            axis.text(start, axis.get_ylim()[1], " fine-tune", va="top", fontsize=8, color="grey")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    return _png(figure)


def confusion_matrix_png(confusion: np.ndarray, labels: list[str]) -> bytes:
    """Counts per (true, predicted) species; an extra "other" column only if it is used."""
    from matplotlib.figure import Figure

    columns = list(labels)
    if confusion.shape[1] > len(labels) and confusion[:, len(labels):].any():
        columns.append("other")
    matrix = confusion[:, : len(columns)]
    size = max(4.0, 0.6 * len(columns) + 2)
    figure = Figure(figsize=(size, size * 0.9))
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black", fontsize=8)
    return _png(figure)


def markdown_image(png: bytes, alt: str) -> str:
    """A Markdown image with the PNG embedded, for ``dg.MetadataValue.md``."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
