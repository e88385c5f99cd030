"""Every Grafana panel queries only metric names the running service really exports."""

import pytest

from fish_platform_tests.deploy.dashboard_metrics import (
    NEEDS_CHALLENGER_OR_DRIFT,
    assert_dashboard_metrics_exported,
    dashboard_metric_names,
)
from fish_platform_tests.serving.conftest import metric_samples

pytestmark = pytest.mark.e2e


def test_dashboard_metrics_are_exported_by_the_live_service(service, fish_photo):
    with service.client() as client:
        before = client.get("/metrics").text
        answers = []
        for _ in range(2):  # a miss, then a hit: both cache series exist afterwards
            answer = client.post(
                "/predict", files={"file": (fish_photo.name, fish_photo.read_bytes(), "image/png")}
            )
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
        client.post("/predict", files={"file": ("bad.png", b"not an image", "image/png")})
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert len(dashboard_metric_names()) >= 5  # the check below is not vacuous
    # no challenger and no drift report here: test_shadow_service checks those series
    assert_dashboard_metrics_exported(metrics.text, may_lack=NEEDS_CHALLENGER_OR_DRIFT)

    # The prediction log's series count each answered image (the hit too), labelled by its version
    def grew(name: str, labels: tuple) -> float:
        return metric_samples(metrics.text, name)[labels] - metric_samples(before, name).get(labels, 0)

    version, species = answers[0]["model_version"], answers[0]["top3"][0]["species"]
    per_version = (("model_version", version),)
    assert grew("fish_answers_total", (*per_version, ("species", species))) == 2
    # a series even when nothing was flagged (inc(0)): the unknown rate is 0, not "no data"
    assert grew("fish_unknown_answers_total", per_version) == sum(a["unknown"] for a in answers)
    assert grew("fish_answer_confidence_count", per_version) == 2
    confidences = sum(a["top3"][0]["confidence"] for a in answers)
    assert grew("fish_answer_confidence_sum", per_version) == pytest.approx(confidences, abs=1e-6)
