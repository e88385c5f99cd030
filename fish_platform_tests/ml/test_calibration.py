"""Temperature scaling, calibration error, open-set scores and thresholds (numpy only, no TensorFlow)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from fish_platform.ml.calibration import (
    CalibrationRecord,
    apply_temperature,
    auroc,
    choose_threshold,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    negative_log_likelihood,
    open_set_report,
    open_set_scores,
    reliability_diagram_png,
    reliability_table,
)

pytestmark = pytest.mark.timeout(60)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibrated_set(n: int = 6000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): softmax(logits) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, classes))
    logits[np.arange(n), rng.integers(0, classes, n)] += 2.0  # a clear favourite most of the time
    probabilities = _softmax(logits)
    cumulative = probabilities.cumsum(axis=1)
    labels = np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), classes - 1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [2.5, 0.5])
def test_fitting_recovers_a_known_temperature_and_lowers_ece(true_temperature):
    logits, labels = calibrated_set()
    distorted = _softmax(logits * true_temperature)  # over-confident for T > 1, under- for T < 1
    fitted = fit_temperature(distorted, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.08)

    calibrated = apply_temperature(distorted, fitted)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), distorted.argmax(axis=1))  # top-1 unchanged
    before = expected_calibration_error(distorted, labels)
    after = expected_calibration_error(calibrated, labels)
    assert after < 0.03 < before
    assert negative_log_likelihood(calibrated, labels) < negative_log_likelihood(distorted, labels)


def test_fitting_is_robust_at_the_bounds_and_on_empty_input():
    logits, labels = calibrated_set(n=500)
    distorted = _softmax(logits * 2.5)  # best T is about 2.5
    assert fit_temperature(distorted, labels, bounds=(0.05, 2.0)) == pytest.approx(2.0, rel=1e-3)
    assert fit_temperature(distorted, labels, bounds=(3.0, 20.0)) == pytest.approx(3.0, rel=1e-3)
    assert fit_temperature(_softmax(logits / 100), labels) == pytest.approx(0.05, rel=1e-3)  # default bound
    saturated = _softmax(logits * 100).astype(np.float32)  # many exact zeros
    assert 1.0 < fit_temperature(saturated, labels) <= 20.0
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, np.int64)) == 1.0
    with pytest.raises(ValueError, match="labels must lie"):
        fit_temperature(np.full((2, 3), 1 / 3), np.array([0, 3]))


def test_apply_temperature_keeps_rows_normalised_and_float32():
    probabilities = np.array([[0.7, 0.2, 0.1, 0.0]], np.float32)  # an exact 0, as float32 softmax gives
    for temperature in (0.3, 1.0, 4.0):
        scaled = apply_temperature(probabilities, temperature)
        assert scaled.dtype == np.float32 and np.isfinite(scaled).all()
        assert scaled.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-6)
    assert apply_temperature(probabilities, 4.0).max() < 0.7 < apply_temperature(probabilities, 0.3).max()


def test_ece_of_perfectly_calibrated_data_is_small():
    logits, labels = calibrated_set(n=20000, seed=3)
    assert expected_calibration_error(_softmax(logits), labels) < 0.02
    table = reliability_table(_softmax(logits), labels, bins=10)
    assert table.counts.sum() == 20000 and len(table.edges) == 11
    used = table.counts > 100
    np.testing.assert_allclose(table.accuracy[used], table.confidence[used], atol=0.05)


def test_ece_by_hand():
    # Two bins used (of 10): confidence 0.95 all right (gap 0.05), 0.55 half right (gap 0.05).
    # The last row predicts class 1 at 0.55 and is wrong.
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 0])
    table = reliability_table(probabilities, labels, bins=10)
    assert table.counts.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert table.ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    assert [row["count"] for row in table.as_rows()] == [2, 2]
    assert np.isnan(table.accuracy[0])


def test_threshold_keeps_the_target_share_of_known_images():
    rng = np.random.default_rng(1)
    known = rng.beta(8, 2, 1000)
    threshold = choose_threshold(known, 0.95)
    assert (known >= threshold).mean() == pytest.approx(0.95, abs=0.001)
    assert choose_threshold(np.arange(100.0), 0.95) == 5.0  # 95 of 100 kept: 5..99
    assert choose_threshold(np.array([0.3]), 0.95) == 0.3
    # On fresh images from the same distribution it keeps about 95%.
    assert (rng.beta(8, 2, 5000) >= threshold).mean() == pytest.approx(0.95, abs=0.02)


def test_auroc_of_separated_identical_and_tied_scores():
    rng = np.random.default_rng(2)
    assert auroc(rng.uniform(0.6, 1.0, 200), rng.uniform(0.0, 0.5, 300)) == 1.0
    assert auroc(rng.uniform(0.0, 0.5, 200), rng.uniform(0.6, 1.0, 300)) == 0.0
    assert auroc(rng.normal(size=4000), rng.normal(size=4000)) == pytest.approx(0.5, abs=0.03)
    assert auroc(np.full(10, 0.7), np.full(20, 0.7)) == 0.5  # all tied: exactly chance
    assert auroc(np.array([1.0, 0.5]), np.array([0.5, 0.0])) == pytest.approx((1 + 1 + 1 + 0.5) / 4)


def test_auroc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    known, unknown = np.round(rng.normal(1, 1, 300), 1), np.round(rng.normal(0, 1, 200), 1)  # with ties
    expected = metrics.roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[known, unknown])
    assert auroc(known, unknown) == pytest.approx(expected, abs=1e-12)


def test_open_set_report():
    rng = np.random.default_rng(5)
    known, unknown = rng.uniform(0.5, 1.0, 400), rng.uniform(0.0, 0.4, 100)
    report = open_set_report(known, unknown)
    assert report.auroc == 1.0 and report.fpr_at_95_tpr == 0.0
    assert report.tpr == pytest.approx(0.95, abs=0.005) and report.fpr == 0.0
    assert (report.n_known, report.n_unknown) == (400, 100)
    overlapping = open_set_report(known, rng.uniform(0.0, 1.0, 1000), threshold=0.75)
    assert overlapping.threshold == 0.75 and overlapping.fpr == pytest.approx(0.25, abs=0.04)
    assert 0.4 < overlapping.fpr_at_95_tpr < 0.6
    json.dumps(overlapping.as_dict())


def test_open_set_scores():
    probabilities = np.array([[0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.4, 0.0]])
    msp = open_set_scores(probabilities, "max_probability")
    np.testing.assert_allclose(msp, [0.98, 1 / 3, 0.6])
    entropy = open_set_scores(probabilities, "entropy")
    assert entropy[1] == pytest.approx(-np.log(3)) and entropy[0] > entropy[2] > entropy[1]
    softened = open_set_scores(probabilities, "max_probability", temperature=3.0)
    assert softened[0] < msp[0] and softened[1] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="pre-softmax logits"):
        open_set_scores(probabilities, "energy")
    with pytest.raises(ValueError, match="unknown open-set score"):
        open_set_scores(probabilities, "odin")


def test_logit_scores_need_logits_and_differ_from_probability_scores():
    logits = np.array([[5.0, 1.0, 0.0], [15.0, 11.0, 10.0]])  # same softmax, larger logits
    np.testing.assert_allclose(open_set_scores(None, "max_logit", logits=logits), [5.0, 15.0])
    energy = open_set_scores(None, "energy", logits=logits)
    np.testing.assert_allclose(energy, np.log(np.exp(logits).sum(axis=1)))
    msp = open_set_scores(None, "max_probability", logits=logits)
    assert msp[0] == pytest.approx(msp[1])  # probabilities cannot tell the two apart; logits can
    # Over log-probabilities (all the current model offers) the energy is constant: no signal.
    log_p = np.log(_softmax(logits))
    np.testing.assert_allclose(open_set_scores(None, "energy", logits=log_p), [0.0, 0.0], atol=1e-12)


def test_reliability_diagram_png():
    logits, labels = calibrated_set(n=800)
    before = _softmax(logits * 2)
    png = reliability_diagram_png(before, apply_temperature(before, 2.0), labels, temperature=2.0)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > image.height > 100


def test_calibration_record_round_trips_and_rejects_unknowns():
    logits, labels = calibrated_set(n=3000, seed=7)
    distorted = _softmax(logits * 2.0)
    record = fit_calibration(distorted, labels, extra={"split": "val"})
    assert record.temperature == pytest.approx(2.0, rel=0.1)
    assert record.ece_after < record.ece_before
    assert (~record.is_unknown(distorted)).mean() == pytest.approx(0.95, abs=0.005)

    stored = json.loads(json.dumps(record.as_dict()))
    assert stored["format_version"] == 2
    assert CalibrationRecord.from_dict(stored) == record
    assert set(stored["thresholds"]) == {"max_probability", "entropy"}  # no embeddings: no feature scores
    version_1 = {k: v for k, v in stored.items() if k != "thresholds"} | {"format_version": 1}
    assert CalibrationRecord.from_dict(version_1).threshold == record.threshold
    uniform = np.full((4, 5), 0.2)
    assert record.is_unknown(uniform).all()

    with pytest.raises(ValueError, match="missing threshold"):
        CalibrationRecord.from_dict({k: v for k, v in stored.items() if k != "threshold"})
    with pytest.raises(ValueError, match="format_version"):
        CalibrationRecord.from_dict({**stored, "format_version": 99})
    with pytest.raises(ValueError, match="'max_probability' threshold too"):
        CalibrationRecord(1.0, 0.5, "energy", 0.1, 0.05)
    with pytest.raises(ValueError, match="needs the embeddings"):
        fit_calibration(distorted, labels, score_method="vim")


def test_featureless_on_uint8_matches_the_float_standard_deviation():
    """The histogram route for uint8 batches (the serving path) decides as std over floats does,
    also for pictures whose liveliest channel sits just either side of the limit."""
    from fish_platform.ml.calibration import FEATURELESS_STD, featureless

    rng = np.random.default_rng(3)
    images = []
    for spread in (0.0, 2.0, 3.8, 3.9, 4.0, 4.4, 30.0):  # stds 0, 2.02, 3.58, 3.96, 4.09, 4.6, 30.2
        image = np.full((24, 20, 3), (40, 120, 220), np.float64)
        image[..., rng.integers(0, 3)] += rng.normal(0, spread, (24, 20))  # one channel varies
        images.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    batch = np.stack(images)
    expected = batch.astype(np.float64).reshape(len(batch), -1, 3).std(axis=1).max(axis=1) < FEATURELESS_STD
    assert featureless(batch).tolist() == expected.tolist()
    assert featureless(batch.astype(np.float32)).tolist() == expected.tolist()
    assert expected.tolist() == [True] * 4 + [False] * 3  # 3.96 and 4.09: either side of the limit
    assert featureless(batch, max_std=0.5).tolist() == [True] + [False] * 6


def test_featureless_pictures_are_unknown_whatever_the_score():
    """A plain colour holds no fish: unknown even when the model is sure (a grey wall as 0.99 Sea Bass)."""
    from fish_platform.ml.behaviour import not_a_fish_images, not_a_fish_kinds
    from fish_platform.ml.calibration import CalibrationRecord, featureless

    rng = np.random.default_rng(0)
    plain = np.stack([np.full((16, 16, 3), value, np.uint8) for value in ((128, 128, 128), (200, 30, 90))])
    jpeg_like = np.clip(plain[:1] + rng.normal(0, 1.0, plain[:1].shape), 0, 255)  # compression speckle
    textured = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    assert featureless(plain).tolist() == [True, True] and featureless(jpeg_like).tolist() == [True]
    assert featureless(textured).tolist() == [False, False]
    strangers = not_a_fish_images(16, 14)
    assert featureless(strangers).tolist() == [kind == "plain" for kind in not_a_fish_kinds(14)]

    record = CalibrationRecord(
        temperature=1.0, threshold=0.6, score_method="max_probability", ece_before=0.1, ece_after=0.05
    )
    sure = np.array([[0.99, 0.01], [0.99, 0.01]])
    assert record.is_unknown(sure).tolist() == [False, False]  # the score alone accepts both
    both = np.concatenate([plain[:1], textured[:1]])
    assert record.is_unknown(sure, both).tolist() == [True, False]


def _feature_world(seed: int = 0, features: int = 64, classes: int = 4, n: int = 400):
    """Embeddings of known species in a 12-dimensional subspace (plus a little noise), a head over
    them, and unknowns that have the same logits as knowns but lie partly outside the subspace: only
    a score that looks beyond the logits can tell them apart."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(features, 12)))[0]
    centres = rng.normal(0, 3, (classes, 12))
    labels = rng.integers(0, classes, 3 * n)
    inside = (centres[labels] + rng.normal(0, 1, (3 * n, 12))) @ basis.T
    known = inside + rng.normal(0, 0.05, (3 * n, features))
    kernel = basis @ centres.T / 3  # (features, classes): reads the subspace only
    bias = rng.normal(0, 0.1, classes)
    outside = np.linalg.qr(np.concatenate([basis, rng.normal(size=(features, 1))], axis=1))[0][:, -1]
    unknown = known[2 * n :] + 4.0 * outside  # same logits (the head ignores the out-of-subspace part)
    split = {"train": known[:n], "val": known[n : 2 * n], "test": known[2 * n :]}
    return split, labels[: 3 * n], unknown, kernel, bias


