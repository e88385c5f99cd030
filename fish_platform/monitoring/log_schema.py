"""The prediction log's layout and columns: the contract between the service that writes it and the
assets that read it (drift, the challenger report, feedback).

```
<FISH_DATA_URI>/predictions/date=YYYY-MM-DD/part-<utc time>-<writer id>.parquet   one file per flush
<FISH_DATA_URI>/feedback/date=YYYY-MM-DD/part-<utc time>-<writer id>.parquet      corrections
```
One row per model answer: a request answered by the champion and shadowed by a challenger has two rows
with the same ``request_id`` (``role`` tells them apart; ``served`` marks the one the client got).
"""

from __future__ import annotations

import pyarrow as pa

PREDICTIONS_PREFIX = "predictions"
FEEDBACK_PREFIX = "feedback"

ROLE_CHAMPION = "champion"
ROLE_CHALLENGER = "challenger"

PREDICTION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("sha256", pa.string()),  # of the uploaded bytes
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("runtime", pa.string()),  # openvino | onnx | tensorflow | ...
        ("role", pa.string()),  # champion | challenger
        ("served", pa.bool_()),  # this answer went back to the client
        ("labels", pa.list_(pa.string())),  # species order of ``probabilities``
        ("probabilities", pa.list_(pa.float32())),  # the full (calibrated) vector
        ("top_species", pa.list_(pa.string())),
        ("top_scores", pa.list_(pa.float32())),
        ("unknown", pa.bool_()),  # null when the version has no open-set threshold
        ("unknown_score", pa.float32()),
        ("cached", pa.bool_()),
        ("latency_ms", pa.float32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("brightness", pa.float32()),  # mean pixel value of the model input, 0-255
        ("embedding", pa.list_(pa.float32())),  # pooled features; null for cached answers
    ]
)

FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("sha256", pa.string()),
        ("model_version", pa.string()),
        ("predicted", pa.string()),  # top-1 species the client was shown
        ("correct_label", pa.string()),  # a species, "unknown" or "not_a_fish"
        ("comment", pa.string()),
        ("image_uri", pa.string()),  # the pending review copy, when images are kept
    ]
)


def partition(date: str) -> str:
    """The partition folder of one UTC day (``YYYY-MM-DD``)."""
    return f"date={date}"
