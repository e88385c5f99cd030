"""Champion against challenger on live traffic: agreement, feedback-labelled accuracy, latency, a verdict.

The service answers a shadowed request twice (two prediction-log rows with one ``request_id``, ``role``
champion|challenger; see :mod:`fish_platform.monitoring.log_schema`). Pairing them by request id
compares both models on exactly the same images; the feedback users gave (``FEEDBACK_SCHEMA``) labels
some of those requests, and accuracy on them is what a promotion may rest on. Agreement and latency
are reported but decide nothing: a challenger that disagrees often is only worth promoting if it is
right more often.

The verdict is a fixed-horizon test: below ``min_labelled`` feedback-labelled pairs it is "need more
data"; from there a one-sided two-proportion z-test of challenger accuracy > champion accuracy at
``alpha`` says "promote", anything else "keep champion". Looking at the report every day and promoting
the first time p < alpha inflates the false-promotion rate above ``alpha``; raise ``min_labelled``
rather than peeking. Plain pandas; nothing here imports Dagster or touches the registry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from fish_platform.monitoring.log_schema import ROLE_CHALLENGER, ROLE_CHAMPION

REPORT_PREFIX = "reports/challenger"  # under FISH_DATA_URI
LATEST_REPORT = f"{REPORT_PREFIX}/latest.json"
OPEN_SET_LABELS = ("unknown", "not_a_fish")  # as monitoring.feedback; an "unknown" answer is right

PROMOTE = "promote"
KEEP_CHAMPION = "keep_champion"
NEED_MORE_DATA = "need_more_data"

DEFAULT_MIN_LABELLED = 100
DEFAULT_ALPHA = 0.05


class ReportError(ValueError):
    """A challenger report does not allow what was asked of it (promotion from a stale report...)."""


@dataclass(frozen=True)
class ZTest:
    """One-sided two-proportion z-test of ``p_challenger > p_champion`` (pooled standard error)."""

    z: float
    p_value: float

    @classmethod
    def compare(cls, champion_correct: int, challenger_correct: int, n: int) -> ZTest:
        if n == 0:
            return cls(0.0, 1.0)
        pooled = (champion_correct + challenger_correct) / (2 * n)
        se = math.sqrt(pooled * (1 - pooled) * 2 / n)
        if se == 0:  # both always right or both always wrong: no evidence either way
            return cls(0.0, 0.5)
        z = (challenger_correct - champion_correct) / n / se
        return cls(z, 0.5 * math.erfc(z / math.sqrt(2)))


@dataclass(frozen=True)
class Latency:
    """Milliseconds per uncached answer (cached answers measure the cache, not the model)."""

    n: int
    p50_ms: float | None
    p95_ms: float | None

    @classmethod
    def of(cls, values: pd.Series) -> Latency:
        values = values.dropna()
        if values.empty:
            return cls(0, None, None)
        return cls(len(values), round(float(values.quantile(0.5)), 3), round(float(values.quantile(0.95)), 3))


@dataclass(frozen=True)
class ChallengerReport:
    """What live traffic says about the challenger, and what to do about it."""

    model_name: str | None
    champion_version: str | None
    challenger_version: str | None
    n_pairs: int  # requests answered by both
    agreement: float | None  # share of pairs with the same top-1 species
    n_labelled: int  # pairs with feedback
    champion_correct: int
    challenger_correct: int
    champion_accuracy: float | None
    challenger_accuracy: float | None
    z: float
    p_value: float  # one-sided: challenger more accurate than the champion
    champion_latency: Latency
    challenger_latency: Latency
    recommendation: str  # promote | keep_champion | need_more_data
    reason: str
    min_labelled: int
    alpha: float
    since: str | None = None  # the log window read (UTC days), None: all of it
    until: str | None = None
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """A small table for the asset's metadata."""

        def fmt(value: float | None, digits: int = 4) -> str:
            return "n/a" if value is None else f"{value:.{digits}f}"

        rows = [
            ("version", self.champion_version or "n/a", self.challenger_version or "n/a"),
            (f"accuracy (n={self.n_labelled})", fmt(self.champion_accuracy), fmt(self.challenger_accuracy)),
            ("correct", str(self.champion_correct), str(self.challenger_correct)),
            ("latency p50 ms", fmt(self.champion_latency.p50_ms, 1), fmt(self.challenger_latency.p50_ms, 1)),
            ("latency p95 ms", fmt(self.champion_latency.p95_ms, 1), fmt(self.challenger_latency.p95_ms, 1)),
        ]
        lines = ["| | champion | challenger |", "|---|---|---|"]
        lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
        lines.append("")
        lines.append(
            f"{self.n_pairs} paired requests, top-1 agreement {fmt(self.agreement)}; "
            f"z = {self.z:.3f}, one-sided p = {self.p_value:.4g}. **{self.recommendation}**: {self.reason}"
        )
        return "\n".join(lines)


