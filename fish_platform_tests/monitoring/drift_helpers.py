"""Helpers for the drift and batch tests: a tiny in-memory classifier, real photos, fixture logs.

Log files are written with pyarrow in ``PREDICTION_SCHEMA``, in the layout of
:mod:`fish_platform.monitoring.log_schema`, as the service's writer lays them out.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fish_platform.ml.reference import Profile
from fish_platform.monitoring.log_schema import (
    PREDICTION_SCHEMA,
    PREDICTIONS_PREFIX,
    ROLE_CHAMPION,
    partition,
)


def tiny_classifier(labels: list[str], image_size: int, folder: Path, seed: int = 0):
    """An untrained B0 as a :class:`FishClassifierModel` loaded from plain files (no MLflow needed)."""
    import keras

    from fish_platform.ml.model import build_model
    from fish_platform.ml.packaging import FishClassifierModel, build_metadata

    keras.utils.set_random_seed(seed)
    model, weights = build_model(len(labels), image_size, "B0", "none")
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    (folder / "metadata.json").write_text(
        json.dumps(build_metadata(labels, image_size, "B0", weights.description))
    )
    classifier = FishClassifierModel()
    classifier.load_files(folder / "model.keras", folder / "metadata.json")
    return classifier


def real_photos(root: Path, folder: str, count: int) -> list[bytes]:
    """The first ``count`` photos of one Fish4Knowledge species folder, in name order."""
    return [path.read_bytes() for path in sorted((root / folder).glob("*.png"))[:count]]


def darkened(images: list[bytes], factor: float = 0.35) -> list[bytes]:
    """The same photos under much less light (a camera at dusk)."""
    out = []
    for data in images:
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) * factor
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def log_rows(profile: Profile, model_version: str = "1", model_name: str = "fish-classifier") -> pa.Table:
    """A profile as prediction-log rows (champion, served, not cached)."""
    n = len(profile)
    top = np.argsort(-profile.probabilities, axis=1)[:, :3]
    now = datetime.now(UTC)
    return pa.Table.from_pydict(
        {
            "request_id": [uuid.uuid4().hex for _ in range(n)],
            "ts": [now] * n,
            "sha256": profile.sha256 or [f"{i:064x}" for i in range(n)],
            "model_name": [model_name] * n,
            "model_version": [model_version] * n,
            "runtime": ["tensorflow"] * n,
            "role": [ROLE_CHAMPION] * n,
            "served": [True] * n,
            "labels": [list(profile.labels)] * n,
            "probabilities": profile.probabilities.tolist(),
            "top_species": [[profile.labels[i] for i in row] for row in top],
            "top_scores": [[float(profile.probabilities[r, i]) for i in row] for r, row in enumerate(top)],
            "unknown": profile.unknown.tolist() if profile.unknown is not None else [None] * n,
            "unknown_score": profile.unknown_score.tolist()
            if profile.unknown_score is not None
            else [None] * n,
            "cached": [False] * n,
            "latency_ms": [5.0] * n,
            "width": profile.width.tolist(),
            "height": profile.height.tolist(),
            "brightness": profile.brightness.tolist(),
            "embedding": profile.embeddings.tolist(),
        },
        schema=PREDICTION_SCHEMA,
    )


def write_log(data_uri: Path, day: str, table: pa.Table, writer: str = "test") -> Path:
    """One flushed log file of ``day`` under ``data_uri/predictions/date=<day>/``."""
    folder = data_uri / PREDICTIONS_PREFIX / partition(day)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{datetime.now(UTC):%H%M%S%f}-{writer}.parquet"
    pq.write_table(table, path)
    return path
