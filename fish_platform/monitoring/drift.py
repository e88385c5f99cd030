"""Has the traffic a model version answers moved away from what it was validated on?

One day's prediction log (:mod:`fish_platform.monitoring.prediction_log`) is compared with the
version's reference (:mod:`fish_platform.ml.reference`, its validation split) by five tests:

- **embedding**: maximum mean discrepancy (MMD, RBF kernel, bandwidth by the median heuristic) between
  the pooled EfficientNet embeddings, after a PCA of both samples together; the p-value comes from a
  permutation test (the labels "reference" / "traffic" shuffled). This catches new backgrounds,
  cameras, lighting, species the model does not know, even when the predicted species look normal.
- **species**: chi-square test of homogeneity of the top-1 species counts (and the population
  stability index, PSI, as an effect size).
- **confidence**: two-sample Kolmogorov-Smirnov test of the top-1 confidence.
- **unknown_rate**: chi-square test of the share answered "unknown" (when the version has a threshold).
- **brightness** and **size**: Kolmogorov-Smirnov tests of the model input's mean pixel and of the
  uploaded image's pixel count.

The verdict controls the family-wise error: a test flags drift when its p-value is below
``alpha / number of tests`` (Bonferroni), so traffic drawn from the reference distribution is flagged
on about ``alpha`` of the days. Fewer than ``min_samples`` answers give no verdict (``drifted`` False,
``reason`` says so). numpy and scipy only (scipy comes with MLflow).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fish_platform.ml.reference import Profile
from fish_platform.monitoring.log_schema import ROLE_CHAMPION

TESTS = ("embedding", "species", "confidence", "unknown_rate", "brightness", "size")
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class DriftConfig:
    """How sensitive the drift tests are."""

    alpha: float = 0.01  # family-wise false-alarm rate per day
    pca_components: int = 20
    permutations: int = 2000  # the smallest p-value is 1/(permutations+1): below alpha / len(TESTS)
    max_samples: int = 500  # per side, for the embedding test (its cost is quadratic)
    min_samples: int = 30  # fewer answers in a day give no verdict
    seed: int = 0


@dataclass(frozen=True)
class TestResult:
    """One test: its statistic, p-value, whether it alone flags drift, and figures for people."""

    name: str
    statistic: float
    p_value: float
    drifted: bool
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class DriftReport:
    """Every test's result and the verdict of one comparison."""

    n_reference: int
    n_traffic: int
    n_embeddings: int
    alpha: float
    tests: dict[str, TestResult]
    drifted: bool
    reason: str  # what flagged it, or why there is no verdict

    @property
    def drifted_tests(self) -> list[str]:
        return [name for name, test in self.tests.items() if test.drifted]

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "tests"},
            "tests": {name: asdict(test) for name, test in self.tests.items()},
        }

    def metrics(self) -> dict[str, float]:
        """Flat numbers (Dagster metadata, dashboards): each test's p-value, statistic and figures."""
        values: dict[str, float] = {
            "n_traffic": float(self.n_traffic),
            "n_reference": float(self.n_reference),
        }
        for name, test in self.tests.items():
            values[f"{name}_p_value"] = test.p_value
            values[f"{name}_statistic"] = test.statistic
            values.update({f"{name}_{key}": value for key, value in test.figures.items()})
        return {k: round(float(v), 6) for k, v in values.items()}

    def markdown(self) -> str:
        threshold = self.alpha / max(1, len(self.tests))
        lines = [f"| test | statistic | p-value (drift below {threshold:.4f}) | drift |", "|---|---|---|---|"]
        for name, test in self.tests.items():
            lines.append(
                f"| {name} | {test.statistic:.4f} | {test.p_value:.4f} | {'yes' if test.drifted else ''} |"
            )
        return "\n".join(lines)


# --- reading the log ------------------------------------------------------------------------------


