"""Batch scoring assets: one dynamic partition per batch folder (or prefix) under FISH_BATCH_URI.

Thin adapters over :mod:`fish_platform.ml.batch`: the sensor adds a partition (and asks for its run)
when a new batch appears; the asset classifies the batch's images with Spark using the production
version and writes ``<FISH_DATA_URI>/batch_predictions/batch=<name>/predictions.parquet``.
No ``from __future__ import annotations`` here: Dagster resolves config and resource types from
the real annotations.
"""

import dagster as dg

from fish_platform.jobs import BATCH_JOB_NAME
from fish_platform.ml.batch import BatchResult
from fish_platform.pod_sizing import pod_tags
from fish_platform.resources import MlflowResource, PlatformResource, SparkResource

BATCH_GROUP = "monitoring"  # partitioned like the drift report: outside the whole-graph job
BATCHES = dg.DynamicPartitionsDefinition(name="batches")


class BatchPredictionsConfig(dg.Config):
    """How a batch is scored."""

    runtime: str = (
        "auto"  # auto (the version's OpenVINO/ONNX bundle, else TensorFlow), openvino, onnx, tensorflow
    )
    partitions: int | None = None  # Spark partitions; None: twice the default parallelism


@dg.asset(
    group_name=BATCH_GROUP,
    partitions_def=BATCHES,
    kinds={"spark", "parquet", "mlflow"},
    op_tags=pod_tags("spark"),
)
def batch_predictions(
    context: dg.AssetExecutionContext,
    config: BatchPredictionsConfig,
    spark: SparkResource,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.Output[BatchResult]:
    """Every image of one batch classified by the production version (top-3, unknown), as Parquet."""
    from fish_platform.ml.batch import ModelSpec, score_batch
    from fish_platform.registry import get_champion

    champion = get_champion(mlflow.client(), mlflow.model_name)
    if champion is None:
        raise dg.Failure(f"{mlflow.model_name} has no production version to score batches with")
    spec = ModelSpec(
        tracking_uri=mlflow.tracking_uri,
        registry_uri=mlflow.registry_uri,
        model_name=mlflow.model_name,
        version=str(champion.version),
        run_id=champion.run_id,
        runtime=config.runtime,
    )
    session = spark.session(context.run_id)
    result = score_batch(
        session,
        spec,
        platform.batches_uri,
        context.partition_key,
        platform.data_uri,
        platform.s3_endpoint_url,
        config.partitions,
    )
    context.log.info(
        f"batch {result.batch}: {result.scored}/{result.images} scored by v{result.model_version} "
        f"({', '.join(result.runtimes) or 'no runtime'}), errors {result.errors}"
    )
    metadata = {
        "results": result.results_uri,
        "images": result.images,
        "scored": result.scored,
        "errors": sum(result.errors.values()),
        "error_reasons": dg.MetadataValue.json(result.errors),
        "species": dg.MetadataValue.json(result.species),
        "unknown": result.unknown,
        "model_version": result.model_version,
        "runtime": ", ".join(result.runtimes),
        "duration_s": round(result.duration_s, 1),
    }
    link = mlflow.run_url(champion.run_id)
    if link:
        metadata["model_run"] = dg.MetadataValue.url(link)
    return dg.Output(result, metadata=metadata)


def new_batches_sensor(minimum_interval_seconds: int = 60) -> dg.SensorDefinition:
    """Adds a partition for every new batch folder under FISH_BATCH_URI and requests its run."""

    @dg.sensor(
        name="new_batches",
        job_name=BATCH_JOB_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Scores each new folder (or prefix) under FISH_BATCH_URI once.",
    )
    def new_batches(context: dg.SensorEvaluationContext, platform: PlatformResource):
        return batch_tick(context.instance, platform)

    return new_batches


def batch_tick(instance: dg.DagsterInstance, platform: PlatformResource):
    """One evaluation: the batches not yet partitions become partitions, each with one run request."""
    from fish_platform.ml.batch import list_batches

    known = set(instance.get_dynamic_partitions(BATCHES.name))
    new = [name for name in list_batches(platform.batches_uri, platform.s3_endpoint_url) if name not in known]
    if not new:
        return dg.SkipReason(f"no new batch under {platform.batches_uri}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"batch-{name}", partition_key=name) for name in new],
        dynamic_partitions_requests=[BATCHES.build_add_request(new)],
    )


BATCH_ASSETS = [batch_predictions]