def test_vim_sees_what_the_logits_cannot():
    from fish_platform.ml.calibration import FeatureSpace, vim_dimension

    split, _, unknown, kernel, bias = _feature_world()
    space = FeatureSpace.fit(split["train"], kernel, bias, dimension=12)
    assert space.basis.shape == (64, 12) and space.alpha > 0
    # The origin is where the head gives all-zero logits.
    np.testing.assert_allclose(space.logits(space.origin[None]), 0.0, atol=1e-5)
    known_vim = open_set_scores(None, "vim", embeddings=split["test"], space=space)
    unknown_vim = open_set_scores(None, "vim", embeddings=unknown, space=space)
    known_energy = open_set_scores(None, "energy", embeddings=split["test"], space=space)
    unknown_energy = open_set_scores(None, "energy", embeddings=unknown, space=space)
    np.testing.assert_allclose(known_energy, unknown_energy, rtol=1e-4)  # the logits cannot tell
    assert auroc(known_vim, unknown_vim) > 0.99
    with pytest.raises(ValueError, match="'vim' needs"):
        open_set_scores(None, "vim", embeddings=split["test"])

    restored = FeatureSpace.from_bytes(space.to_bytes())
    np.testing.assert_allclose(restored.vim(unknown), space.vim(unknown), rtol=1e-6)
    head_only = FeatureSpace.from_bytes(FeatureSpace(kernel, bias).to_bytes())
    assert head_only.basis is None and head_only.dimension is None

    # The reference rule, capped at half the fitting images.
    assert vim_dimension(2560, 10_000) == 1000 and vim_dimension(1280, 10_000) == 512
    assert vim_dimension(512, 10_000) == 256 and vim_dimension(1280, 96) == 48