def traffic_profile(
    frame: pd.DataFrame, labels: list[str], model_version: str | None = None, role: str = ROLE_CHAMPION
) -> Profile:
    """Prediction-log rows -> a :class:`Profile` in ``labels`` order (the reference's).

    Keeps the rows of ``role`` (the champion's answers: challenger shadows describe another model) and,
    when given, of ``model_version``. Cached answers count for species, confidence and unknown rate but
    have no embedding; rows whose labels differ from ``labels`` are reordered by name.
    """
    rows = frame
    if "role" in rows and role is not None:
        rows = rows[rows["role"].fillna(role) == role]
    if model_version is not None and "model_version" in rows:
        rows = rows[rows["model_version"].astype(str) == str(model_version)]
    rows = rows.reset_index(drop=True)
    index = {name: i for i, name in enumerate(labels)}
    probabilities = np.zeros((len(rows), len(labels)), np.float32)
    tops = zip(
        rows.get("top_species", [None] * len(rows)), rows.get("top_scores", [None] * len(rows)), strict=True
    )
    for i, (row_labels, probs, (top_species, top_scores)) in enumerate(
        zip(rows["labels"], rows["probabilities"], tops, strict=True)
    ):
        # A cached answer carries no full vector (it is never cached): its top-3 stands in for it,
        # which keeps its species and confidence; the rest of its probability mass is left at 0.
        pairs = (
            zip(row_labels, probs, strict=True)
            if probs is not None and row_labels is not None
            else zip(
                top_species if top_species is not None else [],
                top_scores if top_scores is not None else [],
                strict=True,
            )
        )
        for name, p in pairs:
            if name in index:
                probabilities[i, index[name]] = p
    embeddings = [e for e in rows["embedding"] if e is not None and len(e)] if "embedding" in rows else []
    unknown = None
    if "unknown" in rows and len(rows) and rows["unknown"].notna().all():
        unknown = rows["unknown"].to_numpy(bool)
    return Profile(
        labels=list(labels),
        probabilities=probabilities,
        embeddings=np.array(embeddings, np.float32) if embeddings else np.zeros((0, 0), np.float32),
        brightness=rows["brightness"].dropna().to_numpy(np.float32),
        width=rows["width"].dropna().to_numpy(np.int64),
        height=rows["height"].dropna().to_numpy(np.int64),
        unknown=unknown,
        sha256=list(rows["sha256"]) if "sha256" in rows else [],
    )


# --- the tests ------------------------------------------------------------------------------------


def _pca(reference: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top principal axes of the reference embeddings (numpy SVD)."""
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, vt[: max(1, min(components, vt.shape[0]))]


def _mmd2(kernel: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Biased MMD^2 (the V-statistic) per row of ``weights`` (``1/n`` on one sample, ``-1/m`` on the other).

    One matrix product scores every permutation at once; with an RBF kernel the biased and unbiased
    statistics differ by a constant under permutation, so the test's p-value is the same.
    """
    return np.einsum("pi,pi->p", weights @ kernel, weights)


def _weights(orders: np.ndarray, n: int) -> np.ndarray:
    total = orders.shape[1]
    weights = np.full(orders.shape, -1.0 / (total - n))
    np.put_along_axis(weights, orders[:, :n], 1.0 / n, axis=1)
    return weights


def mmd_test(
    reference: np.ndarray, traffic: np.ndarray, config: DriftConfig | None = None
) -> tuple[float, float, float]:
    """``(MMD^2, permutation p-value, bandwidth)`` of two embedding samples, PCA-reduced."""
    config = config or DriftConfig()
    rng = np.random.default_rng(config.seed)
    if len(reference) > config.max_samples:
        reference = reference[rng.choice(len(reference), config.max_samples, replace=False)]
    if len(traffic) > config.max_samples:
        traffic = traffic[rng.choice(len(traffic), config.max_samples, replace=False)]
    # PCA on the pooled sample: symmetric in the two sides, so the permutation test stays exact. (Axes
    # fitted on the reference alone overfit it: its own projection has more variance than new data.)
    pooled = np.concatenate([reference, traffic]).astype(np.float64)
    mean, axes = _pca(pooled, config.pca_components)
    z = (pooled - mean) @ axes.T
    norms = (z * z).sum(axis=1)
    squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * z @ z.T, 0.0)
    upper = squared[np.triu_indices(len(z), 1)]
    bandwidth2 = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-squared / bandwidth2)
    n, total = len(reference), len(z)
    observed = float(_mmd2(kernel, _weights(np.arange(total)[None, :], n))[0])
    orders = np.argsort(rng.random((config.permutations, total)), axis=1)
    exceed = int((_mmd2(kernel, _weights(orders, n)) >= observed - 1e-12).sum())
    return observed, (exceed + 1) / (config.permutations + 1), float(np.sqrt(bandwidth2))


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two count vectors over the same bins (0.1: moderate, 0.25: large shift, by convention)."""
    p = np.maximum(expected / max(1, expected.sum()), PSI_EPSILON)
    q = np.maximum(actual / max(1, actual.sum()), PSI_EPSILON)
    return float(((q - p) * np.log(q / p)).sum())


def _chi2(table: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity of a 2 x K count table (empty columns dropped)."""
    from scipy.stats import chi2_contingency

    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    statistic, p_value, _, _ = chi2_contingency(table, correction=False)
    return float(statistic), float(p_value)


