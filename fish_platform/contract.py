"""What training, the registry and serving agree on: one home for each shared name and rule.

Plain Python with no heavy imports, so the service, the CLI and the Dagster graph can all use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# The registry alias the service follows and promotion moves.
PRODUCTION_ALIAS = "production"
# The registry alias of the version shadowing the champion (set by hand or by a near-miss review).
CHALLENGER_ALIAS = "challenger"
# Species in every answer (the service's ``top3``, the evaluation's top-3 accuracy).
TOP_K = 3
# Decompression-bomb guard: images over this many pixels are refused before decoding.
DEFAULT_MAX_PIXELS = 50_000_000


def model_version_uri(model_name: str, version: str | int) -> str:
    """``models:/<name>/<version>``: one registered version."""
    return f"models:/{model_name}/{version}"


def model_alias_uri(model_name: str, alias: str = PRODUCTION_ALIAS) -> str:
    """``models:/<name>@<alias>``: whatever version the alias points at."""
    return f"models:/{model_name}@{alias}"


def top_k_indices(probabilities: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the ``k`` most likely classes per row (ties keep the lower index first)."""
    probabilities = np.atleast_2d(probabilities)
    k = min(k, probabilities.shape[1])
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int = TOP_K) -> list[dict[str, Any]]:
    """One image's ``[{species, confidence}, ...]``, most likely first (the answer's shape)."""
    return [
        {"species": labels[i], "confidence": round(float(probabilities[i]), 6)}
        for i in top_k_indices(probabilities, k)[0]
    ]


def mlflow_error_is(exc: BaseException, *codes: str) -> bool:
    """Whether an MLflow error carries one of the error codes (``"RESOURCE_DOES_NOT_EXIST"``...)."""
    return getattr(exc, "error_code", None) in codes