def _top1(value: Any) -> str | None:
    if value is None or len(value) == 0:
        return None
    return str(value[0])


def _correct(top1: pd.Series, unknown: pd.Series, label: pd.Series) -> pd.Series:
    """Right: an open-set label ("unknown", "not_a_fish") answered "unknown", or a species label
    answered with that top-1 species and not flagged unknown (the client was told "unknown" then)."""
    flagged = unknown.astype("boolean").fillna(False).astype(bool)
    open_set = label.isin(OPEN_SET_LABELS)
    return (open_set & flagged) | (~open_set & ~flagged & (top1 == label))


def pair_answers(
    predictions: pd.DataFrame, champion_version: str | None = None, challenger_version: str | None = None
) -> pd.DataFrame:
    """One row per request answered by both models: ``<column>_champion`` and ``<column>_challenger``.

    Without versions, the pair of versions of the newest paired request is used (the log may hold
    earlier champion/challenger pairs; comparing across them would mix models). A request logged
    twice by one role keeps its last row.
    """
    columns = ["request_id", "ts", "model_name", "model_version", "top_species", "unknown", "cached",
               "latency_ms"]  # fmt: skip
    frame = predictions.reindex(columns=[*columns, "role"])
    sides = {}
    for role, version in ((ROLE_CHAMPION, champion_version), (ROLE_CHALLENGER, challenger_version)):
        side = frame[frame["role"] == role]
        if version is not None:
            side = side[side["model_version"].astype(str) == str(version)]
        sides[role] = side.drop_duplicates("request_id", keep="last")[columns]
    pairs = sides[ROLE_CHAMPION].merge(
        sides[ROLE_CHALLENGER], on="request_id", suffixes=("_champion", "_challenger")
    )
    if pairs.empty or (champion_version is not None and challenger_version is not None):
        return pairs.reset_index(drop=True)
    newest = pairs.sort_values("ts_champion", kind="stable").iloc[-1]
    same = (pairs["model_version_champion"] == newest["model_version_champion"]) & (
        pairs["model_version_challenger"] == newest["model_version_challenger"]
    )
    return pairs[same].reset_index(drop=True)


def recommend(
    n_labelled: int, champion_correct: int, challenger_correct: int, min_labelled: int, alpha: float
) -> tuple[str, str, ZTest]:
    """The verdict on feedback-labelled accuracy, with the reason in words."""
    test = ZTest.compare(champion_correct, challenger_correct, n_labelled)
    if n_labelled < min_labelled:
        reason = f"{n_labelled} feedback-labelled paired requests, {min_labelled} needed before deciding"
        return NEED_MORE_DATA, reason, test
    gap = (challenger_correct - champion_correct) / n_labelled
    if test.p_value < alpha:
        reason = f"challenger more accurate by {gap:+.4f} on {n_labelled} labelled requests"
        reason += f", p={test.p_value:.4g} < alpha {alpha}"
        return PROMOTE, reason, test
    reason = (
        f"challenger not significantly more accurate ({gap:+.4f} on {n_labelled} labelled requests, "
        f"p={test.p_value:.4g} >= alpha {alpha})"
    )
    return KEEP_CHAMPION, reason, test


