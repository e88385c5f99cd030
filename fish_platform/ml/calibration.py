"""Confidence calibration (temperature scaling) and open-set ("not a fish we know") scoring.

Plain numpy over the model's softmax outputs, so training, evaluation and the service can share it
without TensorFlow, Dagster or BentoML.

Temperature scaling. The served model outputs probabilities, not logits. ``log p`` differs from the
pre-softmax logits only by a per-image constant, and softmax is invariant to per-row constants, so
``softmax(log p / T)`` is exactly ``softmax(logits / T)``: fitting ``T`` on log-probabilities is
the same as fitting it on the logits. ``T`` minimises the validation negative log-likelihood; the
NLL is convex in ``1/T``, so a bounded golden-section search finds the global minimum (no scipy).

Open-set scores (higher = more like a known species):

* ``"max_probability"``: the largest calibrated probability (maximum softmax probability, MSP).
* ``"entropy"``: minus the entropy of the calibrated distribution (in nats, in ``[-log K, 0]``).
* ``"max_logit"`` and ``"energy"`` need the *pre-softmax* logits. They cannot be recovered from
  probabilities: the logits are only known up to a per-image additive constant, and that constant is
  exactly what they measure. The head is one dense layer over the pooled embedding, so the logits are
  ``embedding @ kernel + bias``: a :class:`FeatureSpace` holds the head, and the served runtimes give
  the embedding with every answer.
* ``"vim"`` (virtual-logit matching, Wang et al., CVPR 2022) adds what the logits cannot see: the part
  of the embedding outside the principal subspace of the *training* embeddings. Score = energy (at
  ``T = 1``) minus ``alpha`` times the norm of that residual, with ``alpha`` matching the residual's
  scale to the largest logit's on training images. The subspace's dimension follows the method's
  reference rule (:func:`vim_dimension`), not a search over unknowns.

Which score a version stores is chosen by measurement on species held out of training
(``benchmarks/open_set.py``, docs/training.md): the evaluation's ``open_set_score`` setting. A record
keeps the threshold of every score (all fitted on the same validation images), so a runtime without
embeddings falls back to ``max_probability`` at its own threshold, and says so.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TEMPERATURE_BOUNDS = (0.05, 20.0)
DEFAULT_BINS = 15
DEFAULT_TPR = 0.95  # share of known (validation) images an open-set threshold keeps
# A picture whose pixels barely vary (a plain colour, a lens cap, a blank wall) holds no fish whatever
# the model says: a from-scratch model can give a grey image 0.99 "Sea Bass" (grey-blue body), so the
# open-set score alone cannot refuse it. Standard deviation of each channel over the picture (0-255);
# photos sit far above it (lowest at 96 px: 14.4 of the 1,936 real photos, 14.6 of generated ones).
FEATURELESS_STD = 4.0


def featureless(images: np.ndarray, max_std: float = FEATURELESS_STD) -> np.ndarray:
    """Boolean per image of an (n, h, w, 3) batch: no channel varies by more than ``max_std``."""
    batch = np.asarray(images)
    if batch.ndim != 4:
        raise ValueError(f"images must be (n, h, w, channels), got shape {batch.shape}")
    # Per channel over the picture (a plain red is as empty as a plain grey), the liveliest channel.
    if batch.dtype == np.uint8:
        return _channel_variance_uint8(batch).max(axis=1) < max_std**2
    flat = batch.astype(np.float32, copy=False).reshape(batch.shape[0], -1, batch.shape[-1])
    return flat.std(axis=1).max(axis=1) < max_std


_LEVELS = np.arange(256, dtype=np.float64)


def _channel_variance_uint8(batch: np.ndarray) -> np.ndarray:
    """(n, channels) population variance of each channel of a uint8 batch, from exact histograms.

    The serving model process runs this on every batch: a 256-bin count per channel is ~8x faster
    than ``std`` over a float32 copy (32 images at 224 px: about 10 against 85 ms on one core), and
    the counts are integers, so the variance is exact to float64 rounding.
    """
    n, channels = batch.shape[0], batch.shape[-1]
    pixels = math.prod(batch.shape[1:-1])
    counts = np.empty((n, channels, 256), dtype=np.float64)
    for i in range(n):
        image = batch[i].reshape(-1, channels)
        for c in range(channels):
            counts[i, c] = np.bincount(image[:, c], minlength=256)
    mean = counts @ _LEVELS / pixels
    return np.maximum(counts @ (_LEVELS * _LEVELS) / pixels - mean * mean, 0.0)


SCORE_METHODS = ("max_probability", "entropy", "max_logit", "energy", "vim")
PROBABILITY_METHODS = ("max_probability", "entropy")  # the ones that work from probabilities alone
FEATURE_METHODS = ("max_logit", "energy", "vim")  # the ones that need the embedding (and the head)
FALLBACK_METHOD = "max_probability"
# Floor for log(0): float32 softmax outputs underflow to exactly 0 below about this value. A tiny
# floor keeps such classes negligible even at high temperatures (a floor of 1e-12 would give them
# exp(log(1e-12) / 20) ~ 25% of the top class's weight at T = 20).
_EPS = float(np.finfo(np.float32).tiny)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# --- temperature scaling -------------------------------------------------------------------------


def _as_probabilities(probabilities: np.ndarray) -> np.ndarray:
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"probabilities must be (n_images, n_classes >= 2), got shape {values.shape}")
    return values


def _as_labels(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    values = np.asarray(labels)
    if values.shape != (probabilities.shape[0],):
        raise ValueError(f"labels must be ({probabilities.shape[0]},), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError("labels must be integer class indices (the model's label order)")
    if values.size and (values.min() < 0 or values.max() >= probabilities.shape[1]):
        raise ValueError(f"labels must lie in [0, {probabilities.shape[1]})")
    return values.astype(np.int64)


def _log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probabilities, _EPS))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _nll(log_p: np.ndarray, labels: np.ndarray, inverse_temperature: float) -> float:
    scaled = _log_softmax(log_p * inverse_temperature)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true classes after scaling by ``temperature``."""
    probabilities = _as_probabilities(probabilities)
    labels = _as_labels(labels, probabilities)
    return _nll(_log_probabilities(probabilities), labels, 1.0 / temperature)


