"""The prediction log's writer and reader: rows buffered, flushed by size, time and close, to a folder
and to S3 (moto's server on loopback), read back whole and per day."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from fish_platform.data.storage import open_storage, s3_client
from fish_platform.monitoring.log_schema import PREDICTION_SCHEMA
from fish_platform.monitoring.prediction_log import read_predictions
from serving.prediction_log import PredictionLog, Recent, RecentRequests, image_uri, prediction_row

SERVED = {"model_name": "fish", "model_version": "3", "runtime": "openvino", "labels": ["a", "b", "c", "d"]}


def _answer(seed: int, embedding: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4)).astype(np.float32)
    order = np.argsort(-probs)[:3]
    answer = {
        "model_name": "fish",
        "model_version": "3",
        "top3": [{"species": SERVED["labels"][i], "confidence": float(probs[i])} for i in order],
        "unknown": True,
        "unknown_score": 0.2,
        "probabilities": probs.tolist(),
    }
    if embedding:
        answer["embedding"] = rng.normal(size=8).astype(np.float32)
    return answer


def _row(n: int, cached: bool = False, ts: datetime | None = None) -> dict:
    row = prediction_row(
        f"req-{n}",
        f"{n:064x}",
        _answer(n),
        SERVED,
        cached=cached,
        latency_ms=12.5,
        width=640,
        height=480,
        model_input=np.full((4, 4, 3), 100, dtype=np.uint8),
    )
    if ts is not None:
        row["ts"] = ts
    return row


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def test_row_has_every_column_and_the_model_facts():
    row = _row(1)
    assert set(row) == set(PREDICTION_SCHEMA.names)
    assert row["labels"] == SERVED["labels"] and len(row["probabilities"]) == 4
    assert row["top_species"][0] == SERVED["labels"][int(np.argmax(row["probabilities"]))]
    assert row["brightness"] == pytest.approx(100.0)
    assert row["unknown"] is True and row["unknown_score"] == pytest.approx(0.2)
    assert len(row["embedding"]) == 8
    cached = _row(2, cached=True)
    assert cached["embedding"] is None  # a cached answer's embedding is not this request's model run
    uncalibrated = prediction_row("r", "s", {"model_version": "1", "top3": []}, SERVED, False, 1.0)
    assert uncalibrated["unknown"] is None and uncalibrated["probabilities"] is None  # null, not False


def test_the_calibrated_vector_crosses_the_process_hop_into_the_row():
    import pickle

    from fish_platform.ml.calibration import CalibrationRecord
    from serving.inference import ModelInfo, ServedModel
    from serving.predictor import ModelAnswer

    record = CalibrationRecord(
        temperature=2.0, threshold=0.6, score_method="max_probability", ece_before=0.2, ece_after=0.05
    )
    info = ModelInfo(model_name="fish", version="3", image_size=8, labels=tuple(SERVED["labels"]))
    raw = np.array([0.85, 0.1, 0.04, 0.01], dtype=np.float32)
    answer = ServedModel(info, model=None, calibration=record).answer(raw, np.ones(8, np.float32))
    # BentoML pickles plain dicts between the processes: the attributes ride as keys and come back
    received = ModelAnswer.from_wire(pickle.loads(pickle.dumps(answer.to_wire())))
    assert "probabilities" not in received and "embedding" not in received  # never cached nor sent
    row = prediction_row("r", "s", received, SERVED, cached=False, latency_ms=1.0)
    probs = row["probabilities"]
    assert probs.dtype == np.float32 and len(probs) == 4 and probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(probs, raw)  # the calibrated vector, not the raw softmax
    top = received["top3"][0]
    assert probs[SERVED["labels"].index(top["species"])] == pytest.approx(top["confidence"], abs=1e-6)
    assert row["top_species"][0] == SERVED["labels"][int(np.argmax(probs))]


def test_flushes_by_size_and_reads_back_to_a_folder(tmp_path):
    log = PredictionLog(str(tmp_path), flush_rows=3, flush_seconds=3600).start()
    try:
        for n in range(7):
            log.append(_row(n))
            if n in (2, 5):  # the third row of each 3 wakes the writer
                _wait(lambda n=n: log.rows_written == n + 1)
        time.sleep(0.2)
        assert log.buffered == 1  # the seventh waits for the next 3 rows, the timer, or close
        files = sorted((tmp_path / "predictions").rglob("*.parquet"))
        assert len(files) == 2
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        assert all(f.parent.name == f"date={day}" for f in files)
        assert all(pq.read_schema(f).equals(PREDICTION_SCHEMA, check_metadata=False) for f in files)
    finally:
        log.close()
    frame = read_predictions(str(tmp_path))
    assert list(frame["request_id"]) == [f"req-{n}" for n in range(7)]
    assert list(frame.columns) == PREDICTION_SCHEMA.names
    assert len(frame.loc[0, "probabilities"]) == 4 and frame.loc[0, "width"] == 640
    assert read_predictions(str(tmp_path), request_id="req-4")["sha256"].tolist() == [f"{4:064x}"]
    assert read_predictions(str(tmp_path), date="2001-01-01").empty


def test_flushes_by_time_and_on_close(tmp_path):
    timed = PredictionLog(str(tmp_path / "timed"), flush_rows=1000, flush_seconds=0.2).start()
    timed.append(_row(1))
    _wait(lambda: timed.rows_written == 1)  # 1 row of 1000: only the timer wrote it
    timed.close()
    log = PredictionLog(str(tmp_path), flush_rows=1000, flush_seconds=3600).start()
    log.append(_row(2))
    log.append(_row(3))
    assert log.rows_written == 0
    assert log.close() == 2  # graceful shutdown writes what is buffered
    assert sorted(read_predictions(str(tmp_path))["request_id"]) == ["req-2", "req-3"]


def test_rows_go_to_the_partition_of_their_utc_day(tmp_path):
    log = PredictionLog(str(tmp_path), flush_rows=1000, flush_seconds=3600)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    log.append(_row(1, ts=yesterday))
    log.append(_row(2))
    assert log.flush() == 2
    assert read_predictions(str(tmp_path), date=yesterday.date())["request_id"].tolist() == ["req-1"]
    both = read_predictions(str(tmp_path), since=yesterday.date(), columns=["request_id", "ts"])
    assert both["request_id"].tolist() == ["req-1", "req-2"] and list(both.columns) == ["request_id", "ts"]


def test_a_failing_store_keeps_the_rows_for_the_next_flush(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the log's folder should be")  # every write fails
    log = PredictionLog(str(blocker), flush_rows=1000, flush_seconds=3600)
    log.append(_row(1))
    assert log.flush() == 0 and log.buffered == 1
    blocker.unlink()
    assert log.flush() == 1
    assert read_predictions(str(blocker))["request_id"].tolist() == ["req-1"]


def test_kept_images_are_content_addressed_once(tmp_path):
    log = PredictionLog(str(tmp_path), flush_rows=1000, flush_seconds=3600, keep_images=True)
    row = _row(5)
    log.append(row, (b"png bytes", "png"))
    log.append({**_row(6), "sha256": row["sha256"]}, (b"png bytes", "png"))
    log.flush()
    kept = list((tmp_path / "images").rglob("*.*"))
    assert [p.as_posix() for p in kept] == [image_uri(str(tmp_path), row["sha256"], "png")]
    assert kept[0].parent.name == row["sha256"][:2]
    not_kept = PredictionLog(str(tmp_path / "private"), keep_images=False)
    not_kept.append(_row(7), (b"secret", "png"))
    not_kept.flush()
    assert not (tmp_path / "private" / "images").exists()  # privacy: no setting, no image


def test_recent_requests_are_bounded():
    recent = RecentRequests(capacity=3)
    for n in range(5):
        recent.add(f"r{n}", Recent(f"{n}", "1", "a"))
    assert len(recent) == 3 and recent.get("r1") is None and recent.get("r4").sha256 == "4"


def test_flushes_to_s3(s3_endpoint):
    client = s3_client(s3_endpoint)
    bucket = f"log-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    data_uri = f"s3://{bucket}/platform"
    log = PredictionLog(
        data_uri, flush_rows=2, flush_seconds=3600, keep_images=True, s3_endpoint_url=s3_endpoint
    )
    log.start()
    for n in range(4):
        log.append(_row(n), (f"image {n}".encode(), "jpg"))
        if n % 2:
            _wait(lambda n=n: log.rows_written == n + 1)
    log.close()
    keys = [obj["Key"] for obj in client.list_objects_v2(Bucket=bucket)["Contents"]]
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert sum(k.startswith(f"platform/predictions/date={day}/part-") for k in keys) == 2
    assert sum(k.startswith("platform/images/") for k in keys) == 4
    frame = read_predictions(data_uri, s3_endpoint_url=s3_endpoint)
    assert sorted(frame["request_id"]) == [f"req-{n}" for n in range(4)]
    storage = open_storage(data_uri, s3_endpoint)
    assert storage.read_bytes(image_uri(data_uri, f"{2:064x}", "jpg")) == b"image 2"


def test_rows_become_the_same_table_as_arrow_would_build_them_row_by_row():
    """The column-wise build (fast for 1,280-value embeddings) equals Arrow's own, nulls included."""
    from datetime import UTC, datetime

    import numpy as np
    import pyarrow as pa

    from fish_platform.monitoring.log_schema import PREDICTION_SCHEMA
    from serving.prediction_log import rows_to_table

    def row(i: int) -> dict:
        cached = i % 2 == 0
        return {
            "request_id": str(i), "ts": datetime.now(UTC), "sha256": "a" * 64, "model_name": "m",
            "model_version": "1", "runtime": "openvino", "role": "champion", "served": True,
            "labels": ["a", "b"], "probabilities": None if i == 3 else np.array([0.3, 0.7], np.float32),
            "top_species": ["b", "a"], "top_scores": [0.7, 0.3], "unknown": None if i == 1 else False,
            "unknown_score": 0.7, "cached": cached, "latency_ms": 1.5, "width": 10, "height": None,
            "brightness": 90.0, "embedding": None if cached else np.arange(5, dtype=np.float32) + i,
        }  # fmt: skip

    rows = [row(i) for i in range(6)]
    table = rows_to_table(rows)
    assert table.equals(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA))
    assert table.column("embedding").to_pylist()[1] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert table.column("embedding").null_count == 3 and table.column("probabilities").null_count == 1
