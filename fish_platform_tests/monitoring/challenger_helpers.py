"""Constructed prediction-log and feedback rows for the challenger tests (shadowed requests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from fish_platform.monitoring.log_schema import ROLE_CHALLENGER, ROLE_CHAMPION

SPECIES = ["bass", "trout", "shrimp"]


def shadowed(
    n: int,
    champion_right: int,
    challenger_right: int,
    *,
    labelled: int | None = None,
    champion_version: str = "1",
    challenger_version: str = "2",
    model_name: str = "fish-classifier",
    start: datetime | None = None,
    prefix: str = "r",
    champion_latency: float = 10.0,
    challenger_latency: float = 20.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` requests answered by both; the true species of each is SPECIES[i % 3].

    The champion is right on the first ``champion_right`` requests, the challenger on the first
    ``challenger_right``; a wrong answer is the next species. The first ``labelled`` (default all)
    requests have feedback with the true species.
    """
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    rows, feedback = [], []
    for i in range(n):
        truth = SPECIES[i % 3]
        wrong = SPECIES[(i + 1) % 3]
        request = f"{prefix}{i}"
        ts = start + timedelta(seconds=i)
        for role, version, right, latency in (
            (ROLE_CHAMPION, champion_version, i < champion_right, champion_latency),
            (ROLE_CHALLENGER, challenger_version, i < challenger_right, challenger_latency),
        ):
            top = truth if right else wrong
            rows.append(
                {
                    "request_id": request,
                    "ts": ts,
                    "sha256": f"{i:064x}",
                    "model_name": model_name,
                    "model_version": version,
                    "runtime": "onnx",
                    "role": role,
                    "served": role == ROLE_CHAMPION,
                    "labels": SPECIES,
                    "probabilities": [0.8 if s == top else 0.1 for s in SPECIES],
                    "top_species": [top, *[s for s in SPECIES if s != top]],
                    "top_scores": [0.8, 0.1, 0.1],
                    "unknown": False,
                    "unknown_score": 0.1,
                    "cached": False,
                    "latency_ms": latency,
                    "width": 64,
                    "height": 64,
                    "brightness": 120.0,
                    "embedding": None,
                }
            )
        if i < (n if labelled is None else labelled):
            feedback.append(
                {
                    "request_id": request,
                    "ts": ts + timedelta(minutes=1),
                    "sha256": f"{i:064x}",
                    "model_version": champion_version,
                    "predicted": truth if i < champion_right else wrong,
                    "correct_label": truth,
                    "comment": None,
                    "image_uri": None,
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(feedback, columns=FEEDBACK_COLUMNS)


FEEDBACK_COLUMNS = ["request_id", "ts", "sha256", "model_version", "predicted", "correct_label", "comment",
                    "image_uri"]  # fmt: skip