def fit_temperature(
    probabilities: np.ndarray,
    labels: np.ndarray,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tolerance: float = 1e-4,
) -> float:
    """The temperature minimising the NLL of ``labels`` under ``softmax(log p / T)``.

    ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an under-confident one; the
    top-1 class never changes. The search runs over ``log(1/T)`` (the NLL is convex in ``1/T``)
    with a coarse grid first and golden-section refinement around the best grid point, and stops
    when the bracket is narrower than ``tolerance`` in ``log T``. An empty set gives 1.0.
    """
    probabilities = _as_probabilities(probabilities)
    labels = _as_labels(labels, probabilities)
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    if len(labels) == 0:
        return 1.0
    log_p = _log_probabilities(probabilities)

    def loss(log_beta: float) -> float:
        return _nll(log_p, labels, math.exp(log_beta))

    # log(1/T) runs from -log(high) to -log(low).
    grid = np.linspace(-math.log(high), -math.log(low), 41)
    losses = [loss(x) for x in grid]
    best = int(np.argmin(losses))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tolerance:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = loss(d)
    candidates = [(losses[best], grid[best]), (fc, c), (fd, d)]
    log_beta = min(candidates)[1]
    return float(min(max(math.exp(-log_beta), low), high))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row-wise; keeps a floating input dtype (float32 stays float32)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    array = np.asarray(probabilities)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
    values = np.atleast_2d(array.astype(np.float64))
    scaled = np.exp(_log_softmax(_log_probabilities(values) / temperature))
    return scaled.reshape(array.shape).astype(dtype, copy=False)


# --- calibration error ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityTable:
    """Per confidence bin (equal width over ``[0, 1]``): images, top-1 accuracy, mean confidence.

    ``accuracy`` and ``confidence`` are NaN for empty bins.
    """

    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (bins,) int
    accuracy: np.ndarray  # (bins,)
    confidence: np.ndarray  # (bins,)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def ece(self) -> float:
        """Expected calibration error: ``sum_b n_b / n * |accuracy_b - confidence_b|``."""
        if self.n == 0:
            return 0.0
        used = self.counts > 0
        gaps = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.counts[used] * gaps).sum() / self.n)

    @property
    def mce(self) -> float:
        """Maximum calibration error over non-empty bins."""
        used = self.counts > 0
        return float(np.abs(self.accuracy[used] - self.confidence[used]).max()) if used.any() else 0.0

    def as_rows(self) -> list[dict[str, float]]:
        """Non-empty bins as JSON-able rows (for metadata and artifacts)."""
        return [
            {
                "low": float(self.edges[i]),
                "high": float(self.edges[i + 1]),
                "count": int(self.counts[i]),
                "accuracy": float(self.accuracy[i]),
                "confidence": float(self.confidence[i]),
            }
            for i in range(len(self.counts))
            if self.counts[i] > 0
        ]


