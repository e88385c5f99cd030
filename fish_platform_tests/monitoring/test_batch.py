"""Batch scoring with the real local Spark session, a real MLflow registry and an OpenVINO bundle."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from fish_platform_tests.serving.serving_helpers import (
    LABELS_V1,
    Registry,
    png_bytes,
    promote,
    register_tiny_model,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory):
    """A production version with an OpenVINO bundle, and a batch root with two batches."""
    import mlflow

    from fish_platform.ml.batch import ModelSpec

    root = tmp_path_factory.mktemp("batch")
    registry = Registry(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri(), "fish-batch-test")
    calibration = {
        "temperature": 2.0,
        "threshold": 0.9,
        "score_method": "max_probability",
        "ece_before": 0.1,
        "ece_after": 0.05,
    }
    version = register_tiny_model(registry, LABELS_V1, 32, bundles=("openvino",), calibration=calibration)
    promote(registry, version)
    client = mlflow.MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    run_id = client.get_model_version(registry.model_name, version).run_id
    spec = ModelSpec(registry.tracking_uri, None, registry.model_name, version, run_id, "auto")

    batches = root / "batches"
    first = batches / "2026-01-15-boat-7"
    for i in range(6):
        (first / f"{i:02d}.png").parent.mkdir(parents=True, exist_ok=True)
        (first / f"{i:02d}.png").write_bytes(png_bytes(i, (40 + 8 * i, 30 + 4 * i)))
    (first / "deck" / "late.png").parent.mkdir()
    (first / "deck" / "late.png").write_bytes(png_bytes(99))
    (first / "truncated.png").write_bytes(png_bytes(7)[:60])
    (first / "empty.png").write_bytes(b"")
    (first / "notes.txt").write_text("not an image: ignored")
    (batches / "2026-01-16-boat-2").mkdir()
    (batches / "2026-01-16-boat-2" / "a.png").write_bytes(png_bytes(11))
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield registry, spec, batches, root / "fish-data"
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def test_spark_scores_a_batch_on_the_optimized_runtime(production, spark) -> None:
    from fish_platform.ml.batch import list_batches, load_scorer, score_batch

    _, spec, batches, data_dir = production
    assert list_batches(str(batches)) == ["2026-01-15-boat-7", "2026-01-16-boat-2"]
    result = score_batch(spark, spec, str(batches), "2026-01-15-boat-7", str(data_dir), partitions=3)

    assert (result.images, result.scored) == (9, 7)
    assert result.errors == {"corrupt": 1, "empty": 1}
    assert result.runtimes == ["openvino"] and result.model_version == spec.version
    table = pq.read_table(result.results_uri).to_pylist()
    by_name = {Path(row["uri"]).name: row for row in table}
    assert by_name["empty.png"]["status"] == "error" and by_name["empty.png"]["top_species"] is None
    assert by_name["truncated.png"]["reason"] == "corrupt" and by_name["truncated.png"]["sha256"]
    assert (by_name["03.png"]["width"], by_name["03.png"]["height"]) == (64, 42)

    # The executors answered exactly as the same version does in this process.
    scorer = load_scorer(spec)
    uris = sorted(row["uri"] for row in table if row["status"] == "ok")
    expected = scorer.score([(uri, Path(uri).read_bytes(), None) for uri in uris])
    for row, want in zip(
        sorted((r for r in table if r["status"] == "ok"), key=lambda r: r["uri"]), expected, strict=True
    ):
        assert row["top_species"] == want["top_species"] and len(row["top_species"]) == 3
        assert row["top_scores"] == pytest.approx(want["top_scores"], abs=1e-5)
        assert set(row["top_species"]) <= set(LABELS_V1)
        assert row["unknown"] is (row["unknown_score"] < 0.9)  # the version's threshold, on raw scores
        assert row["unknown_method"] == "max_probability"  # the version's stored score
    assert result.unknown == sum(row["unknown"] is True for row in table)


def test_sensor_adds_partitions_and_the_asset_scores_one(production, spark) -> None:
    from fish_platform.assets.batch import BATCHES, batch_predictions, batch_tick
    from fish_platform.resources import MlflowResource, PlatformResource, SparkResource

    registry, _, batches, data_dir = production
    platform = PlatformResource(data_uri=str(data_dir), batch_uri=str(batches))
    instance = dg.DagsterInstance.ephemeral()
    tick = batch_tick(instance, platform)
    assert [r.partition_key for r in tick.run_requests] == ["2026-01-15-boat-7", "2026-01-16-boat-2"]
    instance.add_dynamic_partitions(BATCHES.name, tick.dynamic_partitions_requests[0].partition_keys)
    assert isinstance(batch_tick(instance, platform), dg.SkipReason)  # each batch is scored once

    result = dg.materialize(
        [batch_predictions],
        partition_key="2026-01-16-boat-2",
        instance=instance,
        resources={
            "platform": platform,
            "spark": SparkResource(master="local[2]"),
            "mlflow": MlflowResource(tracking_uri=registry.tracking_uri, model_name=registry.model_name),
        },
    )
    assert result.success
    metadata = result.asset_materializations_for_node("batch_predictions")[0].metadata
    assert (metadata["images"].value, metadata["scored"].value, metadata["runtime"].value) == (
        1,
        1,
        "openvino",
    )
    rows = pq.read_table(metadata["results"].value).to_pylist()
    assert rows[0]["uri"].endswith("/2026-01-16-boat-2/a.png") and rows[0]["status"] == "ok"
