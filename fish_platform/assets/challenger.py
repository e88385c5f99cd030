"""The ``challenger_report`` asset: champion against challenger on shadowed live traffic.

A thin adapter over :mod:`fish_platform.monitoring.challenger`: it reads the prediction log and the
feedback (all days, or the newest ``days``), compares the ``@production`` and ``@challenger`` versions
of the registry (the newest logged pair when an alias is missing), and writes the report JSON to
``<FISH_DATA_URI>/reports/challenger/latest.json`` (and a dated copy), which
``fish-platform promote --from-report`` reads. Nothing is promoted here.
No ``from __future__ import annotations`` here: Dagster resolves resource types from real annotations.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pydantic

from fish_platform.assets.monitoring import MONITORING_GROUP
from fish_platform.monitoring.challenger import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_LABELLED,
    LATEST_REPORT,
    REPORT_PREFIX,
)
from fish_platform.resources import MlflowResource, PlatformResource

LOG_COLUMNS = ["request_id", "ts", "model_name", "model_version", "role", "top_species", "unknown",
               "cached", "latency_ms"]  # fmt: skip


class ChallengerReportConfig(dg.Config):
    """Which traffic the report covers and when it may recommend promotion."""

    days: int | None = pydantic.Field(
        default=None, description="newest UTC days of the log to read (None: all)"
    )
    min_labelled: int = pydantic.Field(
        default=DEFAULT_MIN_LABELLED, description="feedback-labelled paired requests needed to decide"
    )
    alpha: float = pydantic.Field(
        default=DEFAULT_ALPHA, description="significance level of the one-sided z-test"
    )


@dg.asset(group_name=MONITORING_GROUP, kinds={"mlflow"})
def challenger_report(
    context: dg.AssetExecutionContext,
    config: ChallengerReportConfig,
    platform: PlatformResource,
    mlflow: MlflowResource,
) -> dg.Output[dict]:
    """Agreement, feedback-labelled accuracy and latency of champion and challenger, and a verdict."""
    from fish_platform.contract import CHALLENGER_ALIAS
    from fish_platform.data.storage import join, open_storage, write_json
    from fish_platform.monitoring import challenger
    from fish_platform.monitoring.feedback import read_feedback
    from fish_platform.monitoring.prediction_log import read_predictions
    from fish_platform.registry import get_champion

    client = mlflow.client()
    champion = get_champion(client, mlflow.model_name)
    shadow = get_champion(client, mlflow.model_name, CHALLENGER_ALIAS)
    since = None
    if config.days is not None:
        since = (datetime.now(UTC).date() - timedelta(days=max(config.days, 1) - 1)).isoformat()
    endpoint = platform.s3_endpoint_url
    predictions = read_predictions(
        platform.data_uri, since=since, columns=LOG_COLUMNS, s3_endpoint_url=endpoint
    )
    feedback = read_feedback(platform.data_uri, endpoint, since=since)
    report = challenger.challenger_report(
        predictions,
        feedback,
        champion_version=str(champion.version) if champion is not None else None,
        challenger_version=str(shadow.version) if shadow is not None else None,
        min_labelled=config.min_labelled,
        alpha=config.alpha,
        since=since,
    )
    storage = open_storage(platform.data_uri, endpoint)
    uri = join(platform.data_uri, LATEST_REPORT)
    stamp = report.generated_at.replace(":", "")
    write_json(storage, join(platform.data_uri, REPORT_PREFIX, f"report-{stamp}.json"), report.as_dict())
    write_json(storage, uri, report.as_dict())
    context.log.info(
        f"v{report.champion_version} vs v{report.challenger_version}: {report.recommendation} "
        f"({report.reason})"
    )

    def rounded(value: float | None) -> float | str:
        return "n/a" if value is None else round(value, 4)

    return dg.Output(
        report.as_dict(),
        metadata={
            "champion_version": report.champion_version or "none",
            "challenger_version": report.challenger_version or "none",
            "recommendation": report.recommendation,
            "reason": report.reason,
            "paired_requests": report.n_pairs,
            "labelled_requests": report.n_labelled,
            "agreement": rounded(report.agreement),
            "champion_accuracy": rounded(report.champion_accuracy),
            "challenger_accuracy": rounded(report.challenger_accuracy),
            "p_value": round(report.p_value, 6),
            "z": round(report.z, 4),
            "table": dg.MetadataValue.md(report.markdown()),
            "report_uri": uri,
        },
    )


CHALLENGER_ASSETS = [challenger_report]