def reliability_table(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS
) -> ReliabilityTable:
    """Top-1 confidence binned into ``bins`` equal-width bins ``(i/B, (i+1)/B]`` (0 joins the first)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    probabilities = _as_probabilities(probabilities)
    labels = _as_labels(labels, probabilities)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
    return ReliabilityTable(np.linspace(0.0, 1.0, bins + 1), counts, accuracy, mean_confidence)


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS
) -> float:
    """ECE of the top-1 confidence with equal-width bins (0 for a perfectly calibrated model)."""
    return reliability_table(probabilities, labels, bins).ece


def reliability_diagram_png(
    before_probs: np.ndarray,
    after_probs: np.ndarray,
    labels: np.ndarray,
    bins: int = DEFAULT_BINS,
    temperature: float | None = None,
) -> bytes:
    """Two reliability diagrams side by side (before / after temperature scaling), ECE in each legend.

    Bars: accuracy per confidence bin; the dashed diagonal is perfect calibration; red shading is
    the gap between accuracy and the bin's mean confidence (above the bar: over-confident).
    Drawn on ``matplotlib.figure.Figure`` (no pyplot), like ``plots``.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.5))
    after_title = "after scaling" if temperature is None else f"after scaling (T = {temperature:.3g})"
    panels = ((before_probs, "before scaling"), (after_probs, after_title))
    for axis, (probabilities, title) in zip(figure.subplots(1, 2, sharey=True), panels, strict=True):
        table = reliability_table(probabilities, labels, bins)
        width = 1.0 / bins
        centres = table.edges[:-1] + width / 2
        used = table.counts > 0
        axis.bar(centres[used], table.accuracy[used], width=width, edgecolor="black", linewidth=0.5,
                 color="tab:blue", label=f"accuracy (ECE {table.ece:.3f})")
        gap_low = np.minimum(table.accuracy[used], table.confidence[used])
        gap = np.abs(table.confidence[used] - table.accuracy[used])
        axis.bar(centres[used], gap, bottom=gap_low, width=width, color="tab:red", alpha=0.35, zorder=3,
                 label="gap to mean confidence")
        axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("top-1 confidence")
        axis.set_title(f"{title}, {table.n} images")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=8)
    figure.axes[0].set_ylabel("accuracy")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


# --- open-set scores -----------------------------------------------------------------------------


def open_set_scores(
    probabilities: np.ndarray | None,
    method: str = "max_probability",
    temperature: float = 1.0,
    logits: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    space: FeatureSpace | None = None,
) -> np.ndarray:
    """One known-ness score per image, higher = more like a known species (see the module notes).

    ``max_probability`` and ``entropy`` use ``probabilities`` scaled by ``temperature``;
    ``max_logit`` (``max z``) and ``energy`` (``T * logsumexp(z / T)``, i.e. minus the energy) need
    the pre-softmax ``logits``, or ``embeddings`` with the ``space`` holding the head; ``vim`` needs
    ``embeddings`` and a ``space`` with a principal subspace. Missing inputs raise ``ValueError``.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"unknown open-set score {method!r}; choose one of {', '.join(SCORE_METHODS)}")
    if method == "vim":
        if embeddings is None or space is None or space.basis is None:
            raise ValueError("'vim' needs the embeddings and a feature space with a principal subspace")
        return space.vim(embeddings)
    if logits is None and embeddings is not None and space is not None:
        logits = space.logits(embeddings)
    if method in PROBABILITY_METHODS:
        if probabilities is None:
            if logits is None:
                raise ValueError(f"{method!r} needs probabilities or logits")
            z = np.asarray(logits, dtype=np.float64)
            scaled = np.exp(_log_softmax(z / temperature))
        else:
            scaled = apply_temperature(_as_probabilities(probabilities), temperature)
        if method == "max_probability":
            return scaled.max(axis=1)
        return (scaled * _log_probabilities(scaled)).sum(axis=1)  # minus the entropy
    if logits is None:
        raise ValueError(
            f"{method!r} needs the pre-softmax logits: from probabilities the logits are known only up to a "
            "per-image constant, which is what this score measures (use 'max_probability' or 'entropy')"
        )
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (n_images, n_classes), got shape {z.shape}")
    if method == "max_logit":
        return z.max(axis=1)
    return _energy(z, temperature)


def _energy(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``T * logsumexp(z / T)`` per row (minus the free energy)."""
    top = z.max(axis=1, keepdims=True) / temperature
    return temperature * (top[:, 0] + np.log(np.exp(z / temperature - top).sum(axis=1)))


