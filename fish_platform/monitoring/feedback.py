"""User feedback: corrections to served answers, reviewed by a person before anything is trained on.

The path of one correction (docs/monitoring.md, "Prediction log and feedback"):

1. ``POST /feedback`` names a ``request_id`` the service answered and the right label (a species
   of the served model, ``unknown`` or ``not_a_fish``). :func:`record_feedback` writes one
   FEEDBACK_SCHEMA row under ``<FISH_DATA_URI>/feedback/date=YYYY-MM-DD/`` and, when the service
   keeps images, copies the upload to ``feedback/pending/<label>/<sha256>.<ext>``: a review area
   outside the raw source, so nothing unreviewed reaches a dataset.
2. ``fish-platform feedback list|accept|reject`` (:func:`list_pending`, :func:`accept`,
   :func:`reject`). Accepting a species moves the image into the raw source as
   ``<FISH_RAW_URI>/<species>/feedback-<sha256>.<ext>`` (the Kaggle layout: the folder is the
   species), where the new-image sensor finds it; a fixed share of accepted images, chosen by
   sha256 (the same image always lands on the same side), goes to ``feedback/audit/<species>/``
   instead and is never trained on: it measures the model on real user photos. Accepted
   ``unknown``/``not_a_fish`` images go to ``feedback/open_set/<label>/`` (never a species);
   rejected ones to ``feedback/rejected/<label>/``. Each decision is a JSON record in
   ``feedback/decisions/``.

No Dagster, no BentoML: the service and the CLI are thin callers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import pandas as pd
import pyarrow as pa

from fish_platform.data.storage import S3Storage, Storage, join, open_storage, write_json, write_parquet
from fish_platform.data.store import IMAGE_EXTENSIONS
from fish_platform.monitoring.log_schema import FEEDBACK_PREFIX, FEEDBACK_SCHEMA, partition

UNKNOWN = "unknown"
NOT_A_FISH = "not_a_fish"
OPEN_SET_LABELS = (UNKNOWN, NOT_A_FISH)
MAX_COMMENT_CHARS = 2000
LOOKBACK_DAYS = 2  # how far back the flushed log is searched for a request id the service forgot

PENDING, AUDIT, OPEN_SET, REJECTED, DECISIONS = "pending", "audit", "open_set", "rejected", "decisions"
IMAGES_PREFIX = "images"  # where the service keeps uploads (serving.prediction_log.image_uri)


class FeedbackError(Exception):
    """A correction the service will not record: ``status`` 4xx, ``reason`` for code, a message for people."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass(frozen=True)
class AnsweredRequest:
    """What feedback needs to know about the request it corrects."""

    request_id: str
    sha256: str
    model_version: str
    predicted: str | None  # the top-1 species the client was shown
    image_ext: str | None = None


def find_request(
    storage: Storage, data_uri: str, request_id: str, lookback_days: int = LOOKBACK_DAYS
) -> AnsweredRequest | None:
    """A request id from the flushed prediction log of the last ``lookback_days`` UTC days."""
    from fish_platform.monitoring.prediction_log import read_predictions

    today = datetime.now(UTC).date()
    rows = read_predictions(
        data_uri,
        since=today - timedelta(days=lookback_days),
        until=today,
        columns=["request_id", "ts", "sha256", "model_version", "top_species", "served"],
        request_id=request_id,
        storage=storage,
    )
    if rows.empty:
        return None
    served = rows[rows["served"].fillna(True).astype(bool)]
    row = (served if len(served) else rows).iloc[-1]
    top = list(row["top_species"]) if row["top_species"] is not None else []
    return AnsweredRequest(request_id, str(row["sha256"]), str(row["model_version"]), top[0] if top else None)


def check_label(label: str, species: Sequence[str]) -> str:
    """``label`` if it is a species of the served model or an open-set label, else a 422."""
    label = (label or "").strip()
    if label in species or label in OPEN_SET_LABELS:
        return label
    known = ", ".join([*species, *OPEN_SET_LABELS])
    raise FeedbackError(422, "unknown_species", f"{label!r} is not a species this model knows ({known})")


