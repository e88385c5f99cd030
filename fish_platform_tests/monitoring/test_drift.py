"""Drift statistics (fish_platform/monitoring/drift.py), both directions, on real photos where present."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fish_platform.ml.reference import ImageProfiler, Profile, build_reference
from fish_platform.monitoring.drift import DriftConfig, compare, drift_plot_png, mmd_test, traffic_profile
from fish_platform.monitoring.prediction_log import read_predictions
from fish_platform_tests.ml.ml_helpers import write_parquet_dataset
from fish_platform_tests.monitoring.drift_helpers import (
    darkened,
    log_rows,
    real_photos,
    tiny_classifier,
    write_log,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
KNOWN = ["01_dascyllus_reticulatus", "03_chromis_chrysura", "04_amphiprion_clarkii", "14_zebrasoma_scopas"]
OTHERS = ["05_chaetodon_lunulatus", "07_myripristis_kuntee", "10_neoniphon_sammara", "16_lutjanus_fulvus"]
PER_SPECIES = 90  # -> 18 validation (reference) and 18 test (traffic) photos per species
DAY = "2026-01-15"


def test_mmd_separates_shifted_gaussians_and_not_equal_ones() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(150, 64))
    same = rng.normal(size=(120, 64))
    shifted = rng.normal(size=(120, 64)) + 0.5
    config = DriftConfig(permutations=100)
    assert mmd_test(reference, same, config)[1] > 0.05
    mmd2, p, _ = mmd_test(reference, shifted, config)
    assert p < 0.02 and mmd2 > mmd_test(reference, same, config)[0]


def test_too_little_traffic_gives_no_verdict() -> None:
    rng = np.random.default_rng(0)
    labels = ["a", "b"]

    def profile(n: int, brightness: float) -> Profile:
        return Profile(
            labels,
            rng.dirichlet([1, 1], n).astype(np.float32),
            rng.normal(size=(n, 8)),
            np.full(n, brightness, np.float32),
            np.full(n, 100),
            np.full(n, 80),
        )

    report = compare(profile(100, 120.0), profile(10, 20.0))
    assert not report.drifted and "fewer than" in report.reason
    assert report.tests["brightness"].p_value < 0.01  # the figures are still there


@dataclass
class RealSetup:
    model: object
    reference: Profile
    same: list[bytes]
    dark: list[bytes]
    other: list[bytes]


@pytest.fixture(scope="module")
def real_setup(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RealSetup:
    from fish_platform.ml.input import iter_rows

    root = tmp_path_factory.mktemp("drift")
    images = {name: real_photos(real_data_dir, name, PER_SPECIES) for name in KNOWN}
    dataset = write_parquet_dataset(root / "dataset", images, image_size=32, seed=3)
    model = tiny_classifier(sorted(images), 32, root / "model")
    reference = build_reference(model, dataset)
    test_uris = {row["uri"] for row in iter_rows(dataset, "test", ["uri"])}  # mem://<species>/<index>
    same = [images[uri.split("/")[2]][int(uri.split("/")[3])] for uri in sorted(test_uris)]
    other = [data for name in OTHERS for data in real_photos(real_data_dir, name, 20)]
    return RealSetup(model, reference, same, darkened(same), other)


def _report_through_the_log(setup: RealSetup, images: list[bytes], data_dir: Path):
    profile = ImageProfiler(setup.model).profile_images(images)
    write_log(data_dir, DAY, log_rows(profile))
    frame = read_predictions(str(data_dir), date=DAY)
    traffic = traffic_profile(frame, setup.reference.labels, model_version="1")
    assert len(traffic) == len(images) and traffic.embeddings.shape == (len(images), 1280)
    return compare(setup.reference, traffic, DriftConfig()), traffic


@pytest.mark.realdata
def test_traffic_like_the_reference_is_not_flagged(real_setup: RealSetup, tmp_path: Path) -> None:
    report, traffic = _report_through_the_log(real_setup, real_setup.same, tmp_path)
    assert not report.drifted, report.markdown()
    assert report.tests["embedding"].p_value > 0.01
    assert drift_plot_png(real_setup.reference, traffic).startswith(b"\x89PNG")


@pytest.mark.realdata
def test_darkened_traffic_is_flagged(real_setup: RealSetup, tmp_path: Path) -> None:
    report, _ = _report_through_the_log(real_setup, real_setup.dark, tmp_path)
    assert report.drifted, report.markdown()
    assert {"brightness", "embedding"} <= set(report.drifted_tests)
    assert "size" not in report.drifted_tests  # the same photos: only the light changed


@pytest.mark.realdata
def test_other_species_are_flagged(real_setup: RealSetup, tmp_path: Path) -> None:
    report, _ = _report_through_the_log(real_setup, real_setup.other, tmp_path)
    assert report.drifted, report.markdown()
    assert "embedding" in report.drifted_tests


def test_retraining_needs_consecutive_drifted_days() -> None:
    from fish_platform.monitoring.drift import consecutive_drift

    days = {"2026-01-01": True, "2026-01-02": True, "2026-01-03": True}
    assert consecutive_drift(days, 3) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert consecutive_drift(days, 4) is None
    assert consecutive_drift({**days, "2026-01-04": False}, 3) is None  # the newest day is fine again
    assert consecutive_drift({"2026-01-01": True, "2026-01-03": True}, 2) is None  # a gap breaks the run
    assert consecutive_drift(days, 0) is None  # 0: off


def test_a_day_without_traffic_reports_no_verdict(tmp_path: Path) -> None:
    from fish_platform.monitoring.drift import drift_for_day

    rng = np.random.default_rng(0)
    n = 40
    reference = Profile(
        ["a", "b", "c"],
        rng.dirichlet([1, 1, 1], n).astype(np.float32),
        rng.normal(size=(n, 16)).astype(np.float32),
        np.full(n, 100.0, np.float32),
        np.full(n, 64),
        np.full(n, 48),
        unknown=np.zeros(n, bool),
    )
    day = drift_for_day(str(tmp_path), DAY, reference, "1")
    assert (day.report.n_traffic, day.report.drifted) == (0, False)
    assert "embedding" not in day.report.tests and "fewer than" in day.report.reason
    assert day.plot_png.startswith(b"\x89PNG") and day.as_dict()["date"] == DAY


def test_cached_answers_without_a_probability_vector_count_by_their_top3() -> None:
    """Cached answers are logged without the full vector: their top-3 stands in for it."""
    import pandas as pd

    labels = ["Bass", "Trout", "Carp"]
    frame = pd.DataFrame(
        {
            "role": ["champion", "champion"],
            "model_version": ["1", "1"],
            "labels": [labels, None],
            "probabilities": [np.array([0.1, 0.7, 0.2], np.float32), None],
            "top_species": [["Trout", "Carp", "Bass"], ["Carp", "Bass", "Trout"]],
            "top_scores": [[0.7, 0.2, 0.1], [0.8, 0.15, 0.05]],
            "unknown": [False, True],
            "embedding": [np.ones(4, np.float32), None],
            "brightness": [100.0, None],
            "width": [10, 12],
            "height": [10, 12],
        }
    )
    profile = traffic_profile(frame, labels, model_version="1")
    np.testing.assert_allclose(profile.probabilities, [[0.1, 0.7, 0.2], [0.15, 0.05, 0.8]], rtol=1e-6)
    assert profile.embeddings.shape == (1, 4)


def test_the_newest_days_report_is_the_latest_one_the_service_exports(tmp_path: Path) -> None:
    import json

    from fish_platform.monitoring.drift import (
        DRIFT_REPORT_PREFIX,
        LATEST_DRIFT_REPORT,
        DayDrift,
        DriftReport,
        TestResult,
        save_drift_report,
    )

    def day(date: str, drifted: bool) -> DayDrift:
        test = TestResult("embedding", 0.2, 0.0005 if drifted else 0.6, drifted)
        return DayDrift(date, "3", DriftReport(50, 40, 40, 0.01, {"embedding": test}, drifted, "r"))

    save_drift_report(str(tmp_path), day("2026-11-30", True))
    save_drift_report(str(tmp_path), day("2026-11-28", False))  # a late backfill of an older day
    latest = json.loads((tmp_path / LATEST_DRIFT_REPORT).read_text())
    assert latest["date"] == "2026-11-30" and latest["drifted"] is True
    assert latest["tests"]["embedding"]["p_value"] == 0.0005 and latest["generated_at"].endswith("Z")
    assert latest["metrics"]["embedding_p_value"] == 0.0005
    older = json.loads((tmp_path / DRIFT_REPORT_PREFIX / "date=2026-11-28.json").read_text())
    assert older["drifted"] is False  # every day keeps its own report
