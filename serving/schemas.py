"""The service's response bodies (pydantic): what ``/predict`` and ``/predict_batch`` answer.

Errors are not here: every error has the one shape of :func:`serving.web.error_body`.
"""

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    species: str
    confidence: float = Field(ge=0.0, le=1.0)


class PredictResponse(BaseModel):
    request_id: str | None = None  # names this answer in POST /feedback and the prediction log
    top3: list[Prediction]  # calibrated confidences when the version has a calibration record
    unknown: bool = False  # true: probably not a species the model knows (the top-3 are best guesses)
    unknown_score: float | None = None  # the version's open-set score (docs/serving.md); None: uncalibrated
    model_name: str
    model_version: str
    cached: bool
    latency_ms: float


class BatchItem(BaseModel):
    index: int
    request_id: str | None = None  # one per answered image (``<batch request_id>-<index>``)
    ok: bool
    top3: list[Prediction] | None = None
    unknown: bool | None = None
    unknown_score: float | None = None
    model_version: str | None = None
    cached: bool | None = None
    error: str | None = None
    reason: str | None = None


class BatchResponse(BaseModel):
    request_id: str | None = None  # also the X-Request-ID header
    results: list[BatchItem]
    model_name: str
    model_version: str
    latency_ms: float
