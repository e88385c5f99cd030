"""Batch scoring: every image of a batch folder (or S3 prefix) classified by the production version.

A batch is one folder (or prefix) directly under ``FISH_BATCH_URI``. The driver lists its images and
hands the URIs to Spark; each executor Python worker loads the model **once** (a module-level cache
keyed by the version) on the version's optimized runtime when it has one (OpenVINO, then ONNX:
``serving/<format>/`` in its run, as the service's ``FISH_RUNTIME=auto`` chooses), else TensorFlow,
and classifies its partitions in ``mapInPandas``. The results (one row per image: URI, sha256, top-3,
unknown, model version) come back to the driver and are written as one Parquet file. An image that
cannot be read or decoded gets a row with ``status="error"`` and a reason, never a failed run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fish_platform.contract import DEFAULT_MAX_PIXELS, TOP_K
from fish_platform.data.storage import join, open_storage, write_parquet
from fish_platform.data.store import IMAGE_EXTENSIONS
from fish_platform.imaging import InvalidImage, decode_image, resize_square, sha256_hex
from fish_platform.ml.runtimes import probabilities_and_embeddings

BATCH_RESULTS_PREFIX = "batch_predictions"
RESULTS_FILE = "predictions.parquet"
SCORE_BATCH = 32  # images per model call inside a worker
RESULT_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),  # ok | error
        ("reason", pa.string()),  # InvalidImage reasons, or read_error / model_error
        ("detail", pa.string()),
        ("top_species", pa.list_(pa.string())),
        ("top_scores", pa.list_(pa.float32())),
        ("unknown", pa.bool_()),  # null when the version has no open-set threshold
        ("unknown_score", pa.float32()),
        ("unknown_method", pa.string()),  # the open-set score that set ``unknown`` (vim, or its fallback)
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("runtime", pa.string()),
    ]
)
# What mapInPandas returns, as a Spark DDL string (lists as arrays).
SPARK_SCHEMA = (
    "uri string, sha256 string, status string, reason string, detail string, top_species array<string>, "
    "top_scores array<float>, unknown boolean, unknown_score float, unknown_method string, width int, "
    "height int, model_name string, model_version string, runtime string"
)


@dataclass(frozen=True)
class ModelSpec:
    """Which version to load, and from where: small and picklable, sent to every Spark task."""

    tracking_uri: str
    registry_uri: str | None
    model_name: str
    version: str
    run_id: str
    runtime: str = "auto"  # auto | openvino | onnx | tensorflow


class Scorer:
    """One loaded version: decode -> resize -> the runtime -> top-3 and unknown."""

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        labels: list[str],
        image_size: int,
        runtime: str,
        calibration: Any | None,
    ) -> None:
        self.spec = spec
        self.model = model
        self.labels = labels
        self.image_size = image_size
        self.runtime = runtime
        self.calibration = calibration

    def score(self, items: list[tuple[str, bytes | None, str | None]]) -> list[dict[str, Any]]:
        """``(uri, bytes or None, read error or None)`` -> one result row per item, in order."""
        rows: list[dict[str, Any]] = []
        ready: list[tuple[dict[str, Any], np.ndarray]] = []
        for uri, data, error in items:
            row = self._row(uri)
            if data is None:
                row.update(status="error", reason="read_error", detail=(error or "")[:500])
                rows.append(row)
                continue
            row["sha256"] = sha256_hex(data)
            try:
                image = decode_image(data, DEFAULT_MAX_PIXELS)
            except InvalidImage as exc:
                row.update(status="error", reason=exc.reason, detail=exc.detail[:500])
                rows.append(row)
                continue
            row["width"], row["height"] = image.size
            rows.append(row)
            ready.append((row, np.asarray(resize_square(image, self.image_size), np.uint8)))
        for start in range(0, len(ready), SCORE_BATCH):
            chunk = ready[start : start + SCORE_BATCH]
            try:
                pixels = np.stack([a for _, a in chunk])
                probabilities, embeddings = probabilities_and_embeddings(self.model, pixels)
            except Exception as exc:  # a runtime failure marks these rows, the run goes on
                for row, _ in chunk:
                    row.update(
                        status="error", reason="model_error", detail=f"{type(exc).__name__}: {exc}"[:500]
                    )
                continue
            self._answer([row for row, _ in chunk], probabilities, pixels, embeddings)
        return rows

    def _row(self, uri: str) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(RESULT_SCHEMA.names)
        row.update(
            uri=uri,
            status="ok",
            model_name=self.spec.model_name,
            model_version=self.spec.version,
            runtime=self.runtime,
        )
        return row

    def _answer(
        self, rows: list[dict[str, Any]], raw: np.ndarray, pixels: np.ndarray, embeddings: np.ndarray | None
    ) -> None:
        record = self.calibration
        calibrated = record.calibrate(raw) if record is not None else raw
        unknown = record.is_unknown(raw, pixels, embeddings) if record is not None else None
        scores = record.scores(raw, embeddings) if record is not None else None
        method = record.method_for(embeddings) if record is not None else None
        order = np.argsort(-calibrated, axis=1, kind="stable")[:, :TOP_K]
        for i, row in enumerate(rows):
            row["top_species"] = [self.labels[j] for j in order[i]]
            row["top_scores"] = [float(calibrated[i, j]) for j in order[i]]
            if unknown is not None:
                row["unknown"], row["unknown_score"] = bool(unknown[i]), float(scores[i])
                row["unknown_method"] = method


def _bundle(client: Any, spec: ModelSpec) -> tuple[Any, list[str], int, str] | None:
    """The version's optimized bundle for ``spec.runtime`` (``auto``: OpenVINO, then ONNX), if logged."""
    from fish_platform.ml.export import load_exported, read_export
    from fish_platform.ml.serving_bundles import download_bundle

    found = download_bundle(client, spec.run_id, spec.runtime, spec.tracking_uri)
    if found is None:
        return None
    folder, runtime = found
    exported = read_export(folder)
    return load_exported(folder), list(exported.labels), int(exported.image_size), runtime