def kept_image(storage: Storage, data_uri: str, sha256: str, ext: str | None = None) -> str | None:
    """The URI of a kept upload (``images/<sha[:2]>/<sha>.<ext>``), or None when it was not kept."""
    folder = join(data_uri, IMAGES_PREFIX, sha256[:2])
    if ext:
        uri = join(folder, f"{sha256}.{ext}")
        if storage.exists(uri):
            return uri
    return next((uri for uri in storage.list(folder) if PurePosixPath(uri).stem == sha256), None)


def record_feedback(
    storage: Storage,
    data_uri: str,
    request: AnsweredRequest,
    label: str,
    species: Sequence[str],
    comment: str | None = None,
    keep_images: bool = False,
) -> dict:
    """Check and store one correction; returns its FEEDBACK_SCHEMA row (``image_uri`` when copied)."""
    label = check_label(label, species)
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise FeedbackError(422, "comment_too_long", f"a comment has at most {MAX_COMMENT_CHARS} characters")
    if comment is not None:  # JSON may carry lone surrogates, which no Parquet string can hold
        comment = comment.encode("utf-8", "replace").decode("utf-8")
    try:
        return _store(storage, data_uri, request, label, comment, keep_images)
    except OSError as exc:
        raise FeedbackError(503, "storage_unavailable", f"feedback storage failed: {exc}") from exc
    except Exception as exc:  # botocore's errors are not OSErrors
        if type(exc).__module__.startswith(("botocore", "boto3")):
            raise FeedbackError(503, "storage_unavailable", f"feedback storage failed: {exc}") from exc
        raise


def _store(
    storage: Storage,
    data_uri: str,
    request: AnsweredRequest,
    label: str,
    comment: str | None,
    keep_images: bool,
) -> dict:
    pending_uri = None
    if keep_images and (source := kept_image(storage, data_uri, request.sha256, request.image_ext)):
        ext = PurePosixPath(source).suffix.lstrip(".")
        pending_uri = join(data_uri, FEEDBACK_PREFIX, PENDING, label, f"{request.sha256}.{ext}")
        storage.write_bytes(pending_uri, storage.read_bytes(source))
    now = datetime.now(UTC)
    row = {
        "request_id": request.request_id,
        "ts": now,
        "sha256": request.sha256,
        "model_version": request.model_version,
        "predicted": request.predicted,
        "correct_label": label,
        "comment": comment or None,
        "image_uri": pending_uri,
    }
    name = f"part-{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.parquet"
    uri = join(data_uri, FEEDBACK_PREFIX, partition(now.strftime("%Y-%m-%d")), name)
    write_parquet(storage, uri, pa.Table.from_pylist([row], schema=FEEDBACK_SCHEMA))
    return row


def read_feedback(data_uri: str, s3_endpoint_url: str | None = None, **days: str | None) -> pd.DataFrame:
    """The feedback rows (FEEDBACK_SCHEMA) as a DataFrame, oldest first (``date=``/``since=``/``until=``)."""
    from fish_platform.monitoring.prediction_log import read_log

    return read_log(data_uri, FEEDBACK_PREFIX, FEEDBACK_SCHEMA, s3_endpoint_url=s3_endpoint_url, **days)


@dataclass(frozen=True)
class PendingImage:
    label: str
    sha256: str
    uri: str

    @property
    def ext(self) -> str:
        return PurePosixPath(self.uri).suffix.lstrip(".")


def list_pending(storage: Storage, data_uri: str) -> list[PendingImage]:
    """Corrected images waiting for review, by label then sha256."""
    root = join(data_uri, FEEDBACK_PREFIX, PENDING)
    out = []
    for uri in storage.list(root):
        rel = PurePosixPath(uri[len(root) :].lstrip("/"))
        if len(rel.parts) == 2 and rel.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(PendingImage(rel.parts[0], rel.stem, uri))
    return sorted(out, key=lambda p: (p.label, p.sha256))


