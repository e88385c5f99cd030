"""Evaluating a logged classifier on a dataset split, through the same path the service uses.

Images go through :meth:`FishClassifierModel.decode` (Pillow decode + ``resize_square``) and the
compiled forward pass, so the numbers describe the served model, not an in-memory twin. Scores are
computed on species *names*: a champion trained on another label set (a species added or
renamed since) is scored fairly on today's test split, and a prediction of a species the dataset
does not have simply counts as wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fish_platform.contract import TOP_K, top_k_indices
from fish_platform.ml.config import EvaluationConfig
from fish_platform.ml.input import DatasetLike, first_images, iter_rows, read_dataset_info, split_fingerprint
from fish_platform.ml.packaging import FishClassifierModel
from fish_platform.ml.trust import TrustReport, assess_trust


@dataclass
class SplitPredictions:
    """Per image: true species, sha256, and the model's probabilities (in the model's label order)."""

    sha256: list[str]
    true_species: list[str]
    probabilities: np.ndarray
    model_labels: list[str]
    embeddings: np.ndarray | None = None  # (N, features), when asked for (the open-set scores)

    def top_k(self, k: int) -> list[list[str]]:
        order = top_k_indices(self.probabilities, k)
        return [[self.model_labels[i] for i in row] for row in order]


@dataclass
class Evaluation:
    split: str
    fingerprint: str
    labels: list[str]
    n_images: int
    accuracy: float
    macro_f1: float
    top3_accuracy: float
    per_class: list[dict[str, Any]]
    confusion: np.ndarray  # rows: true species (labels order), columns: predicted (labels + "other")
    latency: dict[str, float] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)  # a few images' top-1, for checks
    trust: TrustReport | None = None  # calibration, unknown threshold, behavioural checks

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat numbers for MLflow."""
        values = {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "top3_accuracy": self.top3_accuracy}
        values.update(self.latency)
        flat = {f"{prefix}{name}": float(value) for name, value in values.items()}
        return {**flat, **(self.trust.metrics(prefix) if self.trust else {})}

    def per_class_markdown(self) -> str:
        lines = ["| species | precision | recall | F1 | images |", "|---|---|---|---|---|"]
        for row in self.per_class:
            scores = " | ".join(f"{row[name]:.3f}" for name in ("precision", "recall", "f1"))
            lines.append(f"| {row['species']} | {scores} | {row['support']} |")
        return "\n".join(lines)


def predict_split(
    model: FishClassifierModel,
    dataset: DatasetLike,
    split: str = "test",
    batch_size: int | None = None,
    embeddings: bool = False,
    every: int = 1,
) -> SplitPredictions:
    """Run ``model`` over a split, reading the Parquet files one record batch at a time.

    ``embeddings``: keep each image's pooled embedding too; ``every``: only every ``every``-th image
    (in the split's stable order: an even sample of a large split).
    """
    batch_size = batch_size or EvaluationConfig().batch_size
    sha256: list[str] = []
    species: list[str] = []
    parts: list[np.ndarray] = []
    embedded: list[np.ndarray] = []
    pending: list[bytes] = []

    def flush() -> None:
        if pending:
            batch = model.decode(pending)
            if embeddings:
                probabilities, features = model.predict_with_embeddings(batch)
                embedded.append(features)
            else:
                probabilities = model.predict_arrays(batch)
            parts.append(probabilities)
            pending.clear()

    for index, row in enumerate(iter_rows(dataset, split, ["image", "species", "sha256"])):
        if index % every:
            continue
        sha256.append(row["sha256"])
        species.append(row["species"])
        pending.append(row["image"])
        if len(pending) == batch_size:
            flush()
    flush()
    probabilities = np.concatenate(parts) if parts else np.zeros((0, len(model.labels)), np.float32)
    features = np.concatenate(embedded) if embedded else None
    return SplitPredictions(sha256, species, probabilities, list(model.labels), features)


