"""Monitoring assets: the production version's traffic compared with its reference, one UTC day a partition.

Thin adapters over :mod:`fish_platform.monitoring.drift`: the asset reads one day of the prediction log
(today's partition is available during the day and covers the log so far), the check warns on drift,
and the sensor asks for retraining after drift on consecutive days (off unless FISH_DRIFT_RETRAIN=on).
No ``from __future__ import annotations`` here: Dagster resolves resource types from real annotations.
"""

from typing import Any

import dagster as dg

from fish_platform.jobs import RETRAIN_JOB_NAME
from fish_platform.ml.plots import markdown_image
from fish_platform.monitoring.drift import DayDrift, consecutive_drift, save_drift_report
from fish_platform.resources import MlflowResource, PlatformResource

MONITORING_GROUP = "monitoring"
LOG_START = "2025-01-01"
# end_offset=1: today's partition exists before the day is over (the log so far).
DAILY = dg.DailyPartitionsDefinition(start_date=LOG_START, end_offset=1)
DRIFT_ASSET = dg.AssetKey("prediction_drift")


def _drift_metadata(day: DayDrift, run_link: str | None) -> dict[str, Any]:
    report = day.report
    metadata: dict[str, Any] = {
        "date": day.date,
        "model_version": day.model_version,
        "drifted": report.drifted,
        "reason": report.reason,
        "answers": report.n_traffic,
        "answers_with_embedding": report.n_embeddings,
        "reference_images": report.n_reference,
        "tests": dg.MetadataValue.md(report.markdown()),
        **{f"{name}_p_value": round(test.p_value, 6) for name, test in report.tests.items()},
        **{
            f"{name}_{key}": round(value, 4)
            for name, test in report.tests.items()
            for key, value in test.figures.items()
        },
    }
    if day.plot_png:
        metadata["plots"] = dg.MetadataValue.md(markdown_image(day.plot_png, "drift"))
    if run_link:
        metadata["reference_run"] = dg.MetadataValue.url(run_link)
    return metadata


@dg.asset(group_name=MONITORING_GROUP, partitions_def=DAILY, kinds={"mlflow"})
def prediction_drift(
    context: dg.AssetExecutionContext, platform: PlatformResource, mlflow: MlflowResource
) -> dg.Output[dict]:
    """One day's answers of the production version against its validation reference: drifted or not."""
    from fish_platform.ml.reference import load_reference
    from fish_platform.monitoring.drift import drift_for_day
    from fish_platform.registry import get_champion

    champion = get_champion(mlflow.client(), mlflow.model_name)
    if champion is None:
        raise dg.Failure(f"{mlflow.model_name} has no production version: nothing to compare traffic with")
    try:
        reference = load_reference(champion.run_id, mlflow.tracking_uri)
    except FileNotFoundError as exc:
        raise dg.Failure(str(exc)) from exc
    day = drift_for_day(
        platform.data_uri,
        context.partition_key,
        reference,
        str(champion.version),
        s3_endpoint_url=platform.s3_endpoint_url,
    )
    context.log.info(f"{day.date}, v{day.model_version}: {day.report.reason}")
    report_uri = save_drift_report(platform.data_uri, day, platform.s3_endpoint_url)  # -> fish_drift_*
    metadata = {**_drift_metadata(day, mlflow.run_url(champion.run_id)), "report_uri": report_uri}
    return dg.Output(day.as_dict(), metadata=metadata)


def _latest_drift(instance: dg.DagsterInstance, partition: str | None) -> tuple[str | None, dict]:
    """``(partition, metadata)`` of the newest materialization (of ``partition`` when given)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DRIFT_ASSET, asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    if not records:
        return partition, {}
    record = records[0]
    materialization = record.asset_materialization
    metadata = {key: value.value for key, value in (materialization.metadata or {}).items()}
    return record.partition_key, metadata


@dg.asset_check(
    asset=prediction_drift, description="Warns when the day's traffic drifted from the reference."
)
def no_prediction_drift(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Checks are not per partition: this reads the partition of the run (else the newest one)."""
    partition = context.partition_key if context.has_partition_key else None
    partition, metadata = _latest_drift(context.instance, partition)
    if not metadata:
        return dg.AssetCheckResult(
            passed=True, metadata={"partition": str(partition), "note": "no drift report"}
        )
    return dg.AssetCheckResult(
        passed=not bool(metadata.get("drifted")),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "partition": str(partition),
            "reason": str(metadata.get("reason", "")),
            "model_version": str(metadata.get("model_version", "")),
        },
    )


def drift_verdicts(instance: dg.DagsterInstance, days: list[str]) -> dict[str, bool]:
    """The newest verdict of each of ``days`` that has one."""
    verdicts: dict[str, bool] = {}
    for day in days:
        partition, metadata = _latest_drift(instance, day)
        if metadata and "drifted" in metadata:
            verdicts[day] = bool(metadata["drifted"])
    return verdicts


def drift_retrain_sensor(
    days: int = 3, running: bool = False, run_config: dict | None = None, minimum_interval_seconds: int = 3600
) -> dg.SensorDefinition:
    """Requests the retrain job once drift was found on ``days`` consecutive days (the newest ones).

    Stopped unless ``running`` (FISH_DRIFT_RETRAIN=on); the run key is the window's last day, so one
    drifted stretch asks once.
    """

    @dg.sensor(
        name="drift_retrain",
        job_name=RETRAIN_JOB_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description=f"Runs retraining after prediction drift on {days} consecutive days.",
    )
    def drift_retrain(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        return drift_tick(context.instance, days, run_config or {})

    return drift_retrain


def drift_tick(instance: dg.DagsterInstance, days: int, run_config: dict | None = None):
    """One evaluation of the drift sensor over the newest ``days`` partitions that exist now."""
    keys = DAILY.get_partition_keys(dynamic_partitions_store=instance)[-(days + 1) :]
    # Today's report may not exist yet: then the window ends yesterday (the newest day with a verdict).
    verdicts = drift_verdicts(instance, keys)
    window = consecutive_drift(verdicts, days)
    if window is None:
        return dg.SkipReason(f"no drift on {days} consecutive days ({verdicts or 'no reports'})")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"drift-retrain-{window[-1]}",
                run_config=run_config or {},
                tags={"fish/drift_days": ",".join(window)},
            )
        ]
    )


MONITORING_ASSETS = [prediction_drift]
MONITORING_CHECKS = [no_prediction_drift]