def challenger_report(
    predictions: pd.DataFrame,
    feedback: pd.DataFrame,
    *,
    champion_version: str | None = None,
    challenger_version: str | None = None,
    min_labelled: int = DEFAULT_MIN_LABELLED,
    alpha: float = DEFAULT_ALPHA,
    since: str | None = None,
    until: str | None = None,
) -> ChallengerReport:
    """Compare champion and challenger answers of the same requests (see the module docstring)."""
    pairs = pair_answers(predictions, champion_version, challenger_version)
    n_pairs = len(pairs)
    top_champion = pairs["top_species_champion"].map(_top1) if n_pairs else pd.Series(dtype=object)
    top_challenger = pairs["top_species_challenger"].map(_top1) if n_pairs else pd.Series(dtype=object)
    agreement = float((top_champion == top_challenger).mean()) if n_pairs else None

    labels = feedback.reindex(columns=["request_id", "ts", "correct_label"]).dropna(subset=["correct_label"])
    labels = labels.sort_values("ts", kind="stable").drop_duplicates("request_id", keep="last")
    labelled = pairs.assign(top_champion=top_champion, top_challenger=top_challenger).merge(
        labels[["request_id", "correct_label"]], on="request_id"
    )
    n_labelled = len(labelled)
    if n_labelled:
        label = labelled["correct_label"]
        champion_correct = int(_correct(labelled["top_champion"], labelled["unknown_champion"], label).sum())
        challenger_correct = int(
            _correct(labelled["top_challenger"], labelled["unknown_challenger"], label).sum()
        )
    else:
        champion_correct = challenger_correct = 0
    recommendation, reason, test = recommend(
        n_labelled, champion_correct, challenger_correct, min_labelled, alpha
    )
    if n_pairs == 0:
        reason = "no request answered by both champion and challenger in the log"

    def latency(role: str) -> Latency:
        if not n_pairs:
            return Latency(0, None, None)
        uncached = ~pairs[f"cached_{role}"].fillna(False).astype(bool)
        return Latency.of(pairs.loc[uncached, f"latency_ms_{role}"].astype(float))

    def newest(column: str) -> str | None:
        return str(pairs[column].iloc[-1]) if n_pairs else None

    return ChallengerReport(
        model_name=newest("model_name_champion"),
        champion_version=newest("model_version_champion") or champion_version,
        challenger_version=newest("model_version_challenger") or challenger_version,
        n_pairs=n_pairs,
        agreement=None if agreement is None else round(agreement, 6),
        n_labelled=n_labelled,
        champion_correct=champion_correct,
        challenger_correct=challenger_correct,
        champion_accuracy=round(champion_correct / n_labelled, 6) if n_labelled else None,
        challenger_accuracy=round(challenger_correct / n_labelled, 6) if n_labelled else None,
        z=round(test.z, 6),
        p_value=round(test.p_value, 8),
        champion_latency=latency("champion"),
        challenger_latency=latency("challenger"),
        recommendation=recommendation,
        reason=reason,
        min_labelled=min_labelled,
        alpha=alpha,
        since=since,
        until=until,
    )


def promotion_from_report(report: dict[str, Any], model_name: str, production_version: str | None) -> str:
    """The challenger version a report allows promoting now; :class:`ReportError` when it allows none.

    Refuses unless the report recommends promotion, is about ``model_name``, and its champion is still
    the production version (a report about an earlier champion says nothing about the current one).
    """
    recommendation = report.get("recommendation")
    challenger = report.get("challenger_version")
    champion = report.get("champion_version")
    if recommendation != PROMOTE:
        raise ReportError(
            f"the challenger report of {report.get('generated_at', '?')} recommends {recommendation!r}, "
            f"not promotion: {report.get('reason', '')}"
        )
    if report.get("model_name") not in (None, model_name):
        raise ReportError(f"the challenger report is about {report.get('model_name')}, not {model_name}")
    if not challenger or not champion:
        raise ReportError("the challenger report names no champion or challenger version")
    if str(champion) != str(production_version):
        raise ReportError(
            f"the challenger report compared against champion v{champion}, but @production is now "
            f"v{production_version or 'none'}; build a new report"
        )
    return str(challenger)
