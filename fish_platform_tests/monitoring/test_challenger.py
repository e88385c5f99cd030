"""Champion/challenger statistics on constructed shadowed requests: pairing, accuracy, the verdict."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from scipy.stats import norm

from fish_platform.monitoring.challenger import (
    KEEP_CHAMPION,
    NEED_MORE_DATA,
    PROMOTE,
    ReportError,
    ZTest,
    challenger_report,
    pair_answers,
    promotion_from_report,
)
from fish_platform_tests.monitoring.challenger_helpers import shadowed

pytestmark = pytest.mark.timeout(60)


def test_z_test_matches_the_textbook_formula():
    test = ZTest.compare(champion_correct=50, challenger_correct=65, n=100)
    pooled = 115 / 200
    z = 0.15 / (pooled * (1 - pooled) * 2 / 100) ** 0.5
    assert test.z == pytest.approx(z)
    assert test.p_value == pytest.approx(norm.sf(z))
    assert ZTest.compare(10, 10, 10).p_value == 0.5  # both always right: no evidence
    assert ZTest.compare(60, 40, 100).p_value > 0.95  # challenger worse: one-sided p near 1


@pytest.mark.parametrize(
    ("n", "champion_right", "challenger_right", "labelled", "expected"),
    [
        (200, 120, 160, None, PROMOTE),  # 0.60 -> 0.80, p ~ 1e-5
        (200, 140, 144, None, KEEP_CHAMPION),  # +0.02: not significant
        (200, 160, 120, None, KEEP_CHAMPION),  # challenger worse
        (200, 20, 60, 60, NEED_MORE_DATA),  # a big gain, but only 60 labelled requests
    ],
    ids=["promote", "keep-not-significant", "keep-worse", "need-more-data"],
)
def test_each_recommendation(n, champion_right, challenger_right, labelled, expected):
    predictions, feedback = shadowed(n, champion_right, challenger_right, labelled=labelled)
    report = challenger_report(predictions, feedback, min_labelled=100, alpha=0.05)
    assert report.recommendation == expected, report.reason
    assert report.n_pairs == n
    n_labelled = n if labelled is None else labelled
    assert report.n_labelled == n_labelled
    assert report.champion_correct == min(champion_right, n_labelled)
    assert report.challenger_correct == min(challenger_right, n_labelled)
    assert report.champion_accuracy == pytest.approx(report.champion_correct / n_labelled)
    # The two disagree exactly where one of them is right and the other is not.
    assert report.agreement == pytest.approx(1 - abs(champion_right - challenger_right) / n)
    if expected == PROMOTE:
        assert report.p_value < 0.001 and report.z > 3
    if expected == NEED_MORE_DATA:
        assert "60 feedback-labelled" in report.reason
    assert (report.champion_version, report.challenger_version) == ("1", "2")
    assert report.champion_latency.p50_ms == 10.0 and report.challenger_latency.p95_ms == 20.0
    as_json = json.loads(json.dumps(report.as_dict()))
    assert as_json["recommendation"] == expected
    assert as_json["champion_latency"]["n"] == n
    assert f"**{expected}**" in report.markdown()


def test_pairing_ignores_unpaired_rows_older_pairs_and_keeps_the_last_feedback():
    base = datetime(2026, 1, 1, tzinfo=UTC)
    old, old_feedback = shadowed(
        30, 0, 30, champion_version="1", challenger_version="2", start=base, prefix="o"
    )
    new, new_feedback = shadowed(
        12, 6, 9, champion_version="2", challenger_version="3", start=base + timedelta(days=1)
    )
    unshadowed = new[new["role"] == "champion"].assign(request_id=lambda f: "solo-" + f["request_id"])
    # A correction of a correction: the later label ("shrimp" for r0, whose truth was bass) wins.
    relabel = new_feedback.iloc[[0]].assign(ts=new_feedback["ts"].iloc[0] + timedelta(hours=1))
    relabel["correct_label"] = "shrimp"
    predictions = pd.concat([old, new, unshadowed], ignore_index=True)
    feedback = pd.concat([old_feedback, new_feedback, relabel], ignore_index=True)

    report = challenger_report(predictions, feedback, min_labelled=5)
    assert (report.champion_version, report.challenger_version) == ("2", "3")  # the newest pair
    assert report.n_pairs == 12 and report.n_labelled == 12
    assert (report.champion_correct, report.challenger_correct) == (5, 8)  # r0 is wrong for both now
    assert report.agreement == pytest.approx(9 / 12)

    older = challenger_report(predictions, feedback, champion_version="1", challenger_version="2")
    assert older.n_pairs == 30 and older.challenger_correct == 30 and older.champion_correct == 0
    assert len(pair_answers(predictions, "1", "3")) == 0


def test_an_unknown_answer_is_right_only_for_open_set_feedback_and_cached_latency_is_left_out():
    predictions, feedback = shadowed(4, 0, 3)
    challenger = predictions["role"] == "challenger"
    predictions.loc[challenger, "unknown"] = True  # flagged: right top-1 on request 2 does not count
    feedback["correct_label"] = ["unknown", "not_a_fish", "shrimp", "unknown"]
    predictions.loc[predictions["role"] == "champion", "cached"] = [True, True, True, False]
    report = challenger_report(predictions, feedback, min_labelled=1)
    assert report.challenger_correct == 3 and report.champion_correct == 0
    assert report.champion_latency.n == 1 and report.challenger_latency.n == 4


def test_no_shadowed_requests_is_need_more_data_with_a_clear_reason():
    predictions, feedback = shadowed(5, 5, 5)
    report = challenger_report(predictions[predictions["role"] == "champion"], feedback)
    assert report.recommendation == NEED_MORE_DATA and report.n_pairs == 0
    assert report.agreement is None and report.champion_accuracy is None
    assert "no request answered by both" in report.reason
    assert challenger_report(predictions.iloc[0:0], feedback.iloc[0:0]).n_pairs == 0


def _report(**changes) -> dict:
    predictions, feedback = shadowed(200, 120, 160)
    return {**challenger_report(predictions, feedback).as_dict(), **changes}


def test_promotion_from_report_allows_only_a_current_promote_verdict():
    assert promotion_from_report(_report(), "fish-classifier", "1") == "2"
    refusals = {
        "recommends 'keep_champion'": (_report(recommendation=KEEP_CHAMPION), "1"),
        "but @production is now v3": (_report(), "3"),
        "@production is now vnone": (_report(), None),
        "is about other-model": (_report(model_name="other-model"), "1"),
    }
    for message, (report, production) in refusals.items():
        with pytest.raises(ReportError, match=message.replace("(", r"\(")):
            promotion_from_report(report, "fish-classifier", production)
