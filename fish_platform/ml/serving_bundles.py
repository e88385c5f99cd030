"""Optimized runtimes for a trained model: convert, check parity, log beside the model.

The ``serving_model`` step runs after evaluation, before registration:

1. the logged Keras model is converted to each requested format (OpenVINO IR FP32 by default; ONNX
   and LiteRT on request) as a self-contained bundle (:mod:`fish_platform.ml.export`);
2. each bundle runs the whole test split, and its answers are compared with Keras'
   (:func:`fish_platform.ml.optimize.check_parity`: top-1 agreement >= 99.5%, largest probability
   difference <= 1e-3). Only bundles that pass are logged, under ``serving/<format>/`` in the model's
   MLflow run, so the service finds them from the registry alone (version -> run -> artifacts);
3. with ``int8``, the OpenVINO model is also quantized with NNCF (calibrated on training images) and
   kept as ``serving/openvino-int8/`` only if its test accuracy drops by at most 1 point.

A failed parity check blocks promotion (the asset check on ``serving_model``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fish_platform.ml.input import DatasetLike, first_images, iter_rows

SERVING_ARTIFACTS = "serving"  # run artifacts: serving/<format>/ (a bundle), serving/report.json
INT8_BUNDLE = "openvino-int8"
RUNTIME_PREFERENCE = ("openvino", "onnx")  # what FISH_RUNTIME=auto serves, first present wins
INT8_CALIBRATION_IMAGES = 300


def download_bundle(client: Any, run_id: str, runtime: str, tracking_uri: str) -> tuple[str, str] | None:
    """``(local folder, format)`` of the run's logged bundle for ``runtime`` (``auto``: the first of
    :data:`RUNTIME_PREFERENCE` present), downloaded to a new temporary folder; None if it has none."""
    import mlflow

    present = {item.path.rsplit("/", 1)[-1] for item in client.list_artifacts(run_id, SERVING_ARTIFACTS)}
    for candidate in RUNTIME_PREFERENCE if runtime == "auto" else (runtime,):
        if candidate in present:
            folder = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"{SERVING_ARTIFACTS}/{candidate}",
                dst_path=tempfile.mkdtemp(prefix=f"fish-{candidate}-"),
                tracking_uri=tracking_uri,
            )
            return folder, candidate
    return None


@dataclass
class BundleReport:
    format: str
    passed: bool
    parity: dict[str, Any]
    artifact_path: str | None  # serving/<format> in the run, when logged
    seconds: float = 0.0


@dataclass
class ServingModelReport:
    """What ``serving_model`` made for one trained model."""

    run_id: str
    bundles: list[BundleReport] = field(default_factory=list)
    int8: dict[str, Any] | None = None
    test_images: int = 0

    @property
    def parity_passed(self) -> bool:
        return bool(self.bundles) and all(bundle.passed for bundle in self.bundles)

    @property
    def runtimes(self) -> list[str]:
        return [bundle.format for bundle in self.bundles if bundle.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "test_images": self.test_images,
            "bundles": [bundle.__dict__ for bundle in self.bundles],
            "int8": self.int8,
        }


def _test_split(model_labels: list[str], dataset: DatasetLike, split: str, decode: Any) -> tuple[Any, Any]:
    rows = list(iter_rows(dataset, split, ["image", "species"]))
    images = decode([row["image"] for row in rows])
    index = {name: i for i, name in enumerate(model_labels)}
    return images, np.array([index[row["species"]] for row in rows], dtype=np.int64)


def build_serving_bundles(
    run_id: str,
    model_uri: str,
    dataset: DatasetLike,
    out_dir: Path,
    *,
    formats: tuple[str, ...] = ("openvino",),
    split: str = "test",
    int8: bool = False,
    log: Any = print,
) -> ServingModelReport:
    """Convert the logged model to ``formats`` under ``out_dir/<format>`` and check each one's parity."""
    import time

    from fish_platform.imaging import to_model_input
    from fish_platform.ml.export import check_export_parity, export_model, load_logged_keras
    from fish_platform.ml.optimize import export_saved_model, reference_probabilities

    keras_model, meta = load_logged_keras(model_uri)

    def decode(items: list[bytes]) -> np.ndarray:
        return np.stack([to_model_input(data, size) for data in items])

    labels, size = list(meta["labels"]), int(meta["image_size"])
    images, truth = _test_split(labels, dataset, split, decode)
    reference = reference_probabilities(keras_model, images.astype(np.float32))
    report = ServingModelReport(run_id, test_images=len(images))
    info = {"model_uri": model_uri, "run_id": run_id}
    info.update({key: meta[key] for key in ("variant", "weights") if key in meta})
    saved_model = export_saved_model(keras_model, out_dir / "saved_model")  # traced once for every format
    for fmt in formats:
        started = time.perf_counter()
        bundle = export_model(
            keras_model, labels, size, fmt, out_dir / fmt, saved_model=saved_model, info=info, overwrite=True
        )
        parity = check_export_parity(bundle, reference, images.astype(np.float32))
        seconds = time.perf_counter() - started
        verdict = "passed" if parity.passed else "FAILED"
        log(f"{fmt}: parity {verdict} on {len(images)} images ({seconds:.1f}s): {parity.to_dict()}")
        report.bundles.append(BundleReport(fmt, parity.passed, parity.to_dict(), None, round(seconds, 1)))
    if int8 and "openvino" in formats:
        report.int8 = _int8_bundle(out_dir, dataset, labels, size, images, truth, log)
    return report


def _int8_bundle(out_dir: Path, dataset: DatasetLike, labels: list[str], size: int, images: np.ndarray,
                 truth: np.ndarray, log: Any) -> dict[str, Any]:
    """NNCF INT8 of the OpenVINO bundle, kept (as a bundle beside it) only if its gate passes."""
    from fish_platform.imaging import to_model_input
    from fish_platform.ml.optimize import OPENVINO_XML, quantize_int8_gated

    calibration = np.stack(
        [to_model_input(data, size) for data in first_images(dataset, "train", INT8_CALIBRATION_IMAGES)]
    ).astype(np.float32)
    staging = Path(tempfile.mkdtemp(prefix="int8-", dir=out_dir))
    result = quantize_int8_gated(
        out_dir / "openvino" / OPENVINO_XML, calibration, images.astype(np.float32), truth, staging
    )
    log(f"INT8: {result.report.reason}")
    if result.accepted:
        from fish_platform.ml.export import export_int8_bundle

        bundle = out_dir / INT8_BUNDLE
        export_int8_bundle(out_dir / "openvino", result.model_path, bundle, gate_report=result.report)
    shutil.rmtree(staging, ignore_errors=True)
    return {**result.report.to_dict(), "accepted": result.accepted}
