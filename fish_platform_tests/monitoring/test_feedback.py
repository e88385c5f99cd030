"""Feedback: a correction is checked and stored, reviewed, and an accepted image reaches the raw
source (where the new-image sensor asks for one run) or the audit area, never both."""

from __future__ import annotations

import hashlib
import uuid

import dagster as dg
import pytest

from fish_platform.data.storage import open_storage, s3_client
from fish_platform.data.store import open_store
from fish_platform.monitoring.feedback import (
    AnsweredRequest,
    FeedbackError,
    accept,
    find_request,
    in_audit,
    list_pending,
    read_feedback,
    record_feedback,
    reject,
)
from fish_platform.monitoring.log_schema import FEEDBACK_SCHEMA
from fish_platform_tests.helpers import dagster_resources
from fish_platform_tests.serving.serving_helpers import png_bytes
from serving.prediction_log import PredictionLog, image_uri, prediction_row

SPECIES = ["Sea Bass", "Trout", "Shrimp", "Red Mullet"]


def _sha(n: int, audit: bool | None = None, share: float = 0.5) -> str:
    """A real sha256 digest; with ``audit``, the first from ``n`` on that lands on that side of ``share``."""
    while True:
        sha = hashlib.sha256(str(n).encode()).hexdigest()
        if audit is None or in_audit(sha, share) == audit:
            return sha
        n += 1000


def _keep_image(storage, data_uri: str, sha: str) -> None:
    """The service's kept copy of an upload (real PNG bytes)."""
    storage.write_bytes(image_uri(data_uri, sha, "png"), png_bytes(int(sha[:6], 16)))


def _request(sha: str, rid: str = "req-1") -> AnsweredRequest:
    return AnsweredRequest(rid, sha, "4", "Trout", "png")


def test_a_correction_is_stored_and_its_image_waits_for_review(tmp_path):
    data_uri = str(tmp_path / "data")
    storage = open_storage(data_uri)
    sha = _sha(1)
    _keep_image(storage, data_uri, sha)
    row = record_feedback(
        storage, data_uri, _request(sha), "Sea Bass", SPECIES, "fins are red", keep_images=True
    )
    assert row["image_uri"].endswith(f"/feedback/pending/Sea Bass/{sha}.png")
    frame = read_feedback(data_uri)
    assert list(frame.columns) == FEEDBACK_SCHEMA.names
    assert frame.iloc[0][["request_id", "predicted", "correct_label", "comment"]].tolist() == [
        "req-1",
        "Trout",
        "Sea Bass",
        "fins are red",
    ]
    assert [(p.label, p.sha256) for p in list_pending(storage, data_uri)] == [("Sea Bass", sha)]
    # Without kept images the correction is still recorded, with no image to review.
    other = record_feedback(storage, data_uri, _request(_sha(2), "req-2"), "not_a_fish", SPECIES)
    assert other["image_uri"] is None and len(read_feedback(data_uri)) == 2


def test_an_unknown_species_or_a_long_comment_is_a_4xx_with_a_reason(tmp_path):
    storage = open_storage(str(tmp_path))
    with pytest.raises(FeedbackError) as unknown:
        record_feedback(storage, str(tmp_path), _request(_sha(1)), "Salmon", SPECIES)
    assert unknown.value.status == 422 and unknown.value.reason == "unknown_species"
    assert "Trout" in unknown.value.message and "not_a_fish" in unknown.value.message
    with pytest.raises(FeedbackError) as long:
        record_feedback(storage, str(tmp_path), _request(_sha(1)), "unknown", SPECIES, "x" * 5000)
    assert long.value.reason == "comment_too_long"
    assert read_feedback(str(tmp_path)).empty  # nothing stored for a rejected correction