def vim_dimension(n_features: int, n_samples: int) -> int:
    """The principal subspace's dimension for ``vim``: the reference implementation's rule (1000 for
    2048+ features, 512 for 768+, half the features below), at most half the fitting images (beyond
    that the training images span the subspace and their residual, ``alpha``'s scale, vanishes)."""
    rule = 1000 if n_features >= 2048 else 512 if n_features >= 768 else n_features // 2
    return max(1, min(rule, n_samples // 2, n_features - 1))


@dataclass(frozen=True)
class FeatureSpace:
    """What the feature scores need besides the embedding: the dense head and, for ``vim``, the
    principal subspace of the training embeddings (stored beside the calibration record as ``.npz``).

    ``kernel`` ``(features, classes)`` and ``bias`` ``(classes,)`` are the head's; ``origin`` is the
    point the head maps to all-zero logits (``-pinv(kernel.T) @ bias``), around which the subspace is
    taken; ``basis`` ``(features, D)`` is orthonormal; ``alpha`` scales the residual's norm.
    """

    kernel: np.ndarray
    bias: np.ndarray
    origin: np.ndarray | None = None
    basis: np.ndarray | None = None
    alpha: float = 0.0

    @classmethod
    def fit(
        cls, embeddings: np.ndarray, kernel: np.ndarray, bias: np.ndarray, dimension: int | None = None
    ) -> FeatureSpace:
        """The subspace of ``embeddings`` (training images) for ``vim``, after ``vim_dimension``."""
        x = np.asarray(embeddings, dtype=np.float64)
        kernel64, bias64 = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
        if x.ndim != 2 or x.shape[1] != kernel64.shape[0]:
            raise ValueError(f"embeddings must be (n, {kernel64.shape[0]}), got shape {x.shape}")
        if len(x) < 4:
            raise ValueError(f"a feature space needs at least 4 training embeddings, got {len(x)}")
        origin = -np.linalg.pinv(kernel64.T) @ bias64
        centred = x - origin
        dimension = dimension or vim_dimension(x.shape[1], len(x))
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        basis = vt[:dimension].T
        residual = _residual_norm(centred, basis)
        max_logit = (x @ kernel64 + bias64).max(axis=1)
        alpha = float(max_logit.mean() / max(residual.mean(), 1e-12))
        return cls(kernel64.astype(np.float32), bias64.astype(np.float32), origin.astype(np.float32),
                   basis.astype(np.float32), alpha)  # fmt: skip

    @property
    def dimension(self) -> int | None:
        return None if self.basis is None else int(self.basis.shape[1])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(embeddings, dtype=np.float64) @ self.kernel + self.bias

    def vim(self, embeddings: np.ndarray) -> np.ndarray:
        """Energy (``T = 1``) minus ``alpha`` times the residual outside the principal subspace."""
        if self.basis is None or self.origin is None:
            raise ValueError("this feature space has no principal subspace")
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        return _energy(self.logits(x)) - self.alpha * _residual_norm(x - self.origin, self.basis)

    def to_bytes(self) -> bytes:
        arrays = {"kernel": self.kernel, "bias": self.bias, "alpha": np.float64(self.alpha)}
        if self.basis is not None and self.origin is not None:
            arrays.update(origin=self.origin, basis=self.basis)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureSpace:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(
                kernel=arrays["kernel"],
                bias=arrays["bias"],
                origin=arrays["origin"] if "origin" in arrays else None,
                basis=arrays["basis"] if "basis" in arrays else None,
                alpha=float(arrays["alpha"]),
            )


def _residual_norm(centred: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Norm of each row's part outside the span of ``basis``'s orthonormal columns."""
    total = (centred**2).sum(axis=1)
    inside = ((centred @ basis) ** 2).sum(axis=1)
    return np.sqrt(np.maximum(total - inside, 0.0))


def choose_threshold(known_scores: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
    """The score ``s`` such that at least ``tpr`` of ``known_scores`` satisfy ``score >= s``.

    It is the highest such value taken from the scores themselves, so on the images it was chosen
    from the kept share is ``ceil(tpr * n) / n`` (more only where scores tie at the threshold).
    """
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    scores = np.sort(np.asarray(known_scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise ValueError("choose_threshold needs at least one known score")
    keep = min(int(math.ceil(tpr * scores.size - 1e-9)), scores.size)
    return float(scores[scores.size - keep])


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve for "positive scores higher" (Mann-Whitney U, ties count half)."""
    positive = np.asarray(positive_scores, dtype=np.float64).ravel()
    negative = np.asarray(negative_scores, dtype=np.float64).ravel()
    if positive.size == 0 or negative.size == 0:
        raise ValueError("AUROC needs at least one score of each kind")
    pooled = np.sort(np.concatenate([positive, negative]))
    # Average 1-based rank of each positive score among all scores (tied scores share a rank).
    ranks = (np.searchsorted(pooled, positive, "left") + np.searchsorted(pooled, positive, "right") + 1) / 2
    u = ranks.sum() - positive.size * (positive.size + 1) / 2
    return float(u / (positive.size * negative.size))


@dataclass(frozen=True)
class OpenSetReport:
    """How well a known-ness score separates known species from unknown images.

    ``fpr_at_95_tpr``: share of unknowns accepted at the threshold that keeps 95% of the knowns
    (chosen on these known scores). ``tpr`` / ``fpr``: knowns kept and unknowns accepted at
    ``threshold`` (the operating point, typically chosen on validation images).
    """

    auroc: float
    fpr_at_95_tpr: float
    threshold: float
    n_known: int
    n_unknown: int
    tpr: float = float("nan")
    fpr: float = float("nan")

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def open_set_report(
    known_scores: np.ndarray, unknown_scores: np.ndarray, threshold: float | None = None
) -> OpenSetReport:
    """AUROC, FPR at 95% TPR, and the rates at ``threshold`` (default: 95% TPR on ``known_scores``)."""
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    at_95 = choose_threshold(known, 0.95)
    threshold = at_95 if threshold is None else float(threshold)
    return OpenSetReport(
        auroc=auroc(known, unknown),
        fpr_at_95_tpr=float((unknown >= at_95).mean()),
        threshold=threshold,
        n_known=int(known.size),
        n_unknown=int(unknown.size),
        tpr=float((known >= threshold).mean()),
        fpr=float((unknown >= threshold).mean()),
    )


# --- what is stored with a model version ---------------------------------------------------------


@dataclass(frozen=True)
class CalibrationRecord:
    """Temperature and open-set thresholds fitted on validation images, stored with a model version.

    An image is "unknown" when its ``score_method`` score is below ``threshold`` (or, where that score
    cannot be computed, its :data:`FALLBACK_METHOD` score below that method's own threshold in
    ``thresholds``). ``space`` (the head and subspace the feature scores need) is stored beside the
    record's JSON, not in it.
    """

    temperature: float
    threshold: float
    score_method: str
    ece_before: float
    ece_after: float
    tpr_target: float = DEFAULT_TPR
    n_images: int = 0
    bins: int = DEFAULT_BINS
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able notes (split, fingerprint...)
    thresholds: dict[str, float] = field(default_factory=dict)  # every score's, on the same images
    space: FeatureSpace | None = field(default=None, repr=False, compare=False)

    FORMAT_VERSION = 2  # 2 added thresholds and the feature scores; 1 is still read

    def __post_init__(self) -> None:
        if self.score_method not in SCORE_METHODS:
            raise ValueError(
                f"unknown open-set score {self.score_method!r}; choose one of {', '.join(SCORE_METHODS)}"
            )
        if self.score_method in FEATURE_METHODS and FALLBACK_METHOD not in self.thresholds:
            raise ValueError(f"a record with {self.score_method!r} needs a {FALLBACK_METHOD!r} threshold too")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("space")
        values["format_version"] = self.FORMAT_VERSION
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], space: FeatureSpace | None = None) -> CalibrationRecord:
        version = values.get("format_version", cls.FORMAT_VERSION)
        if version not in (1, cls.FORMAT_VERSION):
            raise ValueError(f"unsupported calibration format_version {version!r}")
        missing = [name for name in ("temperature", "threshold", "score_method", "ece_before", "ece_after")
                   if name not in values]
        if missing:
            raise ValueError(f"calibration record is missing {', '.join(missing)}")
        return cls(
            temperature=float(values["temperature"]),
            threshold=float(values["threshold"]),
            score_method=str(values["score_method"]),
            ece_before=float(values["ece_before"]),
            ece_after=float(values["ece_after"]),
            tpr_target=float(values.get("tpr_target", DEFAULT_TPR)),
            n_images=int(values.get("n_images", 0)),
            bins=int(values.get("bins", DEFAULT_BINS)),
            extra=dict(values.get("extra", {})),
            thresholds={str(k): float(v) for k, v in values.get("thresholds", {}).items()},
            space=space,
        )

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        return apply_temperature(probabilities, self.temperature)

    def method_for(self, embeddings: np.ndarray | None) -> str:
        """The stored score if its inputs are at hand, else :data:`FALLBACK_METHOD`."""
        if self.score_method in PROBABILITY_METHODS:
            return self.score_method
        if embeddings is None or self.space is None:
            return FALLBACK_METHOD
        if self.score_method == "vim" and self.space.basis is None:
            return FALLBACK_METHOD
        return self.score_method

    def threshold_for(self, method: str) -> float:
        return self.threshold if method == self.score_method else self.thresholds[method]

    def scores(self, probabilities: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Known-ness scores with the stored method (see :meth:`method_for`)."""
        method = self.method_for(embeddings)
        return open_set_scores(
            probabilities, method, self.temperature, embeddings=embeddings, space=self.space
        )

    def is_unknown(
        self,
        probabilities: np.ndarray,
        images: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
        threshold: float | None = None,
    ) -> np.ndarray:
        """Boolean per image: below the threshold, i.e. probably not a species the model knows, or
        (given the model's input ``images``) a featureless picture (:func:`featureless`).
        ``threshold`` overrides the stored score's threshold (not the fallback's)."""
        method = self.method_for(embeddings)
        overridden = threshold is not None and method == self.score_method
        limit = threshold if overridden else self.threshold_for(method)
        unknown = self.scores(probabilities, embeddings) < limit
        return unknown if images is None else unknown | featureless(images)


def fit_calibration(
    probabilities: np.ndarray,
    labels: np.ndarray,
    score_method: str = "max_probability",
    tpr: float = DEFAULT_TPR,
    bins: int = DEFAULT_BINS,
    extra: dict[str, Any] | None = None,
    embeddings: np.ndarray | None = None,
    space: FeatureSpace | None = None,
) -> CalibrationRecord:
    """Fit the temperature, then every score's open-set threshold on the same (validation) images.

    The feature scores need ``embeddings`` of these images and the ``space`` (head and, for ``vim``,
    the training subspace); without them only the probability scores get thresholds, and asking for a
    feature score is an error.
    """
    probabilities = _as_probabilities(probabilities)
    temperature = fit_temperature(probabilities, labels)
    calibrated = apply_temperature(probabilities, temperature)
    thresholds: dict[str, float] = {}
    for method in SCORE_METHODS:
        try:
            scores = open_set_scores(probabilities, method, temperature, embeddings=embeddings, space=space)
        except ValueError:
            continue  # its inputs are not there
        thresholds[method] = choose_threshold(scores, tpr)
    if score_method not in thresholds:
        raise ValueError(f"open-set score {score_method!r} needs the embeddings and the feature space")
    return CalibrationRecord(
        temperature=temperature,
        threshold=thresholds[score_method],
        score_method=score_method,
        ece_before=expected_calibration_error(probabilities, labels, bins),
        ece_after=expected_calibration_error(calibrated, labels, bins),
        tpr_target=tpr,
        n_images=int(probabilities.shape[0]),
        bins=bins,
        extra=dict(extra or {}),
        thresholds=thresholds,
        space=space,
    )
