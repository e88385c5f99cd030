"""The challenger in shadow against the real ``bentoml serve`` process (serving.shadow).

One service of this module's own: version 1 (32 px) under ``@production``, version 2 (48 px, other
weights) under ``@challenger``, half of the clients answered by the challenger. Every uncached
answer gets a second row in the prediction log under the same request id, from the other model;
the split is sticky per ``X-Client-ID``; ``/metrics`` counts agreement the way the log does; the
challenger report reads the pairs; clearing the alias unloads the challenger.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fish_platform.contract import CHALLENGER_ALIAS
from fish_platform.monitoring.challenger import challenger_report
from fish_platform.monitoring.drift import DayDrift, DriftReport, TestResult, save_drift_report
from fish_platform.monitoring.prediction_log import read_predictions
from fish_platform_tests.deploy.dashboard_metrics import assert_dashboard_metrics_exported
from fish_platform_tests.processes import process_tree, stop_tree
from fish_platform_tests.serving.conftest import (
    SERVICE_START_TIMEOUT_S,
    ServiceHandle,
    free_port,
    launch_service,
    metric_samples,
    service_env,
)
from fish_platform_tests.serving.serving_helpers import (
    LABELS_V2,
    TEST_OUTPUT,
    Registry,
    png_bytes,
    promote,
    register_tiny_model,
)
from serving.shadow import challenger_answers

pytestmark = pytest.mark.e2e

PERCENT = 50.0
CLIENTS = [f"client-{i}" for i in range(12)]
PER_CLIENT = 2


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("shadow")
    registry = Registry(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri(), "fish-shadow-test")
    champion = register_tiny_model(registry, LABELS_V2, image_size=32, seed=3)
    challenger = register_tiny_model(registry, LABELS_V2, image_size=48, seed=8)
    promote(registry, champion)
    client = MlflowClient(registry.tracking_uri, registry_uri=registry.tracking_uri)
    client.set_registered_model_alias(registry.model_name, CHALLENGER_ALIAS, challenger)
    # A drift report as the prediction_drift asset leaves it: the service exports it to /metrics
    drifted = DriftReport(
        n_reference=72, n_traffic=40, n_embeddings=40, alpha=0.01, drifted=True, reason="embedding drifted",
        tests={
            "embedding": TestResult("embedding", 0.31, 0.0005, True),
            "species": TestResult("species", 2.0, 0.41, False),
        },
    )  # fmt: skip
    save_drift_report(str(root / "data"), DayDrift("2026-11-30", champion, drifted))
    port = free_port()
    env = service_env(
        registry,
        root,
        FISH_DATA_URI=str(root / "data"),
        FISH_CHALLENGER_TRAFFIC_PERCENT=str(PERCENT),
        FISH_PREDICTION_LOG_FLUSH_SECONDS="0.5",
        FISH_DRIFT_EXPORT_SECONDS="1",
    )
    log_path = root / "service.log"
    process = launch_service(env, port, log_path)
    handle = ServiceHandle(f"http://127.0.0.1:{port}", process, log_path, registry)
    handle.versions = {champion: LABELS_V2, challenger: LABELS_V2}
    handle.env = env  # type: ignore[attr-defined]
    handle.data = root / "data"  # type: ignore[attr-defined]
    handle.champion, handle.challenger = champion, challenger  # type: ignore[attr-defined]
    try:
        _wait_ready(handle, lambda body: body.get("challenger_version") == challenger)
        yield handle
    finally:
        stop_tree(process)
        TEST_OUTPUT.mkdir(exist_ok=True)
        shutil.copyfile(log_path, TEST_OUTPUT / "serving-shadow.log")


def _wait_ready(handle: ServiceHandle, until, timeout: float = SERVICE_START_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        try:
            response = handle.wait_for("/readyz", 200, max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            break
        body = response.json()
        if until(body):
            return body
        time.sleep(0.5)
    raise TimeoutError(f"/readyz never satisfied the condition (last: {body}):\n{handle.log_tail()}")


def _rows(data: Path, count: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        rows = read_predictions(str(data))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.25)


def test_uncached_answers_are_shadowed_under_their_request_id_with_a_sticky_split(shadowed):
    champion, challenger = shadowed.champion, shadowed.challenger
    in_split = {c for c in CLIENTS if challenger_answers(f"id:{c}", PERCENT)}
    assert in_split and len(in_split) < len(CLIENTS)  # both sides of the split are exercised
    answers: dict[str, tuple[str, dict]] = {}  # request id -> (client, body)
    with shadowed.client() as client:
        for round_ in range(PER_CLIENT):
            for index, name in enumerate(CLIENTS):
                seed = 5000 + round_ * 100 + index
                response = client.post(
                    "/predict",
                    files={"file": ("fish.png", png_bytes(seed), "image/png")},
                    headers={"X-Client-ID": name},
                )
                assert response.status_code == 200, response.text
                answers[response.json()["request_id"]] = (name, response.json())
        repeat = client.post(  # the same bytes again for the same client: a cache hit, not shadowed
            "/predict",
            files={"file": ("fish.png", png_bytes(5000), "image/png")},
            headers={"X-Client-ID": CLIENTS[0]},
        )
        assert repeat.status_code == 200 and repeat.json()["cached"] is True
    n_uncached = len(CLIENTS) * PER_CLIENT

    # Sticky: a client always meets the same version, the one its bucket names
    for name, body in answers.values():
        assert body["model_version"] == (challenger if name in in_split else champion), name
        assert body["cached"] is False

    rows = _rows(shadowed.data, 2 * n_uncached + 1)
    assert len(rows) == 2 * n_uncached + 1, rows[["request_id", "role", "served"]]
    hit = rows[rows["request_id"] == repeat.json()["request_id"]]
    assert len(hit) == 1 and bool(hit.iloc[0]["cached"]) and bool(hit.iloc[0]["served"])

    agree = 0
    for request_id, (name, body) in answers.items():
        pair = rows[rows["request_id"] == request_id]
        assert sorted(pair["role"]) == ["challenger", "champion"], request_id
        versions = dict(zip(pair["role"], pair["model_version"], strict=True))
        assert versions == {"champion": champion, "challenger": challenger}
        served = pair[pair["served"].astype(bool)]
        assert len(served) == 1
        assert served.iloc[0]["role"] == ("challenger" if name in in_split else "champion")
        assert list(served.iloc[0]["top_species"]) == [p["species"] for p in body["top3"]]
        shadow = pair[~pair["served"].astype(bool)].iloc[0]
        assert not bool(shadow["cached"]) and shadow["embedding"] is not None  # the other model really ran
        assert len(shadow["probabilities"]) == len(LABELS_V2) and shadow["latency_ms"] > 0
        agree += int(pair.iloc[0]["top_species"][0] == pair.iloc[1]["top_species"][0])

    # /metrics counts the same agreement as the log, and the gauge is its rate
    with shadowed.client() as client:
        bad = client.post("/predict", files={"file": ("bad.png", b"not an image", "image/png")})
        assert bad.status_code == 400  # a rejection: its series is on the dashboard too
        metrics = client.get("/metrics").text
    pair = {"champion_version": champion, "challenger_version": challenger}
    counted = {
        dict(k)["agree"]: v
        for k, v in metric_samples(metrics, "fish_shadow_answers_total").items()
        if pair.items() <= dict(k).items()
    }
    assert counted == {"true": agree, "false": n_uncached - agree}
    (gauge,) = metric_samples(metrics, "fish_challenger_agreement").values()
    assert gauge == pytest.approx(agree / n_uncached)
    info = metric_samples(metrics, "fish_challenger_version_info")
    assert info[(("model_name", shadowed.registry.model_name), ("version", challenger))] == 1

    # The drift report is on /metrics, and with a challenger shadowing every dashboard series is there
    assert metric_samples(metrics, "fish_drift_detected")[()] == 1
    assert metric_samples(metrics, "fish_drift_answers")[()] == 40
    p_values = {dict(k)["test"]: v for k, v in metric_samples(metrics, "fish_drift_p_value").items()}
    assert p_values == {"embedding": pytest.approx(0.0005), "species": pytest.approx(0.41)}
    assert metric_samples(metrics, "fish_drift_report_timestamp_seconds")[()] > 1.7e9
    assert_dashboard_metrics_exported(metrics)

    # The challenger report pairs the same rows
    report = challenger_report(rows, rows.iloc[0:0].reindex(columns=["request_id", "ts", "correct_label"]))
    assert (report.champion_version, report.challenger_version) == (champion, challenger)
    assert report.n_pairs == n_uncached and report.agreement == pytest.approx(agree / n_uncached, abs=1e-6)


def test_the_challenger_process_yields_the_cpu_to_the_champion(shadowed):
    tree = process_tree(shadowed.process)
    (challenger,) = [p for p in tree if "fish_challenger" in " ".join(p.cmdline())]
    (champion,) = [p for p in tree if "--service-name fish_model" in " ".join(p.cmdline())]
    nice = {t.id: os.getpriority(os.PRIO_PROCESS, t.id) for t in challenger.threads()}
    assert nice and set(nice.values()) == {10}, nice  # every thread, not only the one that asked
    assert champion.nice() == 0
    autogroup = Path(f"/proc/{challenger.pid}/autogroup")
    if autogroup.exists():  # with autogroup scheduling, the session's niceness is what counts
        assert autogroup.read_text().split()[-1] == "10", autogroup.read_text()


def test_clearing_the_alias_unloads_the_challenger_and_ends_the_shadow(shadowed):
    from mlflow import MlflowClient

    client = MlflowClient(shadowed.registry.tracking_uri, registry_uri=shadowed.registry.tracking_uri)
    client.delete_registered_model_alias(shadowed.registry.model_name, CHALLENGER_ALIAS)
    body = _wait_ready(shadowed, lambda body: "challenger_version" not in body, timeout=30)
    assert body["model_version"] == shadowed.champion
    split_client = next(c for c in CLIENTS if challenger_answers(f"id:{c}", PERCENT))
    before = len(read_predictions(str(shadowed.data)))
    with shadowed.client() as http:
        response = http.post(
            "/predict",
            files={"file": ("fish.png", png_bytes(9001), "image/png")},
            headers={"X-Client-ID": split_client},
        )
        metrics = http.get("/metrics").text
    assert response.status_code == 200 and response.json()["model_version"] == shadowed.champion
    rows = _rows(shadowed.data, before + 1)
    time.sleep(1.5)  # a shadow row would be flushed by now (0.5 s flushes)
    rows = read_predictions(str(shadowed.data))
    mine = rows[rows["request_id"] == response.json()["request_id"]]
    assert len(mine) == 1 and mine.iloc[0]["role"] == "champion"
    info = metric_samples(metrics, "fish_challenger_version_info")
    assert info.get((("model_name", shadowed.registry.model_name), ("version", shadowed.challenger))) in (
        None,
        0,
    )