def test_a_request_the_service_forgot_is_found_in_the_flushed_log(tmp_path):
    data_uri = str(tmp_path)
    log = PredictionLog(data_uri)
    answer = {"model_version": "7", "top3": [{"species": "Shrimp", "confidence": 0.9}]}
    log.append(prediction_row("old-req", _sha(3), answer, {"model_name": "fish"}, False, 5.0))
    log.flush()
    found = find_request(open_storage(data_uri), data_uri, "old-req")
    assert found == AnsweredRequest("old-req", _sha(3), "7", "Shrimp")
    assert find_request(open_storage(data_uri), data_uri, "never-seen") is None


def test_accept_moves_to_raw_or_audit_by_sha_and_the_sensor_asks_for_one_run(tmp_path, colour_images):
    data_uri, raw = str(tmp_path / "data"), colour_images
    resources = dagster_resources(str(raw), tmp_path / "data")
    assert dg.materialize([_raw_asset()], resources=resources).success  # every current image is known
    storage = open_storage(data_uri)
    trained, audited, open_set, rejected = _sha(10, audit=False), _sha(11, audit=True), _sha(12), _sha(13)
    for sha, label in ((trained, "Trout"), (audited, "Shrimp"), (open_set, "unknown"), (rejected, "Trout")):
        _keep_image(storage, data_uri, sha)
        record_feedback(storage, data_uri, _request(sha, sha[:6]), label, SPECIES, keep_images=True)

    assert [d.sha256 for d in reject(data_uri, [rejected[:12]])] == [rejected]
    decisions = {d.sha256: d.destination for d in accept(data_uri, str(raw), audit_share=0.5)}
    assert decisions == {trained: "raw", audited: "audit", open_set: "open_set"}
    assert list_pending(storage, data_uri) == []

    listing = {image.key: image.species for image in open_store(str(raw)).list_images()}
    assert listing[f"Trout/feedback-{trained}.png"] == "Trout"
    assert not any(
        audited in key or open_set in key or rejected in key for key in listing
    )  # never trained on
    assert storage.exists(f"{data_uri}/feedback/audit/Shrimp/{audited}.png")
    assert storage.exists(f"{data_uri}/feedback/rejected/Trout/{rejected}.png")
    assert in_audit(audited, 0.5) and not in_audit(audited, 0.0)  # the share is a dial, by content

    from fish_platform.sensors import RawSensorResource, new_raw_images

    resources["raw_sensor"] = RawSensorResource(min_batch=1, quiet_seconds=0)
    context = dg.build_sensor_context(resources=resources, instance=dg.DagsterInstance.ephemeral())
    result = new_raw_images(context)
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    assert result.run_requests[0].tags["fish/new_images"] == "1"
    assert result.run_requests[0].tags["fish/species"] == "Trout"


def test_accept_of_an_unknown_sha_is_a_clear_error(tmp_path):
    with pytest.raises(FeedbackError) as missing:
        accept(str(tmp_path), str(tmp_path / "raw"), ["deadbeef"])
    assert missing.value.reason == "not_pending"


def test_feedback_on_s3(s3_endpoint):
    client = s3_client(s3_endpoint)
    bucket = f"fb-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    data_uri, raw_uri = f"s3://{bucket}/platform", f"s3://{bucket}/raw"
    storage = open_storage(data_uri, s3_endpoint)
    sha = _sha(20, audit=False, share=0.1)
    _keep_image(storage, data_uri, sha)
    record_feedback(storage, data_uri, _request(sha), "Red Mullet", SPECIES, keep_images=True)
    assert [p.label for p in list_pending(storage, data_uri)] == ["Red Mullet"]
    [decision] = accept(data_uri, raw_uri, audit_share=0.1, s3_endpoint_url=s3_endpoint)
    assert decision.destination == "raw" and list_pending(storage, data_uri) == []
    images = list(open_store(raw_uri, s3_endpoint).list_images())
    assert [(i.key, i.species) for i in images] == [(f"Red Mullet/feedback-{sha}.png", "Red Mullet")]
    assert len(read_feedback(data_uri, s3_endpoint)) == 1


def _raw_asset():
    from fish_platform.assets.data import raw_fish_images

    return raw_fish_images