def load_scorer(spec: ModelSpec) -> Scorer:
    """Download and open the version (optimized runtime first), with its calibration when it has one."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fish_platform.ml.trust import load_calibration

    registry_uri = spec.registry_uri or spec.tracking_uri
    mlflow.set_tracking_uri(spec.tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    client = mlflow.MlflowClient(spec.tracking_uri, registry_uri=registry_uri)
    found = _bundle(client, spec) if spec.runtime != "tensorflow" else None
    if found is None:
        if spec.runtime not in ("auto", "tensorflow"):
            raise RuntimeError(f"{spec.model_name} v{spec.version} has no {spec.runtime} bundle")
        from fish_platform.ml.packaging import load_classifier

        classifier = load_classifier(f"models:/{spec.model_name}/{spec.version}")
        found = classifier, list(classifier.labels), int(classifier.image_size), "tensorflow"
    model, labels, image_size, runtime = found
    try:
        calibration = load_calibration(spec.run_id, spec.tracking_uri)
    except (MlflowException, OSError):
        calibration = None
    return Scorer(spec, model, labels, image_size, runtime, calibration)


_SCORERS: dict[ModelSpec, Scorer] = {}  # per Python worker: Spark reuses workers across tasks


def cached_scorer(spec: ModelSpec, loader: Callable[[ModelSpec], Scorer] = load_scorer) -> Scorer:
    """The worker's scorer for ``spec``, loaded on first use (a model load per worker, not per task)."""
    if spec not in _SCORERS:
        _SCORERS.clear()  # one version at a time per worker
        _SCORERS[spec] = loader(spec)
    return _SCORERS[spec]