def _ks(reference: np.ndarray, traffic: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ks_2samp

    if len(reference) == 0 or len(traffic) == 0:
        return 0.0, 1.0
    result = ks_2samp(reference, traffic)
    return float(result.statistic), float(result.pvalue)


def compare(reference: Profile, traffic: Profile, config: DriftConfig | None = None) -> DriftReport:
    """Run every test that both sides have data for and give the verdict."""
    config = config or DriftConfig()
    results: list[tuple[str, float, float, dict[str, float]]] = []
    if len(traffic.embeddings) >= config.min_samples and len(reference.embeddings) >= 2:
        mmd2, p, bandwidth = mmd_test(reference.embeddings, traffic.embeddings, config)
        results.append(("embedding", mmd2, p, {"bandwidth": bandwidth}))
    labels = reference.labels
    ref_counts = np.bincount(reference.probabilities.argmax(axis=1), minlength=len(labels))
    traffic_counts = (
        np.bincount(traffic.probabilities.argmax(axis=1), minlength=len(labels))
        if len(traffic)
        else np.zeros(len(labels), np.int64)
    )
    statistic, p = _chi2(np.stack([ref_counts, traffic_counts]))
    results.append(("species", statistic, p, {"psi": population_stability_index(ref_counts, traffic_counts)}))
    statistic, p = _ks(reference.confidence, traffic.confidence)
    results.append(
        (
            "confidence",
            statistic,
            p,
            {
                "reference_mean": float(reference.confidence.mean()) if len(reference) else 0.0,
                "traffic_mean": float(traffic.confidence.mean()) if len(traffic) else 0.0,
            },
        )
    )
    if reference.unknown is not None and traffic.unknown is not None:
        ref_u, traffic_u = int(reference.unknown.sum()), int(traffic.unknown.sum())
        table = np.array(
            [[ref_u, len(reference.unknown) - ref_u], [traffic_u, len(traffic.unknown) - traffic_u]]
        )
        statistic, p = _chi2(table)
        results.append(
            (
                "unknown_rate",
                statistic,
                p,
                {
                    "reference_rate": ref_u / max(1, len(reference.unknown)),
                    "traffic_rate": traffic_u / max(1, len(traffic.unknown)),
                },
            )
        )
    statistic, p = _ks(reference.brightness, traffic.brightness)
    results.append(
        (
            "brightness",
            statistic,
            p,
            {
                "reference_mean": float(reference.brightness.mean()) if len(reference.brightness) else 0.0,
                "traffic_mean": float(traffic.brightness.mean()) if len(traffic.brightness) else 0.0,
            },
        )
    )
    ref_area = reference.width.astype(np.float64) * reference.height
    traffic_area = traffic.width.astype(np.float64) * traffic.height
    statistic, p = _ks(ref_area, traffic_area)
    results.append(
        (
            "size",
            statistic,
            p,
            {
                "reference_median_pixels": float(np.median(ref_area)) if len(ref_area) else 0.0,
                "traffic_median_pixels": float(np.median(traffic_area)) if len(traffic_area) else 0.0,
            },
        )
    )

    enough = len(traffic) >= config.min_samples
    threshold = config.alpha / len(results)
    tests = {
        name: TestResult(name, statistic, p, enough and p < threshold, figures)
        for name, statistic, p, figures in results
    }
    flagged = [name for name, test in tests.items() if test.drifted]
    if not enough:
        reason = f"{len(traffic)} answers, fewer than the {config.min_samples} a verdict needs"
    elif flagged:
        reason = "drift in " + ", ".join(flagged)
    else:
        reason = "no test below its threshold"
    return DriftReport(
        n_reference=len(reference),
        n_traffic=len(traffic),
        n_embeddings=len(traffic.embeddings),
        alpha=config.alpha,
        tests=tests,
        drifted=bool(flagged),
        reason=reason,
    )


# --- plots ----------------------------------------------------------------------------------------


def drift_plot_png(reference: Profile, traffic: Profile, config: DriftConfig | None = None) -> bytes:
    """Four panels: top-1 species shares, confidence, brightness, the first two PCA components."""
    from matplotlib.figure import Figure

    config = config or DriftConfig()
    figure = Figure(figsize=(12, 8))
    (species_ax, conf_ax), (bright_ax, pca_ax) = figure.subplots(2, 2)
    labels = reference.labels
    x = np.arange(len(labels))
    for offset, (name, profile) in zip(
        (-0.2, 0.2), (("reference", reference), ("traffic", traffic)), strict=True
    ):
        counts = (
            np.bincount(profile.probabilities.argmax(axis=1), minlength=len(labels))
            if len(profile)
            else np.zeros(len(labels))
        )
        species_ax.bar(x + offset, counts / max(1, counts.sum()), width=0.4, label=name)
        if len(profile):
            conf_ax.hist(profile.confidence, bins=20, range=(0, 1), alpha=0.5, density=True, label=name)
        if len(profile.brightness):
            bright_ax.hist(profile.brightness, bins=25, range=(0, 255), alpha=0.5, density=True, label=name)
    species_ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    species_ax.set_title("top-1 species share")
    conf_ax.set_title("top-1 confidence")
    bright_ax.set_title("brightness of the model input")
    if len(reference.embeddings) >= 2:
        mean, axes = _pca(reference.embeddings.astype(np.float64), 2)
        for name, emb in (("reference", reference.embeddings), ("traffic", traffic.embeddings)):
            if len(emb) and emb.shape[1] == len(mean):
                z = (emb[: config.max_samples] - mean) @ axes.T
                pca_ax.scatter(z[:, 0], z[:, -1], s=6, alpha=0.5, label=name)
    pca_ax.set_title("embeddings, first two principal components of the reference")
    for axis in (species_ax, conf_ax, bright_ax, pca_ax):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return buffer.getvalue()


# --- one day of the log, and the retraining rule ---------------------------------------------------


@dataclass
class DayDrift:
    """One day's comparison of the production version's traffic with its reference."""

    date: str
    model_version: str
    report: DriftReport
    plot_png: bytes = field(repr=False, default=b"")

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.date, "model_version": self.model_version, **self.report.as_dict()}


