"""What the service serves: the ``serving_deployment`` asset and its check against the registry.

Thin adapter over :mod:`fish_platform.serving_status`. Materialized after every promotion (it is
downstream of ``production_model``) and every few minutes by the ``serving_status`` schedule, so the
Dagster UI shows which version is live and flags a service that has not followed the alias.
"""

import time

import dagster as dg

from fish_platform.pod_sizing import pod_tags
from fish_platform.resources import MlflowResource
from fish_platform.serving_status import read_serving_status

SERVING_GROUP = "serving"
FOLLOWS_CHECK = "serving_follows_production"


class ServingResource(dg.ConfigurableResource):
    """Where the service answers (``FISH_SERVING_URL``) and how long it may lag a promotion."""

    url: str | None = None
    max_lag_seconds: float = 300.0  # FISH_SERVING_MAX_LAG_SECONDS: poll interval + reload + rollout


@dg.asset(
    group_name=SERVING_GROUP,
    kinds={"bentoml"},
    deps=["production_model"],
    op_tags=pod_tags("light"),
    check_specs=[dg.AssetCheckSpec(FOLLOWS_CHECK, asset="serving_deployment")],
)
def serving_deployment(serving: ServingResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """The version the service has loaded, beside the version the ``production`` alias names."""
    if not serving.url:
        return dg.MaterializeResult(
            metadata={"url": "none (set FISH_SERVING_URL)"},
            check_results=[
                dg.AssetCheckResult(
                    check_name=FOLLOWS_CHECK,
                    passed=True,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="no service configured: nothing to compare",
                )
            ],
        )
    now = time.time()
    status = read_serving_status(serving.url, mlflow.client(), mlflow.model_name)
    lag = round(status.lag_seconds(now), 1)
    facts = {
        "url": serving.url,
        "reachable": status.reachable,
        "served_version": status.served_version or "none",
        "production_version": status.production_version or "none",
        "in_sync": status.in_sync,
        "lag_seconds": lag,
    }
    follows = status.follows(serving.max_lag_seconds, now)
    problem = (
        f"serving v{status.served_version} but production is v{status.production_version} for {lag:.0f}s "
        f"(limit {serving.max_lag_seconds:.0f}s) {status.detail}".strip()
    )
    return dg.MaterializeResult(
        metadata={**facts, **({"detail": status.detail} if status.detail else {})},
        check_results=[
            dg.AssetCheckResult(
                check_name=FOLLOWS_CHECK,
                passed=follows,
                metadata={**facts, "max_lag_seconds": serving.max_lag_seconds},
                description=None if follows else problem,
            )
        ],
    )


SERVING_ASSETS = [serving_deployment]