def in_audit(sha256: str, share: float) -> bool:
    """Whether an accepted image is held out for audit: a fixed function of its content."""
    return int(sha256[:8], 16) / 0x1_0000_0000 < share


@dataclass(frozen=True)
class Decision:
    label: str
    sha256: str
    decision: str  # accepted | rejected
    destination: str  # raw | audit | open_set | rejected
    uri: str


def _select(pending: list[PendingImage], shas: Iterable[str] | None, label: str | None) -> list[PendingImage]:
    chosen = pending if label is None else [p for p in pending if p.label == label]
    if shas is None:
        return chosen
    wanted = [s.strip().lower() for s in shas]
    picked = [p for p in chosen if any(p.sha256.startswith(s) for s in wanted)]
    missing = [s for s in wanted if not any(p.sha256.startswith(s) for p in chosen)]
    if missing:
        raise FeedbackError(404, "not_pending", f"no pending feedback image for {', '.join(missing)}")
    return picked


def _delete(storage: Storage, uri: str) -> None:
    if isinstance(storage, S3Storage):  # delete_prefix removes what is *under* a key, not the key
        bucket, key = storage._split(uri)
        storage.client.delete_object(Bucket=bucket, Key=key)
    else:
        storage.delete_prefix(uri)


def _move(storage: Storage, source: str, target_storage: Storage, target: str) -> None:
    """Copy, then delete: a crash in between leaves the image in both places, never in neither."""
    target_storage.write_bytes(target, storage.read_bytes(source))
    _delete(storage, source)


def _record(storage: Storage, data_uri: str, decision: Decision) -> None:
    now = datetime.now(UTC)
    uri = join(data_uri, FEEDBACK_PREFIX, DECISIONS, f"{now:%Y%m%dT%H%M%S%fZ}-{decision.sha256[:16]}.json")
    write_json(storage, uri, {**asdict(decision), "ts": now.isoformat()})


def accept(
    data_uri: str,
    raw_uri: str,
    shas: Iterable[str] | None = None,
    label: str | None = None,
    audit_share: float = 0.1,
    s3_endpoint_url: str | None = None,
) -> list[Decision]:
    """Accept pending images (all, or those whose sha256 starts with one of ``shas``)."""
    storage = open_storage(data_uri, s3_endpoint_url)
    raw = open_storage(raw_uri, s3_endpoint_url)
    decisions = []
    for item in _select(list_pending(storage, data_uri), shas, label):
        if item.label in OPEN_SET_LABELS:
            where, store = "open_set", storage
            target = join(data_uri, FEEDBACK_PREFIX, OPEN_SET, item.label, f"{item.sha256}.{item.ext}")
        elif in_audit(item.sha256, audit_share):
            where, store = "audit", storage
            target = join(data_uri, FEEDBACK_PREFIX, AUDIT, item.label, f"{item.sha256}.{item.ext}")
        else:
            where, store = "raw", raw
            target = join(raw.uri, item.label, f"feedback-{item.sha256}.{item.ext}")
        _move(storage, item.uri, store, target)
        decision = Decision(item.label, item.sha256, "accepted", where, target)
        _record(storage, data_uri, decision)
        decisions.append(decision)
    return decisions


def reject(
    data_uri: str,
    shas: Iterable[str] | None,
    label: str | None = None,
    s3_endpoint_url: str | None = None,
) -> list[Decision]:
    """Reject pending images: kept under ``feedback/rejected/`` (never trained on)."""
    storage = open_storage(data_uri, s3_endpoint_url)
    decisions = []
    for item in _select(list_pending(storage, data_uri), shas, label):
        target = join(data_uri, FEEDBACK_PREFIX, REJECTED, item.label, f"{item.sha256}.{item.ext}")
        _move(storage, item.uri, storage, target)
        decision = Decision(item.label, item.sha256, "rejected", "rejected", target)
        _record(storage, data_uri, decision)
        decisions.append(decision)
    return decisions
