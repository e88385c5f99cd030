"""The reference a model version's traffic is compared with: its validation split, as the model saw it.

Drift monitoring (:mod:`fish_platform.monitoring.drift`) needs to know what "normal" looks like for
*this* version: the pooled EfficientNet embeddings (the ``avg_pool`` output of the base, the features
the head classifies), the (calibrated) probabilities and the input statistics the service also logs
(brightness of the model input, the uploaded image's width and height). The evaluation step computes
them once on the validation split and stores them in the version's MLflow run as
``reference/reference.parquet``, one row per image, in the prediction log's column names, so the same
code reads both sides.

Keras is imported lazily; reading a reference needs only pyarrow and MLflow.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fish_platform.ml.input import DatasetLike, iter_rows

REFERENCE_ARTIFACT = "reference/reference.parquet"
REFERENCE_SPLIT = "val"
LABELS_KEY = b"fish.labels"
META_KEY = b"fish.reference"
REFERENCE_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("species", pa.string()),  # the true species (the log does not have it)
        ("top_species", pa.string()),
        ("top_score", pa.float32()),
        ("probabilities", pa.list_(pa.float32())),
        ("unknown", pa.bool_()),  # null when the version has no open-set threshold
        ("unknown_score", pa.float32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("brightness", pa.float32()),
        ("embedding", pa.list_(pa.float32())),
    ]
)


@dataclass
class Profile:
    """What a model made of a set of images: the columns drift compares (arrays, one row per image)."""

    labels: list[str]
    probabilities: np.ndarray  # (N, n_classes), calibrated when a calibration was given
    embeddings: np.ndarray  # (N, D) pooled features
    brightness: np.ndarray  # (N,) mean pixel of the model input, 0-255
    width: np.ndarray  # (N,) of the original image
    height: np.ndarray
    unknown: np.ndarray | None = None  # (N,) bool, when the version has an open-set threshold
    unknown_score: np.ndarray | None = None
    sha256: list[str] = field(default_factory=list)
    species: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def top_species(self) -> list[str]:
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)] if len(self) else []

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1) if len(self) else np.zeros(0, np.float32)


class ImageProfiler:
    """Probabilities and pooled embeddings of one loaded classifier, from one call on each batch.

    The embedding is the spatial mean of the last feature map (the dense head's input), the same
    vector the service logs for each answer
    (:func:`fish_platform.ml.runtimes.probabilities_and_embeddings`).
    """

    def __init__(self, model: Any, calibration: Any | None = None, batch_size: int = 32) -> None:
        self.model = model
        self.calibration = calibration
        self.batch_size = batch_size

    def arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 (N, S, S, 3)`` -> ``(raw probabilities, embeddings)``."""
        from fish_platform.ml.runtimes import probabilities_and_embeddings

        probabilities, embeddings = probabilities_and_embeddings(self.model, batch)
        if embeddings is None:
            name = type(self.model).__name__
            raise TypeError(f"{name} gives no embeddings: profile the logged Keras model")
        return probabilities, embeddings

    def profile(
        self,
        batch: np.ndarray,
        sizes: list[tuple[int, int]] | None = None,
        sha256: list[str] | None = None,
        species: list[str] | None = None,
    ) -> Profile:
        """A :class:`Profile` of a decoded batch; ``sizes`` are the originals' ``(width, height)``."""
        raw, embeddings = self.arrays(batch)
        probabilities = raw  # the service logs the calibrated vector: so does the reference
        n = len(batch)
        sizes = sizes if sizes is not None else [(batch.shape[2], batch.shape[1])] * n
        brightness = batch.reshape(n, -1).mean(axis=1).astype(np.float32) if n else np.zeros(0, np.float32)
        unknown = scores = None
        if self.calibration is not None:
            probabilities = np.asarray(self.calibration.calibrate(raw), dtype=np.float32)
            unknown = np.asarray(self.calibration.is_unknown(raw, batch, embeddings), dtype=bool)
            scores = np.asarray(self.calibration.scores(raw, embeddings), dtype=np.float32)
        return Profile(
            labels=list(self.model.labels),
            probabilities=probabilities,
            embeddings=embeddings,
            brightness=brightness,
            width=np.array([w for w, _ in sizes], np.int32),
            height=np.array([h for _, h in sizes], np.int32),
            unknown=unknown,
            unknown_score=scores,
            sha256=list(sha256 or []),
            species=list(species or []),
        )

    def profile_images(self, images: list[bytes]) -> Profile:
        """Encoded images (any size) -> their profile, decoded as the service decodes them."""
        from fish_platform.imaging import decode_image, resize_square, sha256_hex

        decoded = [decode_image(data) for data in images]
        size = self.model.image_size
        batch = (
            np.stack([np.asarray(resize_square(im, size), np.uint8) for im in decoded])
            if decoded
            else np.zeros((0, size, size, 3), np.uint8)
        )
        return self.profile(batch, [im.size for im in decoded], [sha256_hex(d) for d in images])


def build_reference(
    model: Any,
    dataset: DatasetLike,
    calibration: Any | None = None,
    split: str = REFERENCE_SPLIT,
    batch_size: int = 32,
) -> Profile:
    """Profile every image of ``split`` (read one record batch at a time, one model call per batch)."""
    profiler = ImageProfiler(model, calibration, batch_size)
    parts: list[Profile] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if pending:
            batch = model.decode([row["image"] for row in pending])
            sizes = [(int(row["orig_width"]), int(row["orig_height"])) for row in pending]
            parts.append(
                profiler.profile(
                    batch, sizes, [r["sha256"] for r in pending], [r["species"] for r in pending]
                )
            )
            pending.clear()

    for row in iter_rows(dataset, split, ["image", "sha256", "species", "orig_width", "orig_height"]):
        pending.append(row)
        if len(pending) == batch_size:
            flush()
    flush()
    if not parts:
        raise ValueError(f"the {split} split is empty: no reference to store")
    reference = concat_profiles(parts)
    reference.meta = {"split": split, "images": len(reference), "calibrated": calibration is not None}
    return reference


def concat_profiles(parts: list[Profile]) -> Profile:
    """One profile from several with the same labels (an optional column is kept only if all have it)."""
    first = parts[0]

    def cat(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return Profile(
        labels=list(first.labels),
        probabilities=cat("probabilities"),
        embeddings=cat("embeddings"),
        brightness=cat("brightness"),
        width=cat("width"),
        height=cat("height"),
        unknown=cat("unknown"),
        unknown_score=cat("unknown_score"),
        sha256=[s for p in parts for s in p.sha256],
        species=[s for p in parts for s in p.species],
        meta=dict(first.meta),
    )


def reference_table(reference: Profile) -> pa.Table:
    """The reference as one Parquet-ready table; labels and provenance ride in the schema metadata."""
    n = len(reference)

    def optional(values: np.ndarray | None) -> list | None:
        return None if values is None else values.tolist()

    columns = {
        "sha256": reference.sha256 or [None] * n,
        "species": reference.species or [None] * n,
        "top_species": reference.top_species,
        "top_score": reference.confidence.tolist(),
        "probabilities": reference.probabilities.tolist(),
        "unknown": optional(reference.unknown) or [None] * n,
        "unknown_score": optional(reference.unknown_score) or [None] * n,
        "width": reference.width.tolist(),
        "height": reference.height.tolist(),
        "brightness": reference.brightness.tolist(),
        "embedding": reference.embeddings.tolist(),
    }
    schema = REFERENCE_SCHEMA.with_metadata(
        {LABELS_KEY: json.dumps(reference.labels).encode(), META_KEY: json.dumps(reference.meta).encode()}
    )
    return pa.Table.from_pydict(columns, schema=schema)


def reference_bytes(reference: Profile) -> bytes:
    sink = io.BytesIO()
    pq.write_table(reference_table(reference), sink)
    return sink.getvalue()


def read_reference(data: bytes | str | Path) -> Profile:
    """A reference from Parquet bytes or a local file."""
    table = pq.read_table(io.BytesIO(data) if isinstance(data, bytes) else str(data))
    meta = table.schema.metadata or {}
    labels = json.loads(meta[LABELS_KEY])
    columns = table.to_pydict()
    n = table.num_rows

    def matrix(name: str, width: int) -> np.ndarray:
        values = columns[name]
        return np.array(values, np.float32) if n else np.zeros((0, width), np.float32)

    unknown = None if n == 0 or columns["unknown"][0] is None else np.array(columns["unknown"], bool)
    scores = None if unknown is None else np.array(columns["unknown_score"], np.float32)
    return Profile(
        labels=list(labels),
        probabilities=matrix("probabilities", len(labels)),
        embeddings=matrix("embedding", 0),
        brightness=np.array(columns["brightness"], np.float32),
        width=np.array(columns["width"], np.int32),
        height=np.array(columns["height"], np.int32),
        unknown=unknown,
        unknown_score=scores,
        sha256=list(columns["sha256"]),
        species=list(columns["species"]),
        meta=json.loads(meta.get(META_KEY, b"{}")),
    )


def log_reference(reference: Profile, artifact_file: str = REFERENCE_ARTIFACT) -> None:
    """Store the reference in the active MLflow run (the version's run)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="fish-reference-") as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_bytes(reference_bytes(reference))
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent))


def load_reference(run_id: str, tracking_uri: str | None = None) -> Profile:
    """The reference stored in a run; ``FileNotFoundError`` for versions trained before references."""
    import mlflow

    try:
        with tempfile.TemporaryDirectory(prefix="fish-reference-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp, tracking_uri=tracking_uri
            )
            return read_reference(Path(local))
    except (OSError, mlflow.exceptions.MlflowException) as exc:
        raise FileNotFoundError(
            f"run {run_id} has no {REFERENCE_ARTIFACT} (a model evaluated before references were stored: "
            "re-run model_evaluation for it)"
        ) from exc