def _vim_record(seed: int):
    """A feature world, its fitted space (12 dimensions) and a vim record fitted on its validation part."""
    from fish_platform.ml.calibration import FeatureSpace

    split, labels, unknown, kernel, bias = _feature_world(seed=seed)
    n = len(split["train"])
    space = FeatureSpace.fit(split["train"], kernel, bias, dimension=12)
    val_p = _softmax(space.logits(split["val"]))
    val_labels = labels[n : 2 * n]
    record = fit_calibration(val_p, val_labels, score_method="vim", embeddings=split["val"], space=space)
    return split, unknown, space, record


def test_a_vim_record_falls_back_to_max_probability_without_embeddings():
    from fish_platform.ml.calibration import FeatureSpace

    split, unknown, space, record = _vim_record(seed=1)
    assert set(record.thresholds) == {"max_probability", "entropy", "max_logit", "energy", "vim"}
    assert record.threshold == record.thresholds["vim"]

    test_p = _softmax(space.logits(split["test"]))
    unknown_p = _softmax(space.logits(unknown))
    assert record.method_for(split["test"]) == "vim"
    assert (~record.is_unknown(test_p, embeddings=split["test"])).mean() == pytest.approx(0.95, abs=0.05)
    assert record.is_unknown(unknown_p, embeddings=unknown).mean() > 0.95  # vim refuses them
    # Without embeddings: max probability at its own threshold, which accepts the look-alikes.
    assert record.method_for(None) == "max_probability"
    fallback = record.scores(unknown_p)
    np.testing.assert_allclose(fallback, open_set_scores(unknown_p, "max_probability", record.temperature))
    assert record.is_unknown(unknown_p).mean() < 0.2
    # An override moves the stored score's threshold, not the fallback's.
    assert record.is_unknown(unknown_p, embeddings=unknown, threshold=-1e9).sum() == 0
    assert record.is_unknown(unknown_p, threshold=-1e9).tolist() == record.is_unknown(unknown_p).tolist()

    stored = json.loads(json.dumps(record.as_dict()))
    assert "space" not in stored
    restored = CalibrationRecord.from_dict(stored, space=FeatureSpace.from_bytes(space.to_bytes()))
    expected = record.scores(unknown_p, unknown)
    np.testing.assert_allclose(restored.scores(unknown_p, unknown), expected, rtol=1e-5)
    assert CalibrationRecord.from_dict(stored).method_for(unknown) == "max_probability"  # no space: fallback


def test_the_record_and_its_feature_space_round_trip_through_an_mlflow_run(mlflow_store):
    import mlflow

    from fish_platform.ml.trust import CALIBRATION_ARTIFACT, SPACE_ARTIFACT, load_calibration, log_calibration

    split, unknown, space, record = _vim_record(seed=2)
    with mlflow.start_run(experiment_id=mlflow_store.experiment_id) as run:
        log_calibration(record)
    listed = {item.path for item in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert listed == {CALIBRATION_ARTIFACT, SPACE_ARTIFACT}
    loaded = load_calibration(run.info.run_id, mlflow_store.tracking_uri)
    assert loaded == record and loaded.space is not None and loaded.method_for(unknown) == "vim"
    unknown_p = _softmax(space.logits(unknown))
    expected = record.scores(unknown_p, unknown)
    np.testing.assert_allclose(loaded.scores(unknown_p, unknown), expected, rtol=1e-5)