def score_task(
    spec: ModelSpec, batch_uri: str, endpoint_url: str | None
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: read each URI's bytes and classify them, ``SCORE_BATCH`` at a time."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        storage = open_storage(batch_uri, endpoint_url)
        scorer = None
        for frame in frames:
            items: list[tuple[str, bytes | None, str | None]] = []
            for uri in frame["uri"]:
                try:
                    items.append((uri, storage.read_bytes(uri), None))
                except Exception as exc:  # vanished or unreadable object: its own row
                    items.append((uri, None, f"{type(exc).__name__}: {exc}"))
            scorer = scorer or cached_scorer(spec)
            out = pd.DataFrame(scorer.score(items), columns=RESULT_SCHEMA.names)
            yield out.astype({"width": "Int32", "height": "Int32", "unknown_score": "float32"})

    return run


def list_batches(batch_uri: str, endpoint_url: str | None = None) -> list[str]:
    """The batch names: the first path component under ``batch_uri`` of every image found there."""
    root = batch_uri.rstrip("/")
    names = set()
    for uri in open_storage(batch_uri, endpoint_url).list(root):
        relative = uri[len(root) :].lstrip("/")
        parts = PurePosixPath(relative).parts
        if len(parts) >= 2 and PurePosixPath(relative).suffix.lower() in IMAGE_EXTENSIONS:
            names.add(parts[0])
    return sorted(names)


def batch_images(batch_uri: str, batch: str, endpoint_url: str | None = None) -> list[str]:
    """Every image URI of one batch (recursive), sorted; other files are ignored."""
    prefix = join(batch_uri, batch)
    uris = open_storage(batch_uri, endpoint_url).list(prefix)
    return [uri for uri in uris if PurePosixPath(uri).suffix.lower() in IMAGE_EXTENSIONS]


def results_uri(data_uri: str, batch: str) -> str:
    return join(data_uri, BATCH_RESULTS_PREFIX, f"batch={batch}", RESULTS_FILE)


@dataclass(frozen=True)
class BatchResult:
    """What one scored batch produced (the ``batch_predictions`` asset's output)."""

    batch: str
    results_uri: str
    images: int
    scored: int
    errors: dict[str, int]  # reason -> images
    species: dict[str, int]  # top-1 -> images
    unknown: int
    model_version: str
    runtimes: list[str]
    duration_s: float


def score_batch(
    spark: Any,
    spec: ModelSpec,
    batch_uri: str,
    batch: str,
    data_uri: str,
    endpoint_url: str | None = None,
    partitions: int | None = None,
) -> BatchResult:
    """Classify every image of ``batch`` with Spark and write ``<data_uri>/batch_predictions/batch=<b>/``."""
    start = time.perf_counter()
    uris = batch_images(batch_uri, batch, endpoint_url)
    if uris:
        n = partitions or max(1, min(len(uris), spark.sparkContext.defaultParallelism * 2))
        scored = (
            spark.createDataFrame(pd.DataFrame({"uri": uris}))
            .repartition(n)
            .mapInPandas(score_task(spec, batch_uri, endpoint_url), SPARK_SCHEMA)
            .toPandas()
        )
        frame = scored.sort_values("uri", ignore_index=True)
    else:
        frame = pd.DataFrame({name: pd.Series(dtype="object") for name in RESULT_SCHEMA.names})
    table = _as_table(frame)
    target = results_uri(data_uri, batch)
    write_parquet(open_storage(data_uri, endpoint_url), target, table, row_group_size=1024)
    ok = frame[frame["status"] == "ok"]
    top1 = [species[0] for species in ok["top_species"] if species is not None and len(species)]
    return BatchResult(
        batch=batch,
        results_uri=target,
        images=len(frame),
        scored=len(ok),
        errors={
            str(k): int(v) for k, v in frame.loc[frame["status"] != "ok", "reason"].value_counts().items()
        },
        species={str(k): int(v) for k, v in pd.Series(top1, dtype="object").value_counts().items()},
        unknown=sum(1 for value in ok["unknown"] if value is True or value is np.True_),
        model_version=spec.version,
        runtimes=sorted({str(r) for r in frame["runtime"].dropna()}),
        duration_s=time.perf_counter() - start,
    )


def _as_table(frame: pd.DataFrame) -> pa.Table:
    """Spark's pandas output (numpy arrays in list cells, NaN for nulls) as ``RESULT_SCHEMA``."""
    columns: dict[str, list] = {}
    for name in RESULT_SCHEMA.names:
        values = frame[name].tolist() if name in frame else [None] * len(frame)
        columns[name] = [
            None
            if v is None or (isinstance(v, float) and np.isnan(v))
            else (list(v) if isinstance(v, np.ndarray) else v)
            for v in values
        ]
    return pa.Table.from_pydict(columns, schema=RESULT_SCHEMA)
