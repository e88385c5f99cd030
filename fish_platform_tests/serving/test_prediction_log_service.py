"""The prediction log and feedback against the real ``bentoml serve`` process.

One service of this module's own (its own registry, data folder and raw folder; kept images on, a
flush every 3 rows): predict, correct the answer with ``POST /feedback``, accept it with the CLI and
find the image in the raw listing under the corrected species; then SIGKILL the service and check
that every row flushed before the kill is there and no file is corrupt.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from fish_platform.data.store import open_store
from fish_platform.monitoring.feedback import read_feedback
from fish_platform.monitoring.log_schema import PREDICTION_SCHEMA
from fish_platform.monitoring.prediction_log import read_predictions
from fish_platform_tests.processes import kill_tree, process_tree
from fish_platform_tests.serving.conftest import (
    SERVICE_START_TIMEOUT_S,
    ServiceHandle,
    free_port,
    launch_service,
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

pytestmark = pytest.mark.e2e

FLUSH_ROWS = 3


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("logged")
    return {"root": root, "data": root / "data", "raw": root / "raw"}


@pytest.fixture(scope="module")
def logged_service(folders: dict[str, Path]) -> Iterator[ServiceHandle]:
    root = folders["root"]
    registry = Registry(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri(), "fish-log-test")
    promote(registry, register_tiny_model(registry, LABELS_V2, image_size=32, seed=3))
    port = free_port()
    env = service_env(
        registry,
        root,
        FISH_DATA_URI=str(folders["data"]),
        FISH_RAW_URI=str(folders["raw"]),
        FISH_KEEP_IMAGES="on",
        FISH_PREDICTION_LOG_FLUSH_ROWS=str(FLUSH_ROWS),
        FISH_PREDICTION_LOG_FLUSH_SECONDS="3600",  # only size (and shutdown) flush in this test
    )
    log_path = root / "service.log"
    process = launch_service(env, port, log_path)
    handle = ServiceHandle(f"http://127.0.0.1:{port}", process, log_path, registry)
    handle.env = env  # type: ignore[attr-defined] - the CLI runs with the same settings
    try:
        handle.wait_for("/readyz", 200, SERVICE_START_TIMEOUT_S)
        yield handle
    finally:
        kill_tree(process)  # already killed by the crash test, normally
        TEST_OUTPUT.mkdir(exist_ok=True)
        shutil.copyfile(log_path, TEST_OUTPUT / "serving-prediction-log.log")


def _wait_rows(data: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(read_predictions(str(data), columns=["request_id", "ts"])) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the log never held {count} rows")
        time.sleep(0.1)


def _predict(client: httpx.Client, seed: int) -> dict:
    response = client.post("/predict", files={"file": ("fish.png", png_bytes(seed), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-request-id"] == body["request_id"]
    return body


def test_predict_feedback_accept_puts_the_image_in_raw_under_the_corrected_species(logged_service, folders):
    data, raw = folders["data"], folders["raw"]
    with logged_service.client() as client:
        single = _predict(client, 101)
        files = [("files", (f"f{i}.png", png_bytes(102 + i), "image/png")) for i in range(2)]
        batch = client.post("/predict_batch", files=files)
        assert batch.status_code == 200, batch.text
        items = batch.json()["results"]
        ids = [single["request_id"], *(item["request_id"] for item in items)]
        assert len(set(ids)) == 3 and batch.headers["x-request-id"] == batch.json()["request_id"]

        _wait_rows(data, FLUSH_ROWS)  # the third answer filled the buffer: one file
        rows = read_predictions(str(data))
        assert sorted(rows["request_id"]) == sorted(ids)
        first = rows[rows["request_id"] == single["request_id"]].iloc[0]
        assert first["sha256"] == hashlib.sha256(png_bytes(101)).hexdigest()
        assert list(first["top_species"]) == [p["species"] for p in single["top3"]]
        assert list(first["labels"]) == list(LABELS_V2) and first["model_version"] == single["model_version"]
        assert (first["width"], first["height"], bool(first["cached"])) == (64, 48, False)
        assert 0 <= first["brightness"] <= 255 and first["runtime"]
        assert first["embedding"] is not None and len(first["embedding"]) > 0  # the model ran: its features
        probs = first["probabilities"]  # the full calibrated vector, from the model process
        assert probs is not None and len(probs) == len(LABELS_V2) and abs(float(sum(probs)) - 1) < 1e-4
        assert LABELS_V2[int(max(range(len(probs)), key=lambda i: probs[i]))] == single["top3"][0]["species"]

        wrong = next(s for s in LABELS_V2 if s != single["top3"][0]["species"])
        saved = client.post("/feedback", json={"request_id": single["request_id"], "species": wrong})
        assert saved.status_code == 200, saved.text
        assert saved.json()["pending_review"] is True and saved.json()["correct_label"] == wrong
        unknown = client.post("/feedback", json={"request_id": "no-such-request", "species": wrong})
        assert (unknown.status_code, unknown.json()["reason"]) == (404, "unknown_request")
        bad = client.post("/feedback", json={"request_id": single["request_id"], "species": "Salmon"})
        assert (bad.status_code, bad.json()["reason"]) == (422, "unknown_species")
        item = client.post(
            "/feedback", json={"request_id": ids[2], "species": "not_a_fish", "comment": "a rock"}
        )
        assert item.status_code == 200, item.text

    corrections = read_feedback(str(data))
    assert sorted(corrections["correct_label"]) == sorted([wrong, "not_a_fish"])
    env = {**logged_service.env, "FISH_FEEDBACK_AUDIT_SHARE": "0"}  # this test wants it trained on
    cli = [sys.executable, "-m", "fish_platform.cli", "feedback"]
    listed = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert len(listed.stdout.splitlines()) == 2
    accepted = subprocess.run(
        [*cli, "accept", "--species", wrong], env=env, capture_output=True, text=True, timeout=120
    )
    assert accepted.returncode == 2 and "--all" in accepted.stderr  # nothing named: nothing decided
    accepted = subprocess.run(
        [*cli, "accept", "--all", "--species", wrong], env=env, capture_output=True, text=True, timeout=120
    )
    assert accepted.returncode == 0, accepted.stderr
    sha = hashlib.sha256(png_bytes(101)).hexdigest()
    listing = {image.key: image for image in open_store(str(raw)).list_images()}
    image = listing[f"{wrong}/feedback-{sha}.png"]
    assert image.species == wrong and Path(image.uri).read_bytes() == png_bytes(101)
    assert len(listing) == 1  # the not_a_fish correction is still pending: never a species


def test_a_sigkill_loses_only_the_unflushed_rows_and_corrupts_nothing(logged_service, folders):
    data = folders["data"]
    before = len(read_predictions(str(data), columns=["request_id", "ts"]))
    assert before % FLUSH_ROWS == 0  # every earlier answer is flushed (a multiple of the flush size)
    with logged_service.client() as client:
        flushed = [_predict(client, 200 + i)["request_id"] for i in range(FLUSH_ROWS)]
        _wait_rows(data, before + FLUSH_ROWS)
        buffered = _predict(client, 300)["request_id"]  # in memory only: the crash takes it
    tree = process_tree(logged_service.process)
    assert any("fish_service" in " ".join(p.cmdline()) for p in tree)  # the API worker holds the buffer
    kill_tree(logged_service.process)  # every process at once, the API worker included
    assert not any(p.is_running() for p in tree)

    files = sorted((data / "predictions").rglob("*.parquet"))
    for path in files:  # every file is whole: written to a temporary name, then renamed
        assert pq.read_table(path).schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    rows = read_predictions(str(data))
    assert set(flushed) <= set(rows["request_id"]) and buffered not in set(rows["request_id"])
    assert len(rows) == before + FLUSH_ROWS
    assert len(files) == (before + FLUSH_ROWS) // FLUSH_ROWS  # one file per flush of 3 rows