def drift_for_day(
    data_uri: str,
    day: str,
    reference: Profile,
    model_version: str,
    config: DriftConfig | None = None,
    s3_endpoint_url: str | None = None,
) -> DayDrift:
    """Read ``day``'s prediction log (so far, for today) and compare ``model_version``'s answers."""
    from fish_platform.monitoring.prediction_log import read_predictions

    columns = [
        "role",
        "model_version",
        "labels",
        "probabilities",
        "unknown",
        "width",
        "height",
        "brightness",
        "embedding",
        "sha256",
    ]
    frame = read_predictions(data_uri, date=day, columns=columns, s3_endpoint_url=s3_endpoint_url)
    traffic = traffic_profile(frame, reference.labels, model_version=model_version)
    report = compare(reference, traffic, config)
    return DayDrift(day, str(model_version), report, drift_plot_png(reference, traffic, config))


DRIFT_REPORT_PREFIX = "reports/drift"  # under FISH_DATA_URI
LATEST_DRIFT_REPORT = f"{DRIFT_REPORT_PREFIX}/latest.json"


def save_drift_report(data_uri: str, day: DayDrift, s3_endpoint_url: str | None = None) -> str:
    """Write ``reports/drift/date=<day>.json`` and, unless a later day is reported already,
    ``latest.json``: the newest verdict, which the service exports to Prometheus (``fish_drift_*``).
    Returns the day's report URI."""
    from datetime import UTC, datetime

    from fish_platform.data.storage import join, open_storage, read_json, write_json

    storage = open_storage(data_uri, s3_endpoint_url)
    body = {
        **day.as_dict(),
        "metrics": day.report.metrics(),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    uri = join(data_uri, DRIFT_REPORT_PREFIX, f"date={day.date}.json")
    write_json(storage, uri, body)
    latest = join(data_uri, LATEST_DRIFT_REPORT)
    newest = read_json(storage, latest).get("date", "") if storage.exists(latest) else ""
    if day.date >= newest:
        write_json(storage, latest, body)
    return uri


def consecutive_drift(verdicts: dict[str, bool], days: int) -> list[str] | None:
    """The last ``days`` UTC days (``YYYY-MM-DD`` keys) if each has a drift verdict and all drifted.

    A day without a verdict breaks the run: retraining is asked for on evidence, not on gaps.
    """
    from datetime import date, timedelta

    if days <= 0 or not verdicts:
        return None
    last = max(date.fromisoformat(day) for day in verdicts)
    window = [(last - timedelta(days=n)).isoformat() for n in range(days)][::-1]
    return window if all(verdicts.get(day) is True for day in window) else None
