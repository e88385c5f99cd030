"""Every Grafana panel queries only metric names the running service really exports."""

import pytest

from fish_platform_tests.deploy.dashboard_metrics import (
    assert_dashboard_metrics_exported,
    dashboard_metric_names,
)

pytestmark = pytest.mark.e2e


def test_dashboard_metrics_are_exported_by_the_live_service(service, fish_photo):
    with service.client() as client:
        for _ in range(2):  # a miss, then a hit: both cache series exist afterwards
            answer = client.post(
                "/predict", files={"file": (fish_photo.name, fish_photo.read_bytes(), "image/png")}
            )
            assert answer.status_code == 200, answer.text
        client.post("/predict", files={"file": ("bad.png", b"not an image", "image/png")})
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert len(dashboard_metric_names()) >= 5  # the check below is not vacuous
    assert_dashboard_metrics_exported(metrics.text)
