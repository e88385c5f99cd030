"""``serving_deployment``: what the real service serves, beside the production alias."""

import dagster as dg
import pytest

from fish_platform.assets.serving import FOLLOWS_CHECK, ServingResource, serving_deployment
from fish_platform.resources import MlflowResource
from fish_platform.serving_status import ServingStatus
from fish_platform_tests.serving.conftest import free_port


def _materialize(registry, url, max_lag=300.0):
    resources = {
        "serving": ServingResource(url=url, max_lag_seconds=max_lag),
        "mlflow": MlflowResource(tracking_uri=registry.tracking_uri, model_name=registry.model_name),
    }
    result = dg.materialize([serving_deployment], resources=resources, raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == FOLLOWS_CHECK
    return result.asset_materializations_for_node("serving_deployment")[0].metadata, check


def test_the_live_service_reports_the_promoted_version(service):
    metadata, check = _materialize(service.registry, service.url)
    assert metadata["served_version"].value == service.version
    assert metadata["production_version"].value == service.version
    assert metadata["in_sync"].value is True and check.passed


def test_an_unreachable_service_is_flagged(service):
    metadata, check = _materialize(service.registry, f"http://127.0.0.1:{free_port()}", max_lag=0)
    assert metadata["reachable"].value is False and not check.passed
    assert metadata["production_version"].value == service.version


@pytest.mark.parametrize(
    "served, production, promoted_ago, limit, follows",
    [
        ("3", "3", 10_000, 60, True),  # in sync, however long ago
        ("2", "3", 30, 60, True),  # pods still reloading: within the limit
        ("2", "3", 90, 60, False),  # behind for longer than a rollout takes
        (None, "3", 90, 60, False),  # no model loaded
        (None, None, 0, 60, True),  # nothing promoted yet
    ],
)
def test_lag_rule(served, production, promoted_ago, limit, follows):
    status = ServingStatus("http://svc", True, served, production, promoted_at=1_000.0)
    assert status.follows(limit, now=1_000.0 + promoted_ago) is follows