def classification_report(
    true_species: list[str], ranked: list[list[str]], labels: list[str]
) -> tuple[dict[str, float], list[dict[str, Any]], np.ndarray]:
    """Accuracy, macro-F1 and top-k accuracy over species names, per-class rows, confusion matrix.

    Macro-F1 averages the classes that have test images (a class absent from the split would
    otherwise count as 0 or be undefined). The confusion matrix has one extra "other" column for
    predicted species outside ``labels``.
    """
    index = {name: i for i, name in enumerate(labels)}
    n = len(labels)
    confusion = np.zeros((n, n + 1), dtype=np.int64)
    top_hits = 0
    for truth, guesses in zip(true_species, ranked, strict=True):
        confusion[index[truth], index.get(guesses[0], n)] += 1
        top_hits += int(truth in guesses)
    support = confusion.sum(axis=1)
    predicted = confusion[:, :n].sum(axis=0)
    correct = np.diag(confusion[:, :n])
    precision = np.divide(correct, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros(n), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(n), where=denominator > 0)
    total = int(support.sum())
    present = support > 0
    summary = {
        "accuracy": float(correct.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "top3_accuracy": float(top_hits / total) if total else 0.0,
    }
    rows = [
        {
            "species": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    ]
    return summary, rows, confusion


def measure_latency(
    model: FishClassifierModel, images: np.ndarray, batch_size: int, single_calls: int
) -> dict[str, float]:
    """Per-image latency at batch 1 and throughput batched, through the compiled forward pass.

    Warm-up calls come first so tracing is not counted; batched timing tiles the images up to
    ``batch_size`` so a small test split still measures a full batch.
    """
    if len(images) == 0:
        return {}
    single = images[:1]
    model.predict_arrays(single)
    timings = []
    for i in range(single_calls):
        image = images[i % len(images)][None]
        started = time.perf_counter()
        model.predict_arrays(image)
        timings.append((time.perf_counter() - started) * 1000)
    batch = np.resize(images, (batch_size, *images.shape[1:]))
    model.predict_arrays(batch)
    repeats = 3
    started = time.perf_counter()
    for _ in range(repeats):
        model.predict_arrays(batch)
    batched_s = time.perf_counter() - started
    return {
        "latency_ms_batch1_median": float(np.median(timings)),
        "latency_ms_batch1_p95": float(np.percentile(timings, 95)),
        "batched_images_per_s": float(repeats * batch_size / batched_s),
        "batched_ms_per_image": float(batched_s * 1000 / (repeats * batch_size)),
    }


def evaluate_classifier(
    model: FishClassifierModel, dataset: DatasetLike, config: EvaluationConfig | None = None
) -> Evaluation:
    """Score ``model`` on a split of the dataset at ``dataset``."""
    config = config or EvaluationConfig()
    split, batch_size, latency_calls = config.split, config.batch_size, config.latency_calls
    info = read_dataset_info(dataset)
    predictions = predict_split(model, dataset, split, batch_size, embeddings=True)
    ranked = predictions.top_k(TOP_K)
    summary, per_class, confusion = classification_report(predictions.true_species, ranked, info.labels)
    val_predictions = predict_split(model, dataset, "val", batch_size, embeddings=True)
    trust = assess_trust(model, dataset, val_predictions, predictions, config)
    sample_images = first_images(dataset, split, latency_calls)
    latency = {}
    if sample_images:
        latency = measure_latency(model, model.decode(sample_images), batch_size, latency_calls)
    sample = [
        {
            "sha256": predictions.sha256[i],
            "species": predictions.true_species[i],
            "predicted": ranked[i][0],
            "confidence": float(predictions.probabilities[i].max()),
        }
        for i in range(min(config.sample_predictions, len(ranked)))
    ]
    return Evaluation(
        split=split,
        fingerprint=split_fingerprint(dataset, split),
        labels=info.labels,
        n_images=len(ranked),
        per_class=per_class,
        confusion=confusion,
        latency=latency,
        predictions=sample,
        trust=trust,
        **summary,
    )


def macro_f1_on_split(model: FishClassifierModel, dataset: DatasetLike, split: str = "test") -> float:
    """Only the macro-F1 (what the registry compares), without latency measurements."""
    info = read_dataset_info(dataset)
    predictions = predict_split(model, dataset, split)
    summary, _, _ = classification_report(predictions.true_species, predictions.top_k(TOP_K), info.labels)
    return summary["macro_f1"]
